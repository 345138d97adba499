"""Where ``vehicle-cls predict --out`` writes results, chosen by the file's suffix: JSON Lines (one
``Result.to_dict()`` per line), or CSV / Parquet with one flat row per vehicle (``Result.to_rows()``,
columns ``results.ROW_FIELDS``; an input with no vehicle or an error keeps one row, so none is lost)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

from vehicle_cls.outputs import _OutputFile, open_output
from vehicle_cls.results import ROW_FIELDS, Result, arrow_schema

# "": no suffix (/dev/stdout, a FIFO)
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", "": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(path: str | Path) -> str:
    """The format ``path`` names by its suffix (none: JSON Lines), checked before anything is written.

    Args:
        path: the output file (``.jsonl``/``.json``/no suffix, ``.csv`` or ``.parquet``).

    Returns:
        "jsonl", "csv" or "parquet".

    Raises:
        ValueError: any other suffix (one line).
        ImportError: ``.parquet`` without pyarrow installed (the message names the extra).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unknown output format {suffix or '(no suffix)'!r}; use .jsonl (or no suffix), .csv or .parquet"
        )
    if FORMATS[suffix] == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError(f"{path}: Parquet output needs pyarrow: pip install 'vehicle-cls[parquet]'") from None
    return FORMATS[suffix]


class ResultWriter:
    """Writes results one at a time (each is on disk, or in Parquet's next row group, as it comes)."""

    def __init__(self, path: str | Path | None = None, stream: TextIO | None = None):
        """Open the output now, so a bad path fails before any image is processed.

        Args:
            path: the output file; its suffix picks the format (see ``output_format``).
            stream: without ``path``: JSON Lines to this stream (e.g. stdout), which is not closed.

        Raises:
            ValueError: neither ``path`` nor ``stream``, or an unknown suffix.
            OutputError: ``path`` cannot be written (a folder, or its folder is a file, ...).
            ImportError: ``.parquet`` without pyarrow installed.
        """
        if path is None and stream is None:
            raise ValueError("ResultWriter needs a path or a stream")
        self.format = output_format(path) if path is not None else "jsonl"
        self._owned = path is not None
        self._rows: list[dict[str, Any]] = []
        self._parquet: Any = None
        self._csv: Any = None
        self._stream: _OutputFile | TextIO | None = None
        if path is not None and self.format == "parquet":
            open_output(path).close()  # the same one-line refusals as the text formats, before pyarrow writes
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(str(path), arrow_schema("vehicle"))
        else:
            self._stream = open_output(path) if path is not None else stream
            if self.format == "csv":
                self._csv = csv.DictWriter(self._text(), fieldnames=[name for name, _ in ROW_FIELDS])
                self._csv.writeheader()

    def _text(self) -> _OutputFile | TextIO:
        """The text stream JSON Lines and CSV go to (a Parquet writer has none)."""
        if self._stream is None:
            raise ValueError(f"a {self.format} ResultWriter has no text stream")
        return self._stream

    def write(self, result: Result) -> None:
        """Add one result (on disk as it comes: a line, CSV rows, or Parquet's next row group).

        Args:
            result: the result to write (CSV and Parquet: its ``to_rows``).
        """
        if self.format == "jsonl":
            self._text().write(result.to_json() + "\n")
        elif self.format == "csv":
            self._csv.writerows(result.to_rows())  # None -> empty cell
        else:
            self._rows.extend(result.to_rows())
            if len(self._rows) >= 4096:
                self._flush_rows()
            return
        self._text().flush()

    def _flush_rows(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=arrow_schema("vehicle")))
            self._rows = []

    def close(self) -> None:
        """Finish the file (Parquet writes its footer here)."""
        if self._parquet is not None:
            self._flush_rows()
            self._parquet.close()
        elif self._owned:
            self._text().close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

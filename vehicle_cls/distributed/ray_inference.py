"""Batch inference over millions of images with Ray Data: one ``Pipeline`` per actor, no row lost.

Inputs become rows (a ``path``, or the file ``bytes`` read by Ray from local disk or object
storage); actors decode them inside ``Pipeline`` so an unreadable image becomes a row with
``error`` set instead of failing the read stage (``ray.data.read_images`` would drop or raise).
Output rows (one per input image) have exactly the keys of ``Result.to_dict()``, every vehicle
of the image in ``vehicles``; JSON Lines files reproduce those dicts exactly, Parquet stores them
with a fixed typed schema (vehicles as a list of structs, ``topk`` as a list of ``{label, score}``).
``index`` is the row's position in the input list when the inputs are paths. With
``rows="vehicle"`` the output is flat instead, one row per vehicle (``Result.to_rows()``: image
fields repeated, box as ``x1..y2``), and an image with no vehicle or an error keeps one row with
empty vehicle fields, so a Parquet table loses no input. Ray and pyarrow are imported lazily
(``pip install vehicle-cls[ray]``).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vehicle_cls.fileio import temp_name
from vehicle_cls.io.images import IMAGE_EXTENSIONS, describe_source, iter_image_files
from vehicle_cls.io.inputs import NamedInput
from vehicle_cls.options import InferenceOptions
from vehicle_cls.results import RESULT_FIELDS, Result, arrow_schema

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install vehicle-cls[ray]"
RESULT_COLUMNS = tuple(name for name, _ in RESULT_FIELDS)


def import_ray() -> Any:
    """Import Ray (with Ray Data) or fail with the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"distributed inference needs Ray Data, which is not installed ({exc}); run: {INSTALL_HINT}"
        ) from exc
    return ray


def _import_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise ImportError(f"Ray inference output needs pyarrow ({exc}); run: {INSTALL_HINT}") from exc
    return pyarrow


# -- rows <-> Arrow ------------------------------------------------------------------------------
def schema_for(rows: str) -> Any:
    """The Arrow schema of ``Result.to_dict()`` rows (``rows="image"``) or ``Result.to_rows()`` rows
    (``rows="vehicle"``), derived from ``results.py``'s declared output fields."""
    _import_pyarrow()  # the install hint when pyarrow is missing
    return arrow_schema(rows)


def results_to_table(results: Sequence[Result], rows: str = "image") -> Any:
    """Results -> a pyarrow Table: one row per result (``to_dict``) or per vehicle (``to_rows``)."""
    if rows == "image":
        return dicts_to_table([r.to_dict() for r in results])
    schema = schema_for(rows)
    flat = [row for r in results for row in r.to_rows()]
    return _import_pyarrow().Table.from_pylist(flat, schema=schema)


def dicts_to_table(rows: Sequence[dict[str, Any]]) -> Any:
    """``Result.to_dict()`` dicts -> a pyarrow Table with ``schema_for("image")``."""
    pa = _import_pyarrow()
    columns: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
    for row in rows:
        for name in RESULT_COLUMNS:
            value = row.get(name)
            if name == "vehicles":
                value = [
                    {**v, "topk": [{"label": label, "score": score} for label, score in v.get("topk") or []]}
                    for v in value or []
                ]
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=schema_for("image"))


def table_to_dicts(table: Any) -> list[dict[str, Any]]:
    """Arrow rows -> dicts equal to the ``Result.to_dict()`` they came from."""
    out = []
    for row in table.to_pylist():
        row = {name: row.get(name) for name in RESULT_COLUMNS}
        row["vehicles"] = [
            {**v, "topk": [[t["label"], t["score"]] for t in v["topk"] or []]} for v in row["vehicles"] or []
        ]
        out.append(row)
    return out


# -- the per-actor callable ----------------------------------------------------------------------
def batch_inputs(batch: dict[str, Any]) -> list[NamedInput]:
    """A Ray batch (columns ``path`` and/or ``bytes`` / ``image``, optional ``index``) as pipeline inputs
    that carry their row's name (the path, else ``<row i>``) and index (the ``index`` column, else i)."""
    paths = batch.get("path")
    n = len(next(iter(batch.values()))) if batch else 0
    names = [str(paths[i]) if paths is not None else f"<row {i}>" for i in range(n)]
    indices = [int(i) for i in batch["index"]] if "index" in batch else list(range(n))
    if "bytes" in batch:
        data: list[Any] = [bytes(batch["bytes"][i]) for i in range(n)]
    elif "image" in batch:  # rows from ray.data.read_images(..., include_paths=True)
        data = [batch["image"][i] for i in range(n)]
    elif paths is not None:
        data = [str(p) for p in paths]
    else:
        raise ValueError(f"a Ray batch needs a 'path', 'bytes' or 'image' column; got {sorted(batch)}")
    return [NamedInput(name, x, index) for name, x, index in zip(names, data, indices)]


class PipelinePredictor:
    """Ray Data callable class: loads ``Pipeline.load(model_dir, options)`` once per actor, predicts batches."""

    def __init__(self, model_dir: str, options: InferenceOptions, cropper: Any = None, rows: str = "image"):
        from vehicle_cls.pipeline import Pipeline

        schema_for(rows)  # refuse an unknown kind before loading the model
        self.rows = rows
        self.pipeline = Pipeline.load(model_dir, options, cropper=cropper)
        logger.info("loaded %s on %s", model_dir, self.pipeline.device)

    def __call__(self, batch: dict[str, Any]) -> Any:
        inputs = batch_inputs(batch)
        try:  # every result carries its input's name and row index (a video input: one per frame)
            results = self.pipeline(inputs)
        except Exception as exc:  # a whole-batch failure still yields one row per input
            logger.exception("batch of %d failed", len(inputs))
            reason = f"{type(exc).__name__}: {exc}"
            results = [
                Result.failed(x.name, i if x.index is None else x.index, f"{x.name}: {reason}")
                for i, x in enumerate(inputs)
            ]
        return results_to_table(results, self.rows)


# -- the driver ----------------------------------------------------------------------------------
@dataclass
class RayPredictSummary:
    """What ``predict_with_ray`` wrote: the output path and, for single-file outputs, row counts."""

    output: str
    format: str  # "jsonl", "parquet" (one file) or "parquet-dir" (Ray's part files)
    rows: int | None = None
    failed: int | None = None  # rows with an error: the failed inputs (one row each, either kind)


def input_dataset(inputs: Any, recursive: bool = True) -> Any:
    """Rows for ``inputs``: a Ray Dataset as is; a URI/folder/glob/file or a list of paths as rows."""
    ray = import_ray()
    if isinstance(inputs, ray.data.Dataset):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        text = os.fspath(inputs)
        if "://" in text:  # object storage or any filesystem Ray knows: read bytes, decode in actors
            return ray.data.read_binary_files(
                text,
                include_paths=True,
                file_extensions=sorted(
                    {e.lstrip(".") for e in IMAGE_EXTENSIONS} | {e.lstrip(".").upper() for e in IMAGE_EXTENSIONS}
                ),
            )
        if os.path.isdir(text):
            paths = [str(p) for p in iter_image_files(text, recursive=recursive)]
        elif any(ch in text for ch in "*?["):
            paths = sorted(globlib.glob(text, recursive=True))
        else:
            paths = [text]
    elif isinstance(inputs, Iterable):
        paths = [os.fspath(p) for p in inputs]
    else:
        raise TypeError(f"predict_with_ray: unsupported inputs {describe_source(inputs)}")
    if not paths:
        raise ValueError(f"predict_with_ray: no images found in {describe_source(inputs)}")
    return ray.data.from_items([{"path": p, "index": i} for i, p in enumerate(paths)])


def predict_with_ray(
    inputs: Any,
    model_dir: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float = 1,
    concurrency: int | tuple[int, int] = 1,
    output: str | os.PathLike[str] | None = None,
    preserve_order: bool = False,
    options: InferenceOptions | None = None,
    cropper: Any = None,
    rows: str = "image",
    **overrides: Any,
) -> Any:
    """Classify every input with ``concurrency`` Pipeline actors; write or return one row per input
    (``rows="image"``: ``Result.to_dict()``) or one flat row per vehicle (``rows="vehicle"``:
    ``Result.to_rows()``; an input without vehicles, or failed, keeps one row with its error).

    ``inputs``: a Ray Dataset (``path``, ``bytes`` or ``image`` column), a folder, glob, file,
    ``s3://``-style URI or a list of paths. ``output``: ``*.jsonl`` or ``*.parquet`` (one file,
    written as results stream in; returns a ``RayPredictSummary`` with counts), another path (a
    folder of Parquet part files written by the workers), or None (return the lazy Dataset).
    ``options`` (``InferenceOptions``; ``overrides``: its fields, e.g. ``topk=3, precision="fp32"``) and
    ``cropper`` (instead of the bundle's) go to ``Pipeline.load`` in each actor; by default the model batch is
    ``batch_size`` and the device CUDA when GPUs are asked for, else the CPU.
    """
    schema_for(rows)
    if options is None:
        options = InferenceOptions(batch_size=batch_size, device="cuda" if num_gpus_per_worker else "cpu")
    options = options.replace(**overrides)
    ray = import_ray()
    dataset = input_dataset(inputs)
    if preserve_order:
        dataset.context.execution_options.preserve_order = True
    if isinstance(concurrency, tuple):
        compute = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        compute = ray.data.ActorPoolStrategy(size=int(concurrency))
    predictions = dataset.map_batches(
        PipelinePredictor,
        fn_constructor_kwargs={"model_dir": os.fspath(model_dir), "options": options, "cropper": cropper, "rows": rows},
        batch_size=batch_size,
        batch_format="numpy",
        compute=compute,
        num_gpus=num_gpus_per_worker or None,
        num_cpus=num_cpus_per_worker,
    )
    if output is None:
        return predictions
    return write_predictions(predictions, output, batch_size=batch_size, rows=rows)


def write_predictions(
    predictions: Any, output: str | os.PathLike[str], batch_size: int = 256, rows: str = "image"
) -> RayPredictSummary:
    """Write a predictions Dataset: one JSONL / Parquet file (atomic, counted) or a Parquet folder.
    ``rows`` says which rows the Dataset holds ("image" or "vehicle"); ``failed`` counts rows with an error."""
    path = os.fspath(output)
    suffix = Path(path).suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        predictions.write_parquet(path)
        return RayPredictSummary(output=path, format="parquet-dir")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = os.fspath(Path(path).parent / temp_name(Path(path).name))  # umask permissions; stale ones are cleaned
    schema = schema_for(rows)
    count = failed = 0
    try:
        batches = predictions.iter_batches(batch_size=batch_size, batch_format="pyarrow")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, schema) as writer:
                for table in batches:
                    table = table.select(schema.names).cast(schema)
                    writer.write_table(table)
                    count += table.num_rows
                    failed += table.num_rows - table.column("error").null_count
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for table in batches:
                    dicts = table_to_dicts(table) if rows == "image" else table.select(schema.names).to_pylist()
                    for row in dicts:
                        f.write(json.dumps(row) + "\n")
                        count += 1
                        failed += row["error"] is not None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("wrote %d %s rows (%d with an error) to %s", count, rows, failed, path)
    kind = "parquet" if suffix == ".parquet" else "jsonl"
    return RayPredictSummary(output=path, format=kind, rows=count, failed=failed)

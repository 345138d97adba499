"""One progress-bar helper for every long loop (pipeline, evaluation, crop cache, training, downloads)."""

from __future__ import annotations

import sys
from typing import Any


class _NoBar:
    """Stands in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(
    total: int | None = None,
    enabled: bool | None = True,
    desc: str = "",
    unit: str = "it",
    leave: bool = True,
    **tqdm_options: Any,
) -> Any:
    """A tqdm bar on stderr (``update``/``set_postfix``/``close``), or a silent stand-in when ``enabled``
    is False; ``None`` means "when stderr is a terminal". ``tqdm_options`` go to tqdm (e.g. unit_scale)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, **tqdm_options)

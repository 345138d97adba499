"""One progress-bar helper for every long loop (pipeline, evaluation, crop cache)."""
from __future__ import annotations

from typing import Any


class _NoBar:
    """Stands in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(total: int | None = None, enabled: bool = True, desc: str = "", unit: str = "it",
                 leave: bool = True) -> Any:
    """A tqdm bar on stderr (``update``/``close``), or a silent stand-in when ``enabled`` is False."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)

"""COCO format through pycocotools (the optional ``coco`` extra): the lazy import, masks as COCO RLE,
and an in-memory ``COCO`` index built from checked dicts.

pycocotools is imported on first use only, so ``import vehicle_cls`` never needs it; a missing install
is one ``ImportError`` line naming the extra. RLE is COCO's compressed form, ``{"size": [h, w],
"counts": str}``, what ``pycocotools.mask.decode`` and every COCO tool read.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INSTALL_HINT = "the COCO format needs pycocotools: pip install vehicle-cls[coco] (or pip install pycocotools)"


def pycocotools_available() -> bool:
    """Whether pycocotools can be imported (masks in JSON, the coco layout and box AP need it)."""
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


def import_pycocotools() -> Any:
    """The ``pycocotools`` package with its ``mask``, ``coco`` and ``cocoeval`` modules loaded, or an
    ``ImportError`` naming the extra."""
    try:
        import pycocotools
        import pycocotools.coco
        import pycocotools.cocoeval
        import pycocotools.mask
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return pycocotools


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A 2-D mask (any truthy dtype) as COCO compressed RLE, JSON-ready: ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (height, width), not shape {mask.shape}")
    rle = import_pycocotools().mask.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_json(mask: np.ndarray | None) -> dict[str, Any] | None:
    """``mask`` as COCO RLE for JSON output; None for no mask, and None (warned once per process) when
    pycocotools is missing: the output stays valid and ``has_mask`` still says a mask was there."""
    if mask is None:
        return None
    if not pycocotools_available():
        _warn_masks_left_out()
        return None
    return mask_to_rle(mask)


@functools.lru_cache(maxsize=1)
def _warn_masks_left_out() -> None:
    logger.warning("masks are left out of the JSON output (has_mask says where they were): %s", INSTALL_HINT)


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """The bool (height, width) mask of a COCO RLE dict (``counts`` as str or bytes)."""
    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # pycocotools' own numpy 2 copy-keyword DeprecationWarning, not the caller's
        warnings.simplefilter("ignore", DeprecationWarning)
        return import_pycocotools().mask.decode(encoded).astype(bool)


def coco_index(dataset: dict[str, Any]) -> Any:
    """A ``pycocotools.coco.COCO`` over an already checked annotation dict (its prints go to the debug log)."""
    index = import_pycocotools().coco.COCO()
    index.dataset = dataset
    with quiet():
        index.createIndex()
    return index


@contextlib.contextmanager
def quiet():
    """Capture what pycocotools prints (it writes progress to stdout) into the debug log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        logger.debug("pycocotools: %s", " | ".join(buffer.getvalue().split("\n")).strip(" |"))

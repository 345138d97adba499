"""Turn any image source into an RGB uint8 HxWx3 array, or fail with one clear ``ImageError``.

Sources: a path (str or ``pathlib.Path``), an http(s) URL, ``bytes``, a binary file object, a PIL image, a numpy
array (HxW, HxWx1, HxWx3, HxWx4; uint8, uint16, bool or float in [0, 1]; channel order stated by
the caller) or a torch tensor (CHW or HW, uint8 or float in [0, 1], RGB).
EXIF orientation is applied; transparency is composited on ``background`` (white by default).
Paths must name regular files: a FIFO, socket or device is refused before it is opened for a
blocking read (it would hang). ``max_side`` decodes large JPEGs reduced (Pillow draft mode, a
1/2, 1/4 or 1/8 scale the decoder gives for free), so a 13000 px photo never needs its full pixels.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import stat
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vehicle_cls.errors import VehicleClsError, one_line
from vehicle_cls.io.urls import URLFetchError, fetch_url, is_url

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own bomb limit (2x MAX_IMAGE_PIXELS), made explicit
# longer side / shorter side: resizing a 1 x 60000 strip's short side to 256 (center_crop) asked torch for
# 63 GB, and a detector resize rounds its short side to 0; a 20:1 panorama is fine
DEFAULT_MAX_ASPECT = 50
DEFAULT_BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ChannelOrder = Literal["RGB", "BGR"]

logger = logging.getLogger(__name__)

#: ISO-BMFF brands of HEIC/HEIF files, which Pillow reads only with the pillow-heif plugin.
_EXIF_ORIENTATION = 0x0112
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


class ImageError(VehicleClsError, ValueError):
    """An image source could not be turned into pixels; the message names the source and reason."""

    def __init__(self, source: Any, reason: str):
        """Name the source and the reason in one line, so the error can go into a log or JSON as it is.

        Args:
            source: the image source that failed (described by ``describe_source``).
            reason: why (folded to one line).
        """
        self.source = describe_source(source)
        self.reason = one_line(reason)
        super().__init__(f"{self.source}: {self.reason}")


@dataclass(frozen=True)
class DecodeOptions:
    """How ``load_image`` treats its input."""

    channel_order: ChannelOrder = "RGB"  # of numpy inputs only (OpenCV arrays are BGR)
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse larger images (decompression bombs)
    background: tuple[int, int, int] = DEFAULT_BACKGROUND  # where alpha is transparent
    exif_transpose: bool = True
    max_side: int | None = None  # decode JPEGs reduced to about this longer side (never below it)


def describe_source(source: Any) -> str:
    """A short human name for an image source, used in errors and in ``Result.source``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes len={len(source)}>"
    if isinstance(source, Image.Image):
        return f"<PIL.Image mode={source.mode} size={source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<ndarray shape={tuple(source.shape)} dtype={source.dtype}>"
    if type(source).__module__.startswith("torch") and hasattr(source, "shape"):
        return f"<tensor shape={tuple(source.shape)} dtype={source.dtype}>"
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return f"<{type(source).__name__}>"


def load_image(
    source: Any,
    *,
    channel_order: ChannelOrder = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    exif_transpose: bool = True,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode ``source`` to a contiguous RGB uint8 HxWx3 array; raise ``ImageError`` on failure.

    Args:
        source: a path, an http(s) URL, bytes, a binary file object, a PIL image, a numpy array or a
            torch tensor (see the module docstring).
        channel_order: of a numpy array: "RGB" (default) or "BGR" (OpenCV; see ``from_bgr``).
        max_pixels: refuse images with more pixels (decompression bombs).
        background: RGB colour that transparent pixels are composited on.
        exif_transpose: apply the EXIF orientation.
        max_side: a JPEG larger than that is decoded at the smallest 1/2, 1/4 or 1/8 scale whose longer
            side is still >= ``max_side`` (other inputs come back at full size); see ``load_image_reduced``.

    Returns:
        The pixels, HxWx3 uint8 RGB.

    Raises:
        ImageError: the source could not be read or decoded (one line naming it and the reason).
    """
    return load_image_reduced(
        source,
        max_side,
        channel_order=channel_order,
        max_pixels=max_pixels,
        background=background,
        exif_transpose=exif_transpose,
    )[0]


def from_bgr(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR HxWx3 or BGRA HxWx4) as RGB uint8, the order every numpy input is read in
    (``pipe([from_bgr(frame)])``).

    Args:
        frame: the array OpenCV gave (``cv2.imread``, ``VideoCapture.read``).

    Returns:
        A new HxWx3 uint8 RGB array (alpha composited on white).

    Raises:
        ImageError: ``frame`` is not an HxWx3 or HxWx4 numpy array.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ImageError(frame, "from_bgr takes an OpenCV frame: a numpy array HxWx3 (BGR) or HxWx4 (BGRA)")
    return load_image(frame, channel_order="BGR")


def load_image_reduced(
    source: Any,
    max_side: int | None,
    *,
    channel_order: ChannelOrder = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    exif_transpose: bool = True,
) -> tuple[np.ndarray, tuple[int, int]]:
    """``(pixels, (width, height) of the full-size image)``: boxes found on ``pixels`` map back to the
    original by ``width / pixels.shape[1]`` and ``height / pixels.shape[0]``."""
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {channel_order!r}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1 or None, not {max_side!r}")
    opts = DecodeOptions(channel_order, max_pixels, background, exif_transpose, max_side)
    try:
        if isinstance(source, np.ndarray):
            return _full_size(_from_array(source, source, opts, channel_order))
        if type(source).__module__.startswith("torch") and hasattr(source, "permute"):
            return _full_size(_from_tensor(source, opts))
        if isinstance(source, Image.Image):
            return _full_size(_from_pil(source, source, opts))
        return _from_encoded(source, opts)
    except ImageError:
        raise
    except Exception as exc:  # any decoder failure becomes the one error type
        raise ImageError(source, f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def _full_size(array: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    return array, (array.shape[1], array.shape[0])


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file (or of an http(s) URL: ``vehicle_cls.io.urls``, time and size limited);
    refuses anything but a regular file (a FIFO would block forever)."""
    name = os.fspath(path)
    if is_url(name):
        try:
            return fetch_url(name)
        except URLFetchError as exc:
            raise ImageError(path, str(exc)) from None
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(path, _missing_reason(name)) from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "symbolic link loop (the link points back at itself)") from None
        raise ImageError(path, f"cannot open ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(path, "is a directory, not an image file")
        if not stat.S_ISREG(mode):
            raise ImageError(path, f"not a regular file (a {_file_kind(mode)}); refusing to read it as an image")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as exc:
            raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None


def _missing_reason(name: str) -> str:
    if os.path.islink(name):
        return f"broken symbolic link (its target {os.readlink(name)!r} does not exist)"
    return "no such file"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "FIFO / named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def _unrecognised_reason(data: bytes) -> str:
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return (
            "HEIC/HEIF image: Pillow reads it only with the pillow-heif plugin "
            "(pip install pillow-heif; then pillow_heif.register_heif_opener())"
        )
    return "not a recognised image format"


def _from_encoded(source: Any, opts: DecodeOptions) -> tuple[np.ndarray, tuple[int, int]]:
    if isinstance(source, (str, os.PathLike)):
        data = read_image_file(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(source, "file object must be opened in binary mode")
    else:
        raise ImageError(source, f"unsupported image source type {type(source).__name__}")
    if len(data) == 0:
        raise ImageError(source, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        check_geometry(source, width, height, opts.max_pixels)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            logger.warning(
                "%s: %s image with %d frames; using the first frame only", describe_source(source), image.format, frames
            )
        if opts.exif_transpose and image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width  # exif_transpose turns it a quarter
        _draft(image, opts.max_side)
        image.load()
        return _from_pil(image, source, opts), (width, height)
    except UnidentifiedImageError:
        raise ImageError(source, _unrecognised_reason(data)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"image too large ({exc})") from None
    except (OSError, SyntaxError) as exc:  # Pillow raises SyntaxError for some malformed headers
        reason = "truncated image file" if "truncat" in str(exc).lower() else f"corrupt image data ({exc})"
        raise ImageError(source, reason) from None


def check_encoded(
    source: Any, data: bytes, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | None:
    """Header-only ``check_geometry`` of encoded bytes, before anything is decoded: the full size against
    the default limits and the size a decode with ``max_side`` gives (a large JPEG decoded reduced)
    against ``max_pixels``; ``(width, height)`` decoded, or None when the header is unreadable (the
    decoder then reports why). For a caller that bounds the cost of each image (the HTTP service)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError):  # unreadable header: the decode gives its one-line reason
        return None
    check_geometry(source, width, height)
    _draft(image, max_side)
    width, height = image.size
    check_geometry(source, width, height, max_pixels)
    return width, height


def _draft(image: Image.Image, max_side: int | None) -> None:
    """Ask the JPEG decoder for a reduced scale whose longer side stays >= ``max_side``."""
    width, height = image.size
    if max_side is None or image.format != "JPEG" or max(width, height) <= max_side:
        return
    scale = max_side / max(width, height)
    image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def check_geometry(
    source: Any, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS, max_aspect: float = DEFAULT_MAX_ASPECT
) -> None:
    """Refuse (``ImageError``) an image with no pixels, more than ``max_pixels``, or one side more than
    ``max_aspect`` times the other: THE geometry limit, applied by every decode (CLI, library, service)
    and by the cropper to arrays handed to it, so such an image fails alone, before any model sees it."""
    if width <= 0 or height <= 0:
        raise ImageError(source, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(source, f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(
            source, f"image is {width}x{height}: one side is over {max_aspect:g} times the other (a strip, not a photo)"
        )


def _from_pil(image: Image.Image, source: Any, opts: DecodeOptions) -> np.ndarray:
    check_geometry(source, image.size[0], image.size[1], opts.max_pixels)
    if opts.exif_transpose:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _from_array(np.asarray(image), source, opts, "RGB")
    elif mode not in ("RGB", "RGBA", "LA", "L"):
        image = image.convert("RGB")  # 1, CMYK (Adobe inversion handled by Pillow), YCbCr, LAB, HSV
    return _from_array(np.asarray(image), source, opts, "RGB")


def _from_tensor(tensor: Any, opts: DecodeOptions) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    if array.ndim == 3:
        if array.shape[0] not in (1, 3, 4):
            raise ImageError(tensor, "tensor must be CHW with 1, 3 or 4 channels")
        array = np.transpose(array, (1, 2, 0))
    return _from_array(array, tensor, opts, "RGB")


def _from_array(array: np.ndarray, source: Any, opts: DecodeOptions, order: ChannelOrder) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(source, f"array must be HxW or HxWxC with C in 1..4, got shape {array.shape}")
    check_geometry(source, array.shape[1], array.shape[0], opts.max_pixels)
    array = _to_uint8(array, source)
    channels = array.shape[2]
    if channels in (2, 4):
        color, alpha = array[:, :, :-1], array[:, :, -1:].astype(np.float32) / 255.0
        if channels == 4 and order == "BGR":
            color = color[:, :, ::-1]
        color = np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color
        background = np.asarray(opts.background, dtype=np.float32).reshape(1, 1, 3)
        blended = color.astype(np.float32) * alpha + background * (1.0 - alpha)
        return np.ascontiguousarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    if channels == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if order == "BGR":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, source: Any) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype in (np.uint16, np.int32, np.int64, np.uint32):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ImageError(source, f"integer pixels outside the 16-bit range in {array.dtype} image")
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(source, "float image contains NaN or infinity")
        return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise ImageError(source, f"unsupported pixel type {array.dtype}")


def iter_image_files(
    root: str | os.PathLike,
    recursive: bool = True,
    skip_hidden: bool = False,
    extensions: Collection[str] = IMAGE_EXTENSIONS,
) -> Iterator[Path]:
    """Image files (or files ending in one of ``extensions``) under a folder in sorted order (by
    extension; the decoder has the last word). The one folder walker of the package.

    A FIFO, socket or device with such a name is skipped with a warning (reading it could block); a broken
    symbolic link is listed, so that reading it reports it instead of it vanishing. ``skip_hidden`` leaves
    out paths with a part starting with "." below ``root`` (.ipynb_checkpoints, ._x.jpg).
    """
    root = Path(root)
    wanted = {e.lower() for e in extensions}
    pattern = "**/*" if recursive else "*"
    for path in sorted(root.glob(pattern)):
        if skip_hidden and any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix.lower() not in wanted:
            continue
        if path.is_file() or (path.is_symlink() and not path.exists()):  # a broken link: its reader names the target
            yield path
        elif path.exists() and not path.is_dir():
            logger.warning("%s: not a regular file (a %s); skipped", path, _file_kind(path.stat().st_mode))

"""``InferenceOptions``: every inference setting, listed and checked once.

``Pipeline``, ``Pipeline.load``, ``Classifier.predict``, ``evaluate``, the ``predict``/``serve`` CLI (its
flags are derived from the fields, see ``cli/options.py``), the HTTP service and Ray all take this one
object, so a bad value (``batch_size=0``, ``topk=-1``) is the same one-line ``OptionError`` everywhere.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

from vehicle_cls.fromdict import check_keys, field_names, strict_from_dict
from vehicle_cls.io.device_decode import DECODES
from vehicle_cls.runtime import DEFAULT_PRECISION, PRECISIONS

DEFAULT_MAX_BATCH_PIXELS = 100_000_000  # ~300 MB of RGB; a 4000x3000 photo is 12 M
# ~3x the detector's 1333 px test size and more than a classifier crop (224-448 px input) needs: a
# 13000 px JPEG is decoded at 1/2 (6500 px, a quarter of the pixels); JPEGs under 8192 px at full size
DEFAULT_MAX_DECODE_SIDE = 4096


class OptionError(ValueError):
    """A bad inference option: ``option`` is the field's name, the message one line that starts with it."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option} {message}")
        self.option, self.message = option, message


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class InferenceOptions:
    """How a pipeline runs: batching, labels per vehicle, cropping, precision, device and decoding.

    ``metadata["help"]`` is each option's CLI help; ``choices`` and ``const`` shape its flag.

    Raises:
        OptionError: a bad value (``batch_size=0``, ``precision="fp8"``, ...): one line naming the field.

    Example:
        ```python
        opts = InferenceOptions(batch_size=8, precision="fp32")
        pipe = Pipeline.load("my_pipeline", opts, topk=3)   # keyword overrides replace fields
        ```
    """

    device: str | None = field(
        default=None,
        metadata=_help(
            "auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ... (default: the classifier's device; "
            "auto when loading a bundle)"
        ),
    )
    batch_size: int = field(default=16, metadata=_help("images per batch (default: 16)"))
    topk: int = field(default=5, metadata=_help("classes listed per vehicle (default: 5)"))
    crop: bool = field(default=True, metadata=_help("use the bundle's cropper (--no-crop: classify whole images)"))
    precision: str = field(
        default=DEFAULT_PRECISION,
        metadata=_help(
            "auto (default): the fast path where it keeps agreement with fp32 (bf16 on CPUs with native bf16 and "
            "on CUDA), per model as it supports it; fp32: the exact reference",
            choices=PRECISIONS,
        ),
    )
    num_workers: int = field(default=2, metadata=_help("image decoding threads (default: 2)"))
    frame_stride: int = field(default=1, metadata=_help("video: classify every N-th frame (default: 1)"))
    channels_last: bool = field(
        default=True, metadata=_help("channels-last classifier weights (--no-channels-last: keep the layout)")
    )
    max_batch_pixels: int = field(
        default=DEFAULT_MAX_BATCH_PIXELS,
        metadata=_help("decoded pixels held at once; a batch is cut early beyond it (default: 100000000)"),
    )
    max_decode_side: int | None = field(
        default=DEFAULT_MAX_DECODE_SIDE,
        metadata=_help(
            "decode a JPEG whose longer side exceeds PX at the decoder's 1/2, 1/4 or 1/8 scale that keeps it >= PX, "
            "to bound memory; boxes and image_size stay in original pixels (default: 4096; 0 or none: always "
            "full size)",
            metavar="PX",
            zero_is_none=True,
        ),
    )
    decode: str = field(
        default="auto",
        metadata=_help(
            "where JPEGs are decoded: auto (on the GPU with nvjpeg where it pays), cpu, or device (default: auto)",
            choices=DECODES,
        ),
    )
    classifier_batch_size: int | None = field(
        default=None,
        metadata=_help(
            "crops per classifier call (default: as many as free GPU memory allows on CUDA, the batch size on the CPU)",
            metavar="N",
        ),
    )
    compile: str | bool | None = field(
        default=None,
        metadata=_help(
            "run the classifier through torch.compile (MODE e.g. reduce-overhead for CUDA graphs); the first "
            "batches wait for the compilation (default: off)",
            const="default",
            metavar="MODE",
        ),
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "topk", "frame_stride", "max_batch_pixels"):
            object.__setattr__(self, name, _checked_int(name, getattr(self, name), 1))
        object.__setattr__(self, "num_workers", _checked_int("num_workers", self.num_workers, 0))
        for name in ("max_decode_side", "classifier_batch_size"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _checked_int(name, getattr(self, name), 1, " or None"))
        for name, allowed in (("precision", PRECISIONS), ("decode", DECODES)):
            if getattr(self, name) not in allowed:
                raise OptionError(name, f"must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in ("crop", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be True or False, not {getattr(self, name)!r}")
        if self.device is not None and not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))  # a torch.device: kept as its name
        from vehicle_cls.classifier.compiled import resolve_compile

        try:
            object.__setattr__(self, "compile", resolve_compile(self.compile))
        except ValueError as exc:
            raise OptionError("compile", str(exc).removeprefix("compile ")) from None

    def replace(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes``, checked like the original (an unknown name: did-you-mean error).

        Args:
            **changes: field names and their new values.

        Returns:
            The new options (``self`` when there are no changes).

        Raises:
            ValueError: an unknown field name (with a did-you-mean), or a bad value (``OptionError``).
        """
        check_keys(changes, field_names(InferenceOptions), what="inference option")
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field by name (what the HTTP service and Ray workers pass around).

        Returns:
            The fields.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "inference options") -> InferenceOptions:
        """From ``to_dict`` output (or a subset); an unknown key is refused with a did-you-mean.

        Args:
            data: the fields by name (the others keep their defaults).
            source: where ``data`` came from, for the error message.

        Returns:
            The options.

        Raises:
            ValueError: ``data`` is not a mapping, has an unknown key, or a bad value; one line that
                names ``source`` and the key.
        """
        return strict_from_dict(cls, data, source=source)


def _checked_int(name: str, value: Any, minimum: int, alternative: str = "") -> int:
    """``value`` as an int, or a one-line ``OptionError`` unless it is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(name, f"must be a whole number >= {minimum}{alternative}, not {value!r}")
    if value < minimum:
        raise OptionError(name, f"must be >= {minimum}{alternative}, not {value}")
    return int(value)

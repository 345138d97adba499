"""Class names: the 196 Stanford Cars classes, make/model/body/year parsing, COCO vehicle ids."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

# detectron2's contiguous COCO ids (0-based over the 80 thing classes)
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
VEHICLE_CLASS_IDS: dict[str, int] = {
    name: COCO_CLASSES.index(name) for name in ("bicycle", "car", "motorcycle", "bus", "train", "truck")
}
DEFAULT_VEHICLE_CLASSES: tuple[str, ...] = ("car", "truck", "bus")


def coco_class_name(class_id: int) -> str:
    """Name of a contiguous COCO id; ``str(id)`` for ids outside the 80 classes."""
    return COCO_CLASSES[class_id] if 0 <= class_id < len(COCO_CLASSES) else str(class_id)


def coco_class_ids(names: Sequence[str | int]) -> tuple[int, ...]:
    """Contiguous COCO ids for class names (or ids given as ints); unknown names are an error."""
    ids = []
    for name in names:
        if isinstance(name, int):
            ids.append(name)
        elif name in COCO_CLASSES:
            ids.append(COCO_CLASSES.index(name))
        else:
            raise ValueError(f"unknown COCO class {name!r}; vehicle classes are {sorted(VEHICLE_CLASS_IDS)}")
    return tuple(ids)


@lru_cache(maxsize=1)
def stanford_cars_classes() -> tuple[str, ...]:
    """The 196 Stanford Cars class names in devkit order (index i is devkit class i + 1)."""
    text = resources.files("vehicle_cls").joinpath("assets/stanford_cars_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


_MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
_CAB_BODIES = ("Crew Cab", "Extended Cab", "Regular Cab", "Quad Cab", "Club Cab")
_BODIES = ("SUV", "Sedan", "Coupe", "Convertible", "Hatchback", "Wagon", "Van", "Minivan", "SuperCab")
_VEHICLE_TYPE = {"Van": "van", "Minivan": "van", "SuperCab": "pickup"}


@dataclass(frozen=True)
class CarName:
    """A Stanford Cars style name split into parts, e.g. Tesla / Model S / Sedan / 2012."""

    make: str
    model: str
    body: str | None  # None when the name carries none (e.g. "Acura TL Type-S 2008")
    year: int | None
    vehicle_type: str | None  # coarse type: sedan, suv, coupe, convertible, hatchback, wagon, van, pickup

    def to_dict(self) -> dict:
        return asdict(self)


def parse_car_name(name: str) -> CarName:
    """Split "<Make> <Model...> [<Body>] <Year>" into parts; tolerant of names without body or year."""
    words = name.split()
    if not words:
        raise ValueError("empty class name")
    year = None
    if re.fullmatch(r"(19|20)\d\d", words[-1]):
        year = int(words.pop())
    make_words = 1
    for make in _MULTI_WORD_MAKES:
        if " ".join(words).startswith(make + " ") or " ".join(words) == make:
            make_words = len(make.split())
    make, rest = " ".join(words[:make_words]), words[make_words:]
    body = None
    tail2 = " ".join(rest[-2:])
    if len(rest) >= 3 and tail2 in _CAB_BODIES:
        body, rest = tail2, rest[:-2]
    elif len(rest) >= 2 and rest[-1] in _BODIES:
        body, rest = rest[-1], rest[:-1]
    else:
        body = next((w for w in reversed(rest[1:]) if w in _BODIES), None)  # "G Coupe IPL"
    vehicle_type = None
    if body is not None:
        vehicle_type = "pickup" if body in _CAB_BODIES else _VEHICLE_TYPE.get(body, body.lower())
    return CarName(make=make, model=" ".join(rest), body=body, year=year, vehicle_type=vehicle_type)

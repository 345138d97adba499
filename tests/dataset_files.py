"""Small dataset files the data tests build: class folders of real photos, a Kaggle-style tree, a Stanford
devkit with our own annotation rows (the real ``cars_meta.mat``). A helper module, not a test module."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import scipy.io

DATA = Path(__file__).parent / "data"
PHOTOS = DATA / "vehicle_photos"
DEVKIT = DATA / "stanford_devkit"
CLASSES = ["car", "minibus", "truck"]  # three of the classes in tests/data/vehicle_photos
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def copy_photos(dest: Path, mapping: dict[str, list[str]]) -> None:
    """dest/<folder>/<photo> for each folder -> list of photo paths relative to PHOTOS."""
    for folder, photos in mapping.items():
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for p in photos:
            shutil.copy(PHOTOS / p, dest / folder / Path(p).name)


def first_photo(name: str = "car") -> Path:
    """The first real photo (by name) of a class in tests/data/vehicle_photos."""
    return min((PHOTOS / name).glob("*.jpg"))


def class_folders(root: Path, per_class: int = 2) -> Path:
    """root/<class>/ with ``per_class`` real photos for each of CLASSES: the smallest ``folders`` dataset."""
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for p in sorted((PHOTOS / c).glob("*.jpg"))[:per_class]:
            shutil.copy(p, root / c / p.name)
    return root


def make_kaggle(root: Path, with_csv: bool = True) -> Path:
    """car_data/car_data/{train,test}/<class>/ + names.csv + anno_*.csv, like the Kaggle download."""
    base = root / "car_data" / "car_data"
    names = ["Ram C/V Cargo Van Minivan 2012", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
    copy_photos(base / "train", {
        "Ram C-V Cargo Van Minivan 2012": ["car/car1.jpg", "car/car2.jpg"],
        "Acura RL Sedan 2012": ["truck/truck1.jpg"],
    })
    copy_photos(base / "test", {"Audi TTS Coupe 2012": ["minibus/minibus1.jpg"], "Acura RL Sedan 2012": ["car/car3.jpg"]})
    if with_csv:
        (root / "names.csv").write_text("\n".join(names) + "\n")
        (root / "anno_train.csv").write_text(
            "car1.jpg,10,20,90,80,1\n"
            "car2.jpg,5,5,50,60,1\n"
            "truck1.jpg,1,2,99,98,2\n"
        )
        (root / "anno_test.csv").write_text("minibus1.jpg,3,4,70,71,3\ncar3.jpg,8,9,60,61,2\n")
    return root


def write_annos(path: Path, rows: list[dict], fields=FIELDS) -> Path:
    """A devkit-style struct array ``annotations`` (one 1x1 array per value, as MATLAB writes)."""
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            value = row[f]
            arr[0, i][f] = np.array([value]) if isinstance(value, str) else np.array(value, dtype=float).reshape(1, -1)
    scipy.io.savemat(str(path), {"annotations": arr})
    return path


def make_devkit(tmp_path: Path, rows: list[dict], fields=FIELDS, images: list[str] | None = None, size=(40, 60)) -> Path:
    """A devkit folder (real cars_meta.mat + our train annotations) with tiny images in cars_train/."""
    from PIL import Image

    devkit = tmp_path / "devkit"
    devkit.mkdir()
    (devkit / "cars_meta.mat").write_bytes((DEVKIT / "cars_meta.mat").read_bytes())
    write_annos(devkit / "cars_train_annos.mat", rows, fields)
    images_dir = tmp_path / "cars_train"
    images_dir.mkdir()
    for name in images if images is not None else [r["fname"] for r in rows if isinstance(r.get("fname"), str)]:
        Image.new("RGB", (size[1], size[0]), (10, 20, 30)).save(images_dir / name)
    return devkit


def row(i: int, **changes) -> dict:
    base = {"bbox_x1": 5, "bbox_y1": 6, "bbox_x2": 30, "bbox_y2": 25, "class": 1 + i, "fname": f"{i + 1:05d}.jpg"}
    base.update(changes)
    return base


def make_coco(folder: Path, annotations: list[dict], images: list[dict] | None = None,
              categories: list[dict] | None = None, size=(48, 64), name: str = "annotations.json") -> Path:
    """A COCO annotation file in ``folder`` and a PNG per image (grey; each annotation's box painted in a
    colour of its id), so a ground-truth crop can be checked pixel for pixel. Default images a.png..c.png
    (ids 1..3) of ``size`` (height, width); default categories the COCO vehicle ids car 3, bus 6, truck 8."""
    import json

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    if images is None:
        images = [{"id": i + 1, "file_name": f"{c}.png", "height": size[0], "width": size[1]}
                  for i, c in enumerate("abc")]
    if categories is None:
        categories = [{"id": 3, "name": "car"}, {"id": 6, "name": "bus"}, {"id": 8, "name": "truck"}]
    for image in images:
        picture = Image.new("RGB", (image.get("width", size[1]), image.get("height", size[0])), (128, 128, 128))
        draw = ImageDraw.Draw(picture)
        for ann in annotations:
            if not isinstance(ann, dict) or ann.get("image_id") != image["id"]:
                continue
            box = ann.get("bbox")
            if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
                x, y, w, h = box
                if w > 0 and h > 0:
                    draw.rectangle([x, y, x + w - 1, y + h - 1], fill=box_colour(ann["id"]))
        picture.save(folder / image["file_name"])
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def box_colour(ann_id: int) -> tuple[int, int, int]:
    """The colour ``make_coco`` paints annotation ``ann_id``'s box with."""
    return (20 * ann_id % 256, 255 - 20 * ann_id % 256, 60)


def coco_ann(ann_id: int, image_id: int, category_id: int, bbox: list, **extra) -> dict:
    """One COCO annotation dict, with the ``iscrowd`` and ``area`` that pycocotools' own reader needs."""
    numbers = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    area = {"area": bbox[2] * bbox[3]} if numbers else {}
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **area, **extra}

"""The coco layout: a COCO annotation file the tests write, read as samples (one per annotation or per image),
its malformed entries reported one by one, and ground-truth crops cut from its boxes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_files import box_colour, coco_ann, make_coco

from vehicle_cls.data import CocoDataset, DatasetError, detect_layout, open_dataset

pytest.importorskip("pycocotools")


def _good(tmp_path: Path) -> Path:
    return make_coco(tmp_path, [
        coco_ann(1, 1, 3, [2, 3, 20, 10]),        # a.png: a car
        coco_ann(2, 1, 8, [30, 20, 30, 25]),      # a.png: a truck, larger
        coco_ann(3, 2, 6, [5, 5, 40, 30]),        # b.png: a bus
        coco_ann(4, 3, 3, [0, 0, 64, 48], iscrowd=1),  # c.png: a crowd region, never a sample
        coco_ann(5, 3, 3, [10.5, 8.25, 12.5, 9.75]),   # c.png: fractional box
    ])


def test_one_sample_per_annotation_labelled_by_category_name(tmp_path):
    ds = CocoDataset(_good(tmp_path))
    assert ds.classes == ["car", "bus", "truck"]  # category id order (3, 6, 8)
    assert ds.category_ids == [3, 6, 8] and ds.box_format == "xyxy" and ds.problems == []
    got = [(Path(s.path).name, ds.classes[s.label], s.box) for s in ds]
    assert got == [
        ("a.png", "car", (2.0, 3.0, 22.0, 13.0)),
        ("a.png", "truck", (30.0, 20.0, 60.0, 45.0)),
        ("b.png", "bus", (5.0, 5.0, 45.0, 35.0)),
        ("c.png", "car", (10.5, 8.25, 23.0, 18.0)),
    ]
    assert Path(ds[0].path).parent == tmp_path  # file_name is relative to the JSON's folder by default
    assert sorted(ds.coco.getAnnIds()) == [1, 2, 3, 4, 5]  # the pycocotools index keeps the crowd region
    assert ds.coco.getAnnIds(iscrowd=False) == [1, 2, 3, 5]


def test_per_image_keeps_the_largest_annotation_and_categories_filter(tmp_path):
    path = _good(tmp_path)
    per_image = CocoDataset(path, per="image")
    assert [(Path(s.path).name, per_image.classes[s.label]) for s in per_image] == [
        ("a.png", "truck"), ("b.png", "bus"), ("c.png", "car")]
    cars = CocoDataset(path, categories=["car"])
    assert cars.classes == ["car"] and cars.category_ids == [3] and len(cars) == 2
    assert {s.label for s in cars} == {0}
    with pytest.raises(DatasetError, match=r"annotations.json: no category \['tram'\]"):
        CocoDataset(path, categories=["tram"])
    with pytest.raises(ValueError, match="per must be one of"):
        CocoDataset(path, per="box")


def test_ground_truth_crops_are_the_annotated_pixels(tmp_path):
    from vehicle_cls.data.torch_dataset import SampleDataset

    ds = open_dataset(_good(tmp_path), split=None)  # auto: a .json file is the coco layout
    crops = SampleDataset(ds, crop="gt", input_format="numpy")
    for i, ann_id in enumerate((1, 2, 3)):
        crop = crops.load(i)
        x1, y1, x2, y2 = (int(v) for v in ds[i].box)
        assert crop.shape == (y2 - y1, x2 - x1, 3)
        assert (crop == np.array(box_colour(ann_id), np.uint8)).all()  # every pixel of the box, nothing else


def test_layout_detection_and_open_dataset_splits(tmp_path):
    path = _good(tmp_path)
    assert detect_layout(path) == "coco"
    train = open_dataset(path, "coco", split="train")
    assert train.split == "train" and len(train) == 4  # one file is one split: tagged as asked
    whole = open_dataset(path, split=None, images_dir=tmp_path, per="image")
    assert whole.split is None and len(whole) == 3
    from vehicle_cls.data.layouts import MissingSplitError

    with pytest.raises(MissingSplitError, match="has no 'test' split"):
        open_dataset(path, split="test", require_split=True)
    with pytest.raises(DatasetError, match="reads a COCO annotation .json"):
        open_dataset(tmp_path, "coco")


_BAD = [  # (annotation, what the problem line says)
    (coco_ann(7, 1, 3, [2, 3, 0, 10]), "annotation id 7: bbox has a non-positive size (w=0, h=10)"),
    (coco_ann(7, 1, 3, [2, 3, 10, -4]), "annotation id 7: bbox has a non-positive size (w=10, h=-4)"),
    (coco_ann(7, 9, 3, [2, 3, 10, 10]), "annotation id 7: image_id 9 names no (usable) image"),
    (coco_ann(7, 1, 99, [2, 3, 10, 10]), "annotation id 7: category_id 99 names no category"),
    (coco_ann(7, 1, 3, [2, 3, 10]), "annotation id 7: bbox must be 4 numbers"),
    (coco_ann(7, 1, 3, [2, "x", 10, 10]), "annotation id 7: bbox must be 4 numbers"),
    (coco_ann(7, 1, 3, [60, 3, 30, 10]), "annotation id 7: bbox [60, 3, 30, 10]: box (x1=60, y1=3, x2=90, y2=13) "
                                         "is outside the 64x48 image"),
    (coco_ann(1, 1, 3, [2, 3, 10, 10]), "annotation id 1: duplicate annotation id 1"),
    ({"id": 7, "image_id": 1, "category_id": 3}, "annotation id 7: missing key(s) ['bbox']"),
    ("not an object", "an annotation must be an object, not str"),
]


@pytest.mark.parametrize("bad, reason", _BAD, ids=[r.split(": ", 1)[-1][:30] for _, r in _BAD])
def test_a_malformed_annotation_is_one_problem_and_the_rest_is_read(tmp_path, bad, reason):
    path = make_coco(tmp_path, [coco_ann(1, 1, 3, [2, 3, 20, 10]), bad, coco_ann(2, 2, 8, [1, 1, 5, 5])])
    ds = CocoDataset(path)
    assert [Path(s.path).name for s in ds] == ["a.png", "b.png"]  # the good rows on either side survive
    (problem,) = ds.problems
    assert (problem.file, problem.row) == (str(path), 2)  # the file and the position in "annotations"
    assert reason in problem.reason and "\n" not in str(problem)
    with pytest.raises(DatasetError, match=r"^COCO .*annotations.json: 1 malformed entry: .*row 2") as info:
        CocoDataset(path, on_error="raise")
    assert "\n" not in str(info.value) and info.value.problems == [problem]


def test_missing_image_file_duplicate_image_and_bad_category_entries(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 48, "width": 64},
              {"id": 2, "file_name": "b.png", "height": 48, "width": 64},
              {"id": 2, "file_name": "c.png", "height": 48, "width": 64},  # duplicate id
              {"id": "x", "file_name": "d.png"},
              {"id": 4, "file_name": "e.png", "height": 48, "width": 64}]  # its file is deleted below
    cats = [{"id": 3, "name": "car"}, {"id": 5, "name": "bus"}, {"id": 5, "name": "van"}, {"name": "truck"}]
    anns = [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 2, 3, [1, 1, 5, 5]), coco_ann(3, 4, 3, [1, 1, 5, 5])]
    path = make_coco(tmp_path, anns, images=images, categories=cats)
    (tmp_path / "e.png").unlink()
    ds = CocoDataset(path)
    assert [Path(s.path).name for s in ds] == ["a.png"] and ds.classes == ["car"]
    text = [str(p) for p in ds.problems]
    assert any("(categories[1]): duplicate category id 5" in t for t in text)  # no entry of an id used twice
    assert any("(categories[2]): duplicate category id 5" in t for t in text)
    assert any("(categories[3]): a category needs an integer id and a name" in t for t in text)
    assert any("(e.png): image file not found" in t for t in text)
    assert any("(b.png): duplicate image id 2" in t for t in text)  # neither file is taken as image 2
    assert any("(c.png): duplicate image id 2" in t for t in text)
    assert any("(images[3]): an image needs an integer id" in t for t in text)
    assert any("row 2: annotation id 2: image_id 2 names no (usable) image" in t for t in text)
    assert any("row 3: annotation id 3: image_id 4 names no (usable) image" in t for t in text)
    assert len(ds.problems) == 9 and ds.incomplete_images == {2, 4}
    assert [Path(s.path).name for s in CocoDataset(path, check_images=False)] == ["a.png", "e.png"]


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "a COCO file is a JSON object, not list"),
    (json.dumps({"images": [], "annotations": []}), r"missing key\(s\) \['categories'\]"),
    (json.dumps({"images": {}, "annotations": [], "categories": []}), r"\['images'\] must be lists"),
])
def test_a_file_that_is_no_coco_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "ann.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        CocoDataset(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="COCO annotation file not found"):
        CocoDataset(tmp_path / "missing.json")


def test_recipe_layout_options_reach_the_reader(tmp_path):
    """`data.layout_options` in a recipe (or `data.layout_options={per: image}` on the command line) are the
    reader's arguments; one the layout does not take is a recipe error naming the key."""
    from vehicle_cls.train.config import ConfigError, load_config
    from vehicle_cls.train.splits import prepare_splits

    path = _good(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{train: {path}, layout: coco, val_fraction: 0.0}}\nmodel: {{arch: resnet18}}\n")
    default = prepare_splits(load_config(recipe).data)
    assert len(default.train) == 4 and default.classes == ["car", "bus", "truck"]
    per_image = prepare_splits(load_config(recipe, ["data.layout_options={per: image, categories: [car, truck]}"]).data)
    assert per_image.classes == ["car", "truck"]
    assert sorted(Path(s.path).name for s in per_image.train) == ["a.png", "c.png"]  # b.png holds only a bus
    with pytest.raises(ConfigError, match=r"layout_options.*'pre'"):
        prepare_splits(load_config(recipe, ["data.layout_options={pre: image}"]).data)
    with pytest.raises(ConfigError, match="data.layout_options: expected a mapping"):
        load_config(recipe, ["data.layout_options=image"])

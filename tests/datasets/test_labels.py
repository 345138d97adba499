"""Class names: the shipped Stanford Cars list equals the real devkit's, and names parse."""
from __future__ import annotations

import pytest
import scipy.io

from vehicle_cls.labels import (
    COCO_CLASSES,
    VEHICLE_CLASS_IDS,
    coco_class_ids,
    coco_class_name,
    parse_car_name,
    stanford_cars_classes,
)


def test_shipped_names_equal_the_real_devkit(data_dir):
    meta = scipy.io.loadmat(data_dir / "stanford_devkit" / "cars_meta.mat")
    devkit = [str(cell[0]) for cell in meta["class_names"][0]]
    assert len(devkit) == 196
    assert list(stanford_cars_classes()) == devkit
    assert stanford_cars_classes()[0] == "AM General Hummer SUV 2000"


@pytest.mark.parametrize(
    "name, make, model, body, year, vtype",
    [
        ("Tesla Model S Sedan 2012", "Tesla", "Model S", "Sedan", 2012, "sedan"),
        ("AM General Hummer SUV 2000", "AM General", "Hummer", "SUV", 2000, "suv"),
        ("Aston Martin V8 Vantage Convertible 2012", "Aston Martin", "V8 Vantage", "Convertible", 2012, "convertible"),
        ("Land Rover Range Rover SUV 2012", "Land Rover", "Range Rover", "SUV", 2012, "suv"),
        ("Ford F-450 Super Duty Crew Cab 2012", "Ford", "F-450 Super Duty", "Crew Cab", 2012, "pickup"),
        ("Ford Ranger SuperCab 2011", "Ford", "Ranger", "SuperCab", 2011, "pickup"),
        ("Ram C/V Cargo Van Minivan 2012", "Ram", "C/V Cargo Van", "Minivan", 2012, "van"),
        ("Acura TL Type-S 2008", "Acura", "TL Type-S", None, 2008, None),
        ("Infiniti G Coupe IPL 2012", "Infiniti", "G Coupe IPL", "Coupe", 2012, "coupe"),
        ("smart fortwo Convertible 2012", "smart", "fortwo", "Convertible", 2012, "convertible"),
        ("my fleet van", "my", "fleet van", None, None, None),
    ],
)
def test_parse_car_name(name, make, model, body, year, vtype):
    parsed = parse_car_name(name)
    assert (parsed.make, parsed.model, parsed.body, parsed.year, parsed.vehicle_type) == (make, model, body, year, vtype)


def test_every_stanford_name_has_make_model_and_year():
    makes = set()
    for name in stanford_cars_classes():
        parsed = parse_car_name(name)
        assert parsed.year is not None and 1990 <= parsed.year <= 2012, name
        assert parsed.model, name
        assert name.startswith(parsed.make + " "), name
        makes.add(parsed.make)
    assert len(makes) == 49  # the devkit's 49 makes


def test_coco_vehicle_ids_are_detectron2_contiguous_ids():
    assert len(COCO_CLASSES) == 80
    assert VEHICLE_CLASS_IDS == {"bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "train": 6, "truck": 7}
    assert coco_class_ids(("car", "truck", "bus")) == (2, 7, 5)
    assert coco_class_ids([2, "bus"]) == (2, 5)
    assert coco_class_name(7) == "truck" and coco_class_name(99) == "99"
    with pytest.raises(ValueError, match="unknown COCO class 'lorry'"):
        coco_class_ids(["lorry"])

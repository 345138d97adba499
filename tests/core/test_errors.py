"""The project's errors share one base class and keep their builtin bases; one_line folds whitespace."""
from __future__ import annotations

import importlib

import pytest

from vehicle_cls.errors import VehicleClsError, one_line

ERRORS = [
    ("vehicle_cls.io.images", "ImageError", ValueError),
    ("vehicle_cls.cropper.checkpoint", "CheckpointError", ValueError),
    ("vehicle_cls.classifier.bundle", "BundleError", ValueError),
    ("vehicle_cls.classifier.factory", "WeightsUnavailableError", RuntimeError),
    ("vehicle_cls.torchfile", "TorchFileError", ValueError),
    ("vehicle_cls.train.config", "ConfigError", ValueError),
    ("vehicle_cls.train.nonfinite", "NonFiniteLossError", RuntimeError),
    ("vehicle_cls.data.sample", "DatasetError", ValueError),
    ("vehicle_cls.weights", "WeightsError", RuntimeError),
    ("vehicle_cls.serve.uploads", "UploadError", Exception),
]


@pytest.mark.parametrize("module, name, builtin", ERRORS)
def test_project_errors_derive_from_the_base_and_keep_their_builtin(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, VehicleClsError) and issubclass(cls, builtin)


def test_one_line_folds_newlines_tabs_and_runs_of_spaces():
    assert one_line("a\n  b\tc\r\n") == "a b c"
    assert one_line(ValueError("x\ny")) == "x y"


def test_image_error_and_dataset_error_messages_are_one_line():
    from vehicle_cls.data.sample import DatasetError
    from vehicle_cls.io.images import ImageError

    assert str(ImageError("a.jpg", "bad\nfile")) == "a.jpg: bad file"
    assert str(DatasetError("two\nlines")) == "two lines"

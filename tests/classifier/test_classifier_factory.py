"""Backbones by name with a new Dropout + Linear head; ImageNet weights from torch.hub's cache or a
clear offline message."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

from vehicle_cls.classifier import Classifier, WeightsUnavailableError, create_model
from vehicle_cls.classifier.factory import get_head, weights_cache_path


def test_resnet_head_is_dropout_plus_linear_for_the_classes():
    clf = Classifier.create("resnet18", classes=["a", "b", "c"], dropout=0.4)
    fc = clf.model.fc
    assert isinstance(fc, nn.Sequential) and len(fc) == 2
    assert isinstance(fc[0], nn.Dropout) and fc[0].p == 0.4
    assert isinstance(fc[1], nn.Linear) and (fc[1].in_features, fc[1].out_features) == (512, 3)
    assert not clf.model.training  # ready for inference
    out = clf.model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 3)


def test_efficientnet_head_replaced_with_one_dropout():
    model = create_model("efficientnet_b0", 5, dropout=0.1)
    assert isinstance(model.classifier[0], nn.Identity)  # the old dropout no longer acts twice
    assert isinstance(model.classifier[1][0], nn.Dropout) and model.classifier[1][0].p == 0.1
    assert get_head(model, "efficientnet_b0").out_features == 5


def test_unknown_and_unsupported_arch_named():
    with pytest.raises(ValueError, match="unsupported classifier architecture 'resnet9000'"):
        create_model("resnet9000", 3)
    with pytest.raises(ValueError, match="'googlenet'"):
        create_model("googlenet", 3)
    with pytest.raises(ValueError, match="class names"):
        Classifier.create("resnet18", classes=[])


@pytest.fixture()
def hub_dir(tmp_path, monkeypatch) -> Path:
    """The vehicle_cls weights cache (ImageNet weights live there too, not in torch.hub's)."""
    monkeypatch.setenv("VEHICLE_CLS_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_imagenet_weights_loaded_from_the_weights_cache(hub_dir):
    from torchvision.models import ResNet18_Weights, resnet18

    url = ResNet18_Weights.DEFAULT.url
    path = weights_cache_path(url)
    assert path.name == "resnet18-f37072fd.pth" and hub_dir in path.parents  # keyed by URL inside the cache
    reference = resnet18(weights=None)  # a full 1000-class checkpoint in the real file format
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
        reference.layer4[1].bn2.running_mean.fill_(3.0)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    clf = Classifier.create("resnet18", classes=["a", "b"], weights="imagenet", progress=False)
    assert torch.equal(clf.model.conv1.weight, reference.conv1.weight)
    assert torch.equal(clf.model.layer4[1].bn2.running_mean, reference.layer4[1].bn2.running_mean)
    assert clf.model.fc[1].out_features == 2


def test_offline_error_says_which_file_to_fetch_and_where(hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        Classifier.create("resnet50", classes=["a"], weights="imagenet", progress=False)
    msg = str(info.value)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    assert str(hub_dir / "resnet50-11ad3fa6.pth") in msg and "weights=None" in msg
    assert not (hub_dir / "resnet50-11ad3fa6.pth").exists()


def test_download_list_and_classifier_create_agree(hub_dir, capsys):
    import argparse

    from torchvision.models import ResNet50_Weights

    from vehicle_cls.cli import download

    def listed() -> dict[str, tuple[str, str]]:
        parser = argparse.ArgumentParser()
        download.register(parser.add_subparsers())
        args = parser.parse_args(["download", "--list"])
        assert args.func(args) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        return {row[0]: (row[1], row[2]) for row in rows}

    assert listed()["resnet50_imagenet_v2"] == ("not cached", str(hub_dir / "resnet50-11ad3fa6.pth"))
    path = weights_cache_path(ResNet50_Weights.DEFAULT.url)  # where Classifier.create(weights="imagenet") reads
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")  # torchvision names the file by its sha256 prefix: this one fails the check
    state, where = listed()["resnet50_imagenet_v2"]
    assert where == str(path) and state.startswith("invalid: ") and "sha256" in state
    with pytest.raises(WeightsUnavailableError, match="is not valid") as info:  # create refuses it the same way
        Classifier.create("resnet50", classes=["a"], weights="imagenet", progress=False)
    assert str(path) in str(info.value)


def test_unknown_weights_name():
    with pytest.raises(ValueError, match="unknown weights 'coco' for resnet18"):
        create_model("resnet18", 2, weights="coco")

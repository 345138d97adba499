"""Transforms: evaluation = the classifier's inference preprocessing, exactly; training augmentation sane."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Preprocess, preprocess_images
from vehicle_cls.data import Sample, SampleList
from vehicle_cls.data.torch_dataset import SampleDataset
from vehicle_cls.io.images import load_image
from vehicle_cls.train.augment import build_batch_mix, build_eval_transform, build_train_transform
from vehicle_cls.train.config import AugmentConfig

PHOTO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types" / "truck"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """A real square photo and a non-square crop of another (so every resize mode differs)."""
    files = sorted(PHOTO.glob("*.jpg"))[:2]
    tmp = tmp_path_factory.mktemp("aug")
    wide = tmp / "wide.png"
    Image.open(files[1]).convert("RGB").crop((0, 20, 100, 77)).save(wide)  # 100 x 57
    return [str(files[0]), str(wide)]


@pytest.mark.parametrize("pre", [
    Preprocess(input_size=64, resize="squash"),
    Preprocess(input_size=48, resize="center_crop", interpolation="bicubic"),
    Preprocess(input_size=80, resize="letterbox", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
])
def test_eval_transform_is_the_inference_preprocessing(photos, pre):
    samples = SampleList([Sample(p, 0) for p in photos], ["truck"], "t", box_format="xyxy")
    ds = SampleDataset(samples, build_eval_transform(pre))
    for i, path in enumerate(photos):
        got = ds[i][0]
        want = preprocess_images([load_image(path)], pre, "cpu")[0]
        assert got.shape == (3, pre.input_size, pre.input_size)
        assert torch.equal(got, want)
    # augmentation disabled (the seed's recipe) trains on exactly the same tensors
    train_ds = SampleDataset(samples, build_train_transform(AugmentConfig(enabled=False), pre))
    assert torch.equal(train_ds[1][0], ds[1][0])


def test_train_transform_normalizes_with_the_models_mean_and_std(photos):
    """No-op crop (full image, same size) + certain flip: hand-computed flip and normalization."""
    pre = Preprocess(input_size=100, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    cfg = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)
    image = load_image(photos[0])  # 100 x 100
    got = build_train_transform(cfg, pre)(torch.from_numpy(image.copy()).permute(2, 0, 1))
    flipped = image[:, ::-1, :].astype(np.float64) / 255.0
    want = (flipped - np.array([0.4, 0.5, 0.6])) / np.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=1e-5)


def test_full_augmentation_output(photos):
    pre = Preprocess(input_size=32)
    cfg = AugmentConfig(rotation=15, color_jitter=0.3, auto="trivial", random_erasing=1.0)
    t = build_train_transform(cfg, pre)
    torch.manual_seed(0)
    a = t(load_image(photos[1]))  # numpy input is accepted too
    b = t(load_image(photos[1]))
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)  # random
    cfg = AugmentConfig(auto="randaugment")
    assert build_train_transform(cfg, pre)(load_image(photos[0])).shape == (3, 32, 32)


def test_mixup_cutmix_give_soft_labels():
    assert build_batch_mix(AugmentConfig(), 6) is None
    mix = build_batch_mix(AugmentConfig(mixup_alpha=0.4, cutmix_alpha=1.0), 6)
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 6
    mixed, soft = mix(images, labels)
    assert mixed.shape == images.shape and soft.shape == (8, 6)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))

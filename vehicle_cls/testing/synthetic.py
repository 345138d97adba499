"""Deterministic synthetic weights for detectron2's COCO R101-FPN, in model-zoo format.

The real model-zoo checkpoints are licensed CC BY-SA 3.0 and must not be shipped, and they are
too large for a test fixture. To check that our torch port computes exactly what detectron2
computes, both are fed the *same* weights: a full detectron2-named state dict generated here from
a seed with numpy only (no detectron2, no torch), then written in the exact ``.pkl`` layout of
the model zoo so that both loaders read the same file.

Random weights alone give a useless detector: activations explode through 101 layers and the
softmax sits below the 0.05 score threshold everywhere. The scheme below keeps every activation
finite and O(1) and yields, on a real photo, a handful to a few dozen detections of varied
classes (car, truck, bus among them):

* convolutions and linear layers are He-initialised (``std = sqrt(2 / fan_in)``); FPN convs use
  ``std = sqrt(1 / fan_in)`` like detectron2's ``c2_xavier_fill``;
* every FrozenBN has non-trivial ``weight``, ``bias``, ``running_mean`` and ``running_var`` so a
  loader that drops or mixes up any of the four buffers is caught; the stem's ``running_var``
  is on the scale of the mean-subtracted 0..255 input so that the stem output is O(1);
* the last norm of every bottleneck (``conv3.norm``) is scaled down, so each residual branch adds
  a small perturbation and the 33 blocks do not blow up the activations;
* ``cls_score`` (background LAST, row 80): centred random foreground rows, eight classes (car,
  truck, bus, person, ...) with larger gains than the rest, and a constant background row, so a
  box passes 0.05 only where a foreground pattern in its features beats their mean; the logits
  are large enough that this depends little on the image's contrast (a bias-based threshold
  gave 2 boxes on one photo and 100 on another). A loader that keeps background first instead
  of last scores everything wrongly;
* ``bbox_pred`` and ``anchor_deltas`` are small, so boxes stay near their anchors/proposals.

Each tensor is drawn from its own generator seeded by ``(seed, crc32(name))``: the values of a
tensor do not depend on which other tensors exist or on the order of generation.
"""

from __future__ import annotations

import logging
import os
import pickle
import zlib
from collections.abc import Iterator

import numpy as np

from vehicle_cls.zoo import detector_config

__all__ = [
    "d2_r101_fpn_shapes",
    "synthetic_d2_state_dict",
    "write_zoo_pkl",
]

logger = logging.getLogger(__name__)


# ResNet-101: (stage name, number of blocks, bottleneck width, output channels).
_STAGES = (("res2", 3, 64, 256), ("res3", 4, 128, 512), ("res4", 23, 256, 1024), ("res5", 3, 512, 2048))
_STEM_OUT = 64
_FPN_DIM = 256
_NUM_ANCHORS = 3  # one size per level, three aspect ratios
_NUM_CLASSES = 80
_POOL_BOX = 7
_FC_DIM = 1024

# --- the scheme's knobs (tuned once against real detectron2 on real photos) ---
_STEM_VAR = 2500.0  # ~ variance of the stem conv output on a mean-subtracted BGR photo
_RESIDUAL_GAIN = 0.2  # scale of each bottleneck's last norm weight
_SHORTCUT_GAIN = 0.7  # scale of the projection shortcut's norm weight
_CLS_WEIGHT_STD = 0.1  # cls_score weight std: box-feature norms are ~50, so logits are ~+-10
#: contiguous COCO id -> gain of its cls_score row; the other foreground classes get _CLS_OTHER_GAIN.
_CLS_LIFTED_GAIN = {
    2: 1.0,  # car
    7: 1.0,  # truck
    5: 1.0,  # bus
    0: 0.9,  # person
    3: 0.9,  # motorcycle
    9: 0.8,  # traffic light
    1: 0.8,  # bicycle
    6: 0.8,  # train
}
_CLS_OTHER_GAIN = 0.4
#: background row = constant _CLS_BG_RATIO * _CLS_WEIGHT_STD / 1024: the background logit is
#: proportional to the mean box feature, so which boxes pass depends little on image contrast.
_CLS_BG_RATIO = 90.0
_BBOX_WEIGHT_STD = 0.01
_RPN_DELTA_STD = 0.003
_RPN_LOGIT_STD = 0.01
_MASK_PRED_STD = 0.1


def d2_r101_fpn_shapes(config: str = "faster_rcnn_R_101_FPN_3x") -> dict[str, tuple[int, ...]]:
    """Return ``{name: shape}`` of a detectron2 R101-FPN model-zoo checkpoint, in module order.

    The names are detectron2's own (``backbone.bottom_up.res4.22.conv3.norm.running_var``, ...);
    ``pixel_mean``, ``pixel_std`` and the anchor buffers are not part of it (detectron2 does not
    save them as parameters and our loader ignores them).
    """
    detector_config(config)  # an unknown name is an error listing the known ones
    return dict(_iter_shapes(config))


def _norm(prefix: str, channels: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    for buf in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.norm.{buf}", (channels,)


def _iter_shapes(config: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    bu = "backbone.bottom_up"
    yield f"{bu}.stem.conv1.weight", (_STEM_OUT, 3, 7, 7)
    yield from _norm(f"{bu}.stem.conv1", _STEM_OUT)
    in_ch = _STEM_OUT
    for stage, blocks, width, out_ch in _STAGES:
        for i in range(blocks):
            p = f"{bu}.{stage}.{i}"
            if i == 0:
                yield f"{p}.shortcut.weight", (out_ch, in_ch, 1, 1)
                yield from _norm(f"{p}.shortcut", out_ch)
            yield f"{p}.conv1.weight", (width, in_ch, 1, 1)
            yield from _norm(f"{p}.conv1", width)
            yield f"{p}.conv2.weight", (width, width, 3, 3)
            yield from _norm(f"{p}.conv2", width)
            yield f"{p}.conv3.weight", (out_ch, width, 1, 1)
            yield from _norm(f"{p}.conv3", out_ch)
            in_ch = out_ch
    for level, (_, _, _, ch) in zip(range(2, 6), _STAGES):
        yield f"backbone.fpn_lateral{level}.weight", (_FPN_DIM, ch, 1, 1)
        yield f"backbone.fpn_lateral{level}.bias", (_FPN_DIM,)
        yield f"backbone.fpn_output{level}.weight", (_FPN_DIM, _FPN_DIM, 3, 3)
        yield f"backbone.fpn_output{level}.bias", (_FPN_DIM,)
    rpn = "proposal_generator.rpn_head"
    yield f"{rpn}.conv.weight", (_FPN_DIM, _FPN_DIM, 3, 3)
    yield f"{rpn}.conv.bias", (_FPN_DIM,)
    yield f"{rpn}.objectness_logits.weight", (_NUM_ANCHORS, _FPN_DIM, 1, 1)
    yield f"{rpn}.objectness_logits.bias", (_NUM_ANCHORS,)
    yield f"{rpn}.anchor_deltas.weight", (_NUM_ANCHORS * 4, _FPN_DIM, 1, 1)
    yield f"{rpn}.anchor_deltas.bias", (_NUM_ANCHORS * 4,)
    yield "roi_heads.box_head.fc1.weight", (_FC_DIM, _FPN_DIM * _POOL_BOX * _POOL_BOX)
    yield "roi_heads.box_head.fc1.bias", (_FC_DIM,)
    yield "roi_heads.box_head.fc2.weight", (_FC_DIM, _FC_DIM)
    yield "roi_heads.box_head.fc2.bias", (_FC_DIM,)
    yield "roi_heads.box_predictor.cls_score.weight", (_NUM_CLASSES + 1, _FC_DIM)
    yield "roi_heads.box_predictor.cls_score.bias", (_NUM_CLASSES + 1,)
    yield "roi_heads.box_predictor.bbox_pred.weight", (_NUM_CLASSES * 4, _FC_DIM)
    yield "roi_heads.box_predictor.bbox_pred.bias", (_NUM_CLASSES * 4,)
    if detector_config(config).mask_on:
        mh = "roi_heads.mask_head"
        for k in range(1, 5):
            yield f"{mh}.mask_fcn{k}.weight", (_FPN_DIM, _FPN_DIM, 3, 3)
            yield f"{mh}.mask_fcn{k}.bias", (_FPN_DIM,)
        # ConvTranspose2d weights are laid out (in, out, kh, kw).
        yield f"{mh}.deconv.weight", (_FPN_DIM, _FPN_DIM, 2, 2)
        yield f"{mh}.deconv.bias", (_FPN_DIM,)
        yield f"{mh}.predictor.weight", (_NUM_CLASSES, _FPN_DIM, 1, 1)
        yield f"{mh}.predictor.bias", (_NUM_CLASSES,)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:]))


def _tensor(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Draw one tensor of the scheme described in the module docstring."""
    rng = _rng(seed, name)
    if ".norm." in name:
        return _norm_buffer(name, shape, rng)
    is_bias = name.endswith(".bias")
    if name.startswith("backbone.bottom_up."):
        return _normal(rng, shape, np.sqrt(2.0 / _fan_in(shape)))
    if name.startswith("backbone.fpn_"):
        if is_bias:
            return _normal(rng, shape, 0.05)
        return _normal(rng, shape, np.sqrt(1.0 / _fan_in(shape)))
    if name.startswith("proposal_generator.rpn_head.conv"):
        if is_bias:
            return _normal(rng, shape, 0.05)
        return _normal(rng, shape, np.sqrt(2.0 / _fan_in(shape)))
    if ".objectness_logits." in name:
        return _normal(rng, shape, 0.1 if is_bias else _RPN_LOGIT_STD)
    if ".anchor_deltas." in name:
        return _normal(rng, shape, 0.01 if is_bias else _RPN_DELTA_STD)
    if name.startswith("roi_heads.box_head."):
        if is_bias:
            return _normal(rng, shape, 0.05)
        return _normal(rng, shape, np.sqrt(2.0 / _fan_in(shape)))
    if ".cls_score." in name:
        if is_bias:
            return _normal(rng, shape, 0.1)
        # Box features are post-ReLU (all positive) and their overall magnitude follows the
        # image's contrast. Foreground rows are centred, so they score the *pattern* of a box's
        # features; the background row is constant, so it scores their mean. With logits of
        # ~+-10 the biases barely matter, the softmax is nearly scale-free, and a box is
        # detected where a foreground pattern beats the mean: a few percent of the boxes.
        weight = _normal(rng, shape, _CLS_WEIGHT_STD)
        weight -= weight.mean(axis=1, keepdims=True)
        gain = np.full((shape[0], 1), _CLS_OTHER_GAIN, dtype=np.float32)
        for cls, value in _CLS_LIFTED_GAIN.items():
            gain[cls] = value
        weight *= gain
        weight[_NUM_CLASSES] = _CLS_BG_RATIO * _CLS_WEIGHT_STD / shape[1]  # background is LAST
        return weight.astype(np.float32)
    if ".bbox_pred." in name:
        return _normal(rng, shape, 0.05 if is_bias else _BBOX_WEIGHT_STD)
    if name.startswith("roi_heads.mask_head."):
        if ".predictor." in name:  # centred for the same reason as cls_score: inputs are post-ReLU
            if is_bias:
                return _normal(rng, shape, 0.1)
            weight = _normal(rng, shape, _MASK_PRED_STD)
            return (weight - weight.mean(axis=1, keepdims=True)).astype(np.float32)
        if is_bias:
            return _normal(rng, shape, 0.05)
        if ".deconv." in name:  # (in, out, 2, 2): each output pixel sees `in` inputs
            return _normal(rng, shape, np.sqrt(2.0 / shape[0]))
        return _normal(rng, shape, np.sqrt(2.0 / _fan_in(shape)))
    raise KeyError(f"no synthetic scheme for {name!r}")  # pragma: no cover - guarded by _iter_shapes


def _norm_buffer(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """FrozenBN buffers: near-identity, but all four buffers matter to the output."""
    prefix = name.rsplit(".norm.", 1)[0]
    buf = name.rsplit(".", 1)[1]
    stem = prefix.endswith("stem.conv1")
    if buf == "weight":
        gain = 1.0
        if prefix.endswith(".conv3"):
            gain = _RESIDUAL_GAIN
        elif prefix.endswith(".shortcut"):
            gain = _SHORTCUT_GAIN
        return (gain * rng.uniform(0.8, 1.2, shape)).astype(np.float32)
    if buf == "bias":
        return _normal(rng, shape, 0.1)
    if buf == "running_mean":
        return _normal(rng, shape, 5.0 if stem else 0.1)
    if buf == "running_var":
        scale = _STEM_VAR if stem else 1.0
        return (scale * rng.uniform(0.5, 1.5, shape)).astype(np.float32)
    raise KeyError(name)  # pragma: no cover


def synthetic_d2_state_dict(config: str = "faster_rcnn_R_101_FPN_3x", seed: int = 0) -> dict[str, np.ndarray]:
    """Return a deterministic detectron2-named R101-FPN state dict of float32 numpy arrays.

    Args:
        config: ``"faster_rcnn_R_101_FPN_3x"`` or ``"mask_rcnn_R_101_FPN_3x"`` (adds the mask head).
        seed: any non-negative int; the same (config, seed) always gives bit-identical arrays, and
            the tensors shared by both configs are identical between them.

    Names and shapes are exactly those of the model-zoo checkpoint of that config, so the result
    can be written with :func:`write_zoo_pkl` and loaded by detectron2's ``DetectionCheckpointer``
    as well as by our own loader. About 63M (Faster) / 66M (Mask) parameters, ~250 MB.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    state = {name: _tensor(name, shape, seed) for name, shape in _iter_shapes(config)}
    for name, shape in _iter_shapes(config):
        assert state[name].shape == shape and state[name].dtype == np.float32, name
    logger.debug("synthetic %s (seed %d): %d tensors", config, seed, len(state))
    return state


def write_zoo_pkl(state: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as a detectron2 model-zoo ``.pkl`` file.

    The layout is the zoo's: a pickle of ``{"model": {name: np.ndarray}, "__author__":
    "Detectron2 Model Zoo", "matching_heuristics": True}`` (protocol 2, so it loads with
    ``pickle.load(f, encoding="latin1")`` like the published files). detectron2's
    ``DetectionCheckpointer`` recognises such a file by its ``.pkl`` suffix and
    ``__author__``; our loader reads it through a restricted unpickler.
    """
    model = {str(k): np.ascontiguousarray(v) for k, v in state.items()}
    payload = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    os.replace(tmp, path)
    logger.debug("wrote %d tensors to %s", len(model), path)

"""The one state-dict fit report (vehicle_cls.statedict) behind the detector's and the classifier's loaders."""
from __future__ import annotations

import torch
from torch import nn

from vehicle_cls.statedict import fit_report, key_list


def test_report_lists_missing_unexpected_misshaped_and_wrong_kind_in_dict_order():
    expected = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).state_dict()
    loaded = {k: v.clone() for k, v in expected.items()}
    del loaded["1.bias"], loaded["0.bias"]
    loaded["2.weight"] = torch.zeros(1)
    loaded["0.weight"] = torch.zeros(4, 5)
    loaded["1.running_mean"] = torch.zeros(4, dtype=torch.int8)  # another kind: refused, not cast
    loaded["1.running_var"] = torch.ones(4, dtype=torch.float16)  # another float: castable, no report
    report = fit_report(expected, loaded)
    assert report.missing == ["0.bias", "1.bias"]
    assert report.unexpected == ["2.weight"]
    assert report.shape_mismatch == [("0.weight", (4, 5), (4, 3))]
    assert report.dtype_mismatch == [("1.running_mean", torch.int8, torch.float32)]
    assert not report.fits


def test_a_copy_fits():
    expected = nn.Linear(3, 4).state_dict()
    assert fit_report(expected, dict(expected)).fits


def test_key_list_shortens_long_lists():
    assert key_list(["a", "b"]) == "a, b"
    assert key_list([f"k{i}" for i in range(7)], limit=2, quote=True) == "'k0', 'k1' and 5 more"

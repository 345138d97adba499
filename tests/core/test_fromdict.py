"""One policy for dataclasses read from dicts (vehicle_cls.fromdict): unknown keys refused with a
did-you-mean naming the file and key; keys older versions wrote are dropped; and every section of
a bundle's config.json follows it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from vehicle_cls.fromdict import check_keys, did_you_mean, strict_from_dict


@dataclass
class Settings:
    input_size: int = 224
    interpolation: str = "bilinear"


def test_did_you_mean_finds_typos_and_case_and_nothing_for_strangers():
    assert did_you_mean("interpolaton", ["input_size", "interpolation"]) == "interpolation"
    assert did_you_mean("Input_Size", ["input_size", "interpolation"]) == "input_size"
    assert did_you_mean("colour", ["input_size", "interpolation"]) is None


def test_unknown_key_names_file_section_key_and_suggestion():
    with pytest.raises(ValueError) as info:
        strict_from_dict(Settings, {"input_size": 1, "interpolaton": "x"}, source="m/config.json", prefix="keras.")
    assert str(info.value) == ("m/config.json: unknown key keras.interpolaton (did you mean keras.interpolation?); "
                               "known: input_size, interpolation")


def test_every_unknown_key_is_named_and_the_error_type_is_the_callers():
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"^unknown option a; unknown option b; known: x$"):
        check_keys(["x", "a", "b"], {"x"}, what="option", error=MyError)


def test_legacy_keys_are_dropped_and_known_keys_build_the_dataclass():
    assert strict_from_dict(Settings, {"input_size": 64, "old_key": 1}, legacy={"old_key"}) == Settings(64)
    with pytest.raises(ValueError, match="unknown key old_key"):
        strict_from_dict(Settings, {"input_size": 64, "old_key": 1})


def test_a_non_mapping_is_refused_naming_the_section():
    with pytest.raises(ValueError, match=r"^c\.json: preprocess: expected a mapping, got list$"):
        strict_from_dict(Settings, [1, 2], source="c.json", prefix="preprocess.")


def test_keras_settings_refuse_unknown_keys_like_preprocess():
    """Before, KerasSettings warned and dropped an unknown key (a misspelt "interpolation" silently ran
    bilinear) while Preprocess refused; both sections of config.json now refuse."""
    from vehicle_cls.classifier.keras.settings import KerasSettings

    good = KerasSettings(input_size=96, interpolation="bicubic")
    assert KerasSettings.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match=r"^b/config\.json: unknown key keras\.interpolaton "
                                         r"\(did you mean keras\.interpolation\?\)"):
        KerasSettings.from_dict({"input_size": 96, "interpolaton": "bicubic"}, source="b/config.json")


def test_inference_settings_refuse_unknown_keys():
    from vehicle_cls.cropper.rcnn import InferenceSettings

    assert InferenceSettings.from_dict({"score_thresh_test": 0.3}).score_thresh_test == 0.3
    with pytest.raises(ValueError, match=r"settings\.score_thresh \(did you mean test_settings\.score_thresh_test\?\)"):
        InferenceSettings.from_dict({"score_thresh": 0.3})

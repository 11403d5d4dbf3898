"""Behaviour tests for the typed experiment configuration: parsing, type checks, cross-field
validation and the dict helpers used by sweeps and overrides."""

from __future__ import annotations

import copy

import pytest

# isort: split
from vidablate.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    dotted_to_nested,
    merge,
)


def _cfg(model=None, data=None, trainer=None) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {"model": model or {}, "data": data or {}, "trainer": trainer or {}}
    )


# --------------------------------------------------------------------------- from_dict


def test_from_dict_defaults_and_values():
    cfg = ExperimentConfig.from_dict(None)
    assert cfg == ExperimentConfig()
    cfg = _cfg(model={"sirm": True, "sgam_hidden": 32}, data={"num_frames": 6},
               trainer={"lr_new": 0.01})
    assert cfg.model.sirm is True and cfg.model.sgam_hidden == 32
    assert cfg.data.num_frames == 6
    assert cfg.trainer.lr_new == 0.01
    assert cfg.model.sgam is False  # untouched keys keep their defaults


def test_from_dict_rejects_unknown_section():
    with pytest.raises(ConfigError, match="optimizer"):
        ExperimentConfig.from_dict({"model": {}, "optimizer": {"lr": 1}})


def test_from_dict_rejects_unknown_key_naming_it_and_the_section():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"model": {"sirm": True, "sigam": True}})
    assert "sigam" in str(err.value)
    assert "config.model" in str(err.value)


def test_from_dict_uses_the_where_prefix():
    with pytest.raises(ConfigError, match=r"trial\.yaml\.data"):
        ExperimentConfig.from_dict({"data": {"frames": 8}}, where="trial.yaml")


@pytest.mark.parametrize(
    ("section", "key", "value", "dotted"),
    [
        ("data", "num_frames", "8", "config.data.num_frames"),
        ("trainer", "epochs", 2.5, "config.trainer.epochs"),
        ("trainer", "batch_size", True, "config.trainer.batch_size"),
        ("model", "sirm", 1, "config.model.sirm"),
        ("model", "distill", "true", "config.model.distill"),
        ("trainer", "lr_visual", "1e-5", "config.trainer.lr_visual"),
        ("trainer", "lr_new", False, "config.trainer.lr_new"),
        ("model", "stft_window", 3, "config.model.stft_window"),
    ],
)
def test_from_dict_type_errors_name_the_dotted_field(section, key, value, dotted):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({section: {key: value}})
    assert dotted in str(err.value)


def test_from_dict_accepts_int_for_float_and_stores_float():
    cfg = _cfg(trainer={"lr_new": 1})
    assert cfg.trainer.lr_new == 1.0 and isinstance(cfg.trainer.lr_new, float)


def test_from_dict_optional_field_accepts_none_and_string():
    assert _cfg(model={"pretrained": None}).model.pretrained is None
    assert _cfg(model={"pretrained": "openai"}).model.pretrained == "openai"


def test_round_trip_through_dict_is_unchanged():
    cfg = _cfg(
        model={"sirm": True, "sgam": True, "imu_gyro": False, "stft_window": "hamming",
               "distill_weight": 0.5, "pretrained": "/w/vit.pt"},
        data={"base_classes": 24, "num_frames": 4},
        trainer={"num_workers": 2, "batch_size": 8, "lr_schedule": "cosine"},
    ).validate()
    raw = cfg.to_dict()
    assert set(raw) == {"model", "data", "trainer", "eval"}
    again = ExperimentConfig.from_dict(copy.deepcopy(raw))
    assert again == cfg
    assert again.to_dict() == raw


# --------------------------------------------------------------------------- validate


def test_default_config_is_valid():
    cfg = ExperimentConfig()
    assert cfg.validate() is cfg


def test_validate_rejects_imu_module_without_sensors():
    cfg = _cfg(model={"sirm": True, "imu_acc": False, "imu_gyro": False})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    assert "model.sirm" in msg
    assert "model.imu_acc" in msg and "model.imu_gyro" in msg
    assert "sgam" not in msg


def test_validate_names_both_modules_when_both_need_imu():
    cfg = _cfg(model={"sirm": True, "sgam": True, "imu_acc": False, "imu_gyro": False})
    with pytest.raises(ConfigError, match="sirm/sgam"):
        cfg.validate()


def test_sensors_off_is_fine_without_imu_modules():
    _cfg(model={"imu_acc": False, "imu_gyro": False}).validate()
    _cfg(model={"sgam": True, "imu_acc": False}).validate()


@pytest.mark.parametrize("base", [32, 40, 0])
def test_validate_rejects_base_classes_out_of_range(base):
    with pytest.raises(ConfigError, match="data.base_classes"):
        _cfg(data={"num_classes": 32, "base_classes": base}).validate()


def test_validate_accepts_largest_valid_base_split():
    _cfg(data={"num_classes": 32, "base_classes": 31}).validate()


def test_validate_rejects_batch_not_divisible_by_workers():
    with pytest.raises(ConfigError) as err:
        _cfg(trainer={"batch_size": 10, "num_workers": 4}).validate()
    assert "trainer.batch_size" in str(err.value) and "trainer.num_workers" in str(err.value)
    _cfg(trainer={"batch_size": 12, "num_workers": 4}).validate()
    _cfg(trainer={"batch_size": 7, "num_workers": 1}).validate()
    _cfg(trainer={"batch_size": 7, "num_workers": 0}).validate()


def test_validate_rejects_stft_longer_than_imu_clip_only_with_imu_module():
    model = {"sgam": True, "stft_n_fft": 64, "stft_hop": 8}
    data = {"num_frames": 4, "imu_rate": 8}  # 32 IMU samples
    with pytest.raises(ConfigError, match="model.stft_n_fft"):
        _cfg(model=model, data=data).validate()
    # no module consumes f_IMU: the STFT is never computed
    _cfg(model={**model, "sgam": False}, data=data).validate()
    # exactly as long as the clip is fine
    _cfg(model={**model, "stft_n_fft": 32}, data=data).validate()


@pytest.mark.parametrize(
    ("section", "values", "field"),
    [
        ("model", {"stft_window": "blackman"}, "model.stft_window"),
        ("model", {"stft_hop": 64}, "model.stft_n_fft"),
        ("model", {"trainable_blocks": -1}, "model.trainable_blocks"),
        ("model", {"prompt_template": "a video"}, "model.prompt_template"),
        ("data", {"dataset": "ego4d"}, "data.dataset"),
        ("trainer", {"epochs": -1}, "trainer.epochs"),
        ("trainer", {"lr_schedule": "step"}, "trainer.lr_schedule"),
        ("trainer", {"num_workers": -1}, "trainer.num_workers"),
    ],
)
def test_validate_other_fields(section, values, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _cfg(**{section: values}).validate()


def test_uses_imu_follows_the_modules():
    assert not ModelConfig().uses_imu
    assert ModelConfig(sirm=True).uses_imu
    assert ModelConfig(sgam=True).uses_imu


def test_paper_defaults():
    # isclip §II-B / §III: last two blocks, 50 epochs, batch 16, Adam 1e-5 / SGD 1e-3, 8 heads
    m, t, d = ModelConfig(), TrainConfig(), DataConfig()
    assert (m.trainable_blocks, m.sirm_heads, m.distill_weight) == (2, 8, 1.0)
    assert (t.epochs, t.batch_size, t.lr_visual, t.lr_new) == (50, 16, 1e-5, 1e-3)
    assert d.num_classes == 32


# --------------------------------------------------------------------------- dict helpers


def test_merge_nested_and_scalars_replace_without_mutating():
    base = {"model": {"sirm": False, "sgam": False}, "data": {"num_frames": 8}, "x": 1}
    override = {"model": {"sirm": True}, "x": {"now": "a dict"}, "trainer": {"epochs": 3}}
    base_copy, override_copy = copy.deepcopy(base), copy.deepcopy(override)
    out = merge(base, override)
    assert out == {
        "model": {"sirm": True, "sgam": False},
        "data": {"num_frames": 8},
        "x": {"now": "a dict"},
        "trainer": {"epochs": 3},
    }
    assert base == base_copy and override == override_copy
    out["model"]["sgam"] = True
    out["data"]["num_frames"] = 1
    assert base == base_copy


def test_merge_dict_replaced_by_scalar():
    assert merge({"a": {"b": 1}}, {"a": None}) == {"a": None}


def test_merge_deep_levels():
    base = {"a": {"b": {"c": 1, "d": 2}}}
    out = merge(base, {"a": {"b": {"c": 5}}})
    assert out == {"a": {"b": {"c": 5, "d": 2}}}
    assert base == {"a": {"b": {"c": 1, "d": 2}}}


def test_dotted_to_nested():
    flat = {"model.sirm": True, "model.sgam": False, "trainer.lr_new": 0.1, "top": 3}
    assert dotted_to_nested(flat) == {
        "model": {"sirm": True, "sgam": False},
        "trainer": {"lr_new": 0.1},
        "top": 3,
    }
    assert dotted_to_nested({"a.b.c": 1, "a.b.d": 2}) == {"a": {"b": {"c": 1, "d": 2}}}
    assert flat == {"model.sirm": True, "model.sgam": False, "trainer.lr_new": 0.1, "top": 3}


def test_dotted_sweep_overrides_build_a_config():
    base = ExperimentConfig().to_dict()
    trial = merge(base, dotted_to_nested({"model.sgam": True, "trainer.lr_new": 0.01}))
    cfg = ExperimentConfig.from_dict(trial).validate()
    assert cfg.model.sgam is True and cfg.trainer.lr_new == 0.01
    assert cfg.model.sirm is False and cfg.data == DataConfig(seed=0)  # -1 -> trainer.seed


def test_the_synthetic_data_seed_follows_the_trial_seed_unless_set():
    def data_seed(**data):
        return ExperimentConfig.from_dict({"data": data, "trainer": {"seed": 7}}).validate()
    assert data_seed().data.seed == 7
    assert data_seed(seed=3).data.seed == 3
    with pytest.raises(ConfigError, match="data.seed must be >= 0, or -1"):
        data_seed(seed=-2)


@pytest.mark.parametrize("value", [True, 8])
def test_from_dict_rejects_non_mapping_section(value):
    with pytest.raises(ConfigError, match="config.model"):
        ExperimentConfig.from_dict({"model": value})


@pytest.mark.parametrize("key,value,message", [
    ("lr_new", -1.0, "trainer.lr_new must be >= 0"),
    ("lr_visual", -1e-5, "trainer.lr_visual must be >= 0"),
    ("lr_text", -0.1, "trainer.lr_text must be >= 0"),
    ("momentum", 1.0, r"trainer.momentum must be in \[0, 1\)"),
    ("momentum", -0.1, r"trainer.momentum must be in \[0, 1\)"),
    ("label_smoothing", 1.5, r"trainer.label_smoothing must be in \[0, 1\)"),
    ("weight_decay", -0.01, "trainer.weight_decay >= 0"),
    ("lr_new", float("nan"), "trainer.lr_new must be a finite number"),
    ("grad_clip_norm", float("inf"), "trainer.grad_clip_norm must be a finite number"),
])
def test_optimiser_numbers_out_of_range_are_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"trainer": {key: value}}).validate()


def test_zero_learning_rate_freezes_and_is_allowed():
    assert ExperimentConfig.from_dict({"trainer": {"lr_visual": 0.0}}).validate()

"""The five papers' modules in the one model: which toggles see frame order, that modules of
different papers combine where their stages allow, that impossible combinations are rejected
before anything is built, and the explicit frozen/trainable boundary."""

from __future__ import annotations

import pytest
import torch

from vidablate.config import ConfigError, ExperimentConfig, ModelConfig
from vidablate.model import build_model
from vidablate.modules import registry

B, T = 2, 8
NAMES = ["red square moving left", "red square moving right", "green circle growing"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 3, 32, 32, generator=g), torch.randn(B, 6, T * 16, generator=g)


def _model(**toggles):
    torch.manual_seed(0)
    cfg = ExperimentConfig.from_dict({"model": toggles}).validate()
    return build_model(cfg.model, T).eval()


def _video_logits(model, video, imu):
    with torch.no_grad():
        logits, out = model(video, imu, NAMES)
    return logits, out


# Modules that model time must see frame order; the frame mean must not (DESIGN §4). Each
# paper names its temporal toggles in the registry (``Paper.temporal``).
TEMPORAL = {label: toggles for p in registry.papers() for label, toggles in p.temporal.items()}


def test_frame_mean_baseline_ignores_frame_order():
    model = _model()
    video, imu = _inputs()
    a, _ = _video_logits(model, video, imu)
    b, _ = _video_logits(model, video.flip(1), imu)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(TEMPORAL))
def test_temporal_modules_see_frame_order(name):
    model = _model(**TEMPORAL[name])
    video, imu = _inputs()
    a, _ = _video_logits(model, video, imu)
    b, _ = _video_logits(model, video.flip(1), imu)
    assert (a - b).abs().max() > 1e-4, f"{name} gives the same logits for a reversed clip"


def test_cct_alone_is_order_equivariant_as_in_the_paper():
    """xclip Eq. 7 has no temporal position embedding: reversing the clip reverses the frame
    features, so the mean-pooled video is unchanged (MIT's position embedding breaks this)."""
    model = _model(cct=True)
    video, imu = _inputs()
    _, a = _video_logits(model, video, imu)
    _, b = _video_logits(model, video.flip(1), imu)
    torch.testing.assert_close(a.frames, b.frames.flip(1), rtol=1e-4, atol=1e-5)


COMBINATIONS = {
    "xclip cct + omniclip pta": {"cct": True, "pta": True, "pta_zero_up": False},
    "xclip mit + isclip sgam": {"mit": True, "sgam": True},
    "isclip sirm + motionprompt mmb/map/mcb": {"sirm": True, "mmb": True, "map": True,
                                               "mcb": True},
    "stdd stca + omniclip pta/spg": {"stca": True, "pta": True, "spg": True,
                                     "pta_zero_up": False},
    "xclip video prompt + motionprompt map": {"video_prompt": True, "map": True, "mmb": True},
    "stdd align + xclip mit": {"align": True, "st_aug": True, "mit": True},
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_modules_of_different_papers_combine_and_all_train(name):
    model = _model(**COMBINATIONS[name]).train()
    video, imu = _inputs()
    logits, out = model(video, imu, NAMES)
    assert logits.shape == (B, len(NAMES)) and torch.isfinite(logits).all()
    model.loss(logits, out, torch.tensor([0, 2]))["loss"].backward()
    new = model.param_groups()["new"]
    assert new, name
    missing = [tuple(p.shape) for p in new if p.grad is None]
    assert not missing, f"{name}: no gradient for new parameters of shapes {missing[:5]}"


@pytest.mark.parametrize("toggles,names", [
    ({"sgam": True, "mmb": True}, ("model.sgam", "model.mmb")),
    ({"map": True, "learnable_ctx": True}, ("model.map", "model.learnable_ctx")),
    ({"align": True, "linear_head": True}, ("model.align", "model.linear_head")),
    ({"sirm": True, "imu_acc": False, "imu_gyro": False}, ("model.sirm", "model.imu_acc")),
])
def test_impossible_combinations_are_rejected_naming_both(toggles, names):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"model": toggles, "data": {"protocol": "closed_set"}}
                                   ).validate()
    for n in names:
        assert n in str(err.value)


def test_linear_head_needs_the_closed_set_protocol():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(model=ModelConfig(linear_head=True)).validate()
    assert "linear_head" in str(err.value) and "protocol" in str(err.value)


@pytest.mark.parametrize("toggles,split", [
    ({}, 2),  # isclip: the last two blocks fine-tune, blocks 0-1 are the frozen prefix
    ({"trainable_blocks": 0, "pta": True, "pta_blocks": "10-12", "omni_te": False}, 3),
    ({"trainable_blocks": 0, "pta": True, "pta_blocks": "10-12"}, 0),  # + temporal encoding
    ({"trainable_blocks": 0, "cct": True}, 0),  # messages from the first block on
    ({"trainable_blocks": 0, "mmb": True}, 4),  # everything in the tower is frozen
])
def test_frozen_prefix_ends_at_the_first_trained_or_hooked_block(toggles, split):
    model = _model(**toggles)
    assert model.frame_encoder.split == split
    frozen = model.frozen_parts()
    assert frozen[f"visual_prefix[0:{split}]"] is True and frozen["text_tower"] is True
    prefix = model.frame_encoder.visual.transformer.resblocks[:split]
    assert not any(p.requires_grad for p in prefix.parameters())

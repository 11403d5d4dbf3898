"""Learning-rate schedule and optimizer knobs (omniclip Table 1: 5 warm-up epochs, cosine down
to 1% of the rate, AdamW betas (0.9, 0.98))."""

from __future__ import annotations

import math

import pytest
import torch

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.model import build_model
from vidablate.train.loop import make_optimizers, seed_everything


def _cfg(**trainer):
    return ExperimentConfig.from_dict({"trainer": trainer}).validate()


def _rates(cfg) -> list[float]:
    """The visual group's learning rate in each epoch, read from the real optimizer."""
    seed_everything(0)
    model = build_model(cfg.model, cfg.data.num_frames)
    optimizers, schedulers = make_optimizers(model, cfg.trainer)
    rates = []
    for _ in range(cfg.trainer.epochs):
        rates.append(optimizers["clip_visual"].param_groups[0]["lr"])
        optimizers["clip_visual"].step()
        schedulers["clip_visual"].step()
    return rates


def test_defaults_keep_the_plain_cosine():
    cfg = _cfg(epochs=10, lr_visual=1.0, lr_schedule="cosine")
    expected = [0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    assert _rates(cfg) == pytest.approx(expected)


def test_warmup_ramps_linearly_then_cosine_runs_to_the_floor():
    cfg = _cfg(epochs=15, lr_visual=2e-3, lr_schedule="cosine", warmup_epochs=5, min_lr_ratio=0.01)
    rates = _rates(cfg)
    assert rates[:5] == pytest.approx([2e-3 * k / 6 for k in range(1, 6)])
    assert rates[5] == pytest.approx(2e-3)
    assert all(a > b for a, b in zip(rates[5:], rates[6:], strict=False))
    # the cosine spans the 10 post-warm-up epochs and would reach the floor at epoch 15
    assert rates[10] == pytest.approx(2e-3 * (0.01 + 0.99 * 0.5))
    assert rates[-1] > 2e-5


def test_warmup_with_a_constant_schedule():
    rates = _rates(_cfg(epochs=4, lr_visual=1.0, warmup_epochs=1))
    assert rates == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_adam_betas_reach_the_optimizer():
    cfg = ExperimentConfig.from_dict({
        "model": {"sirm": True},
        "trainer": {"new_optimizer": "adamw", "visual_optimizer": "adam", "adam_beta2": 0.98},
    }).validate()
    seed_everything(0)
    model = build_model(cfg.model, cfg.data.num_frames)
    optimizers, _ = make_optimizers(model, cfg.trainer)
    assert isinstance(optimizers["new"], torch.optim.AdamW)
    assert isinstance(optimizers["clip_visual"], torch.optim.Adam)
    for opt in optimizers.values():
        assert opt.param_groups[0]["betas"] == (0.9, 0.98)


@pytest.mark.parametrize(("trainer", "field"), [
    ({"warmup_epochs": -1}, "trainer.warmup_epochs"),
    ({"min_lr_ratio": 1.0}, "trainer.min_lr_ratio"),
    ({"adam_beta2": 1.0}, "trainer.adam_beta2"),
])
def test_bad_schedule_values_name_the_field(trainer, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _cfg(**trainer)


def test_a_run_shorter_than_the_warmup_ends_inside_it():
    assert _rates(_cfg(epochs=2, lr_visual=1.0, lr_schedule="cosine", warmup_epochs=5)) == \
        pytest.approx([1 / 6, 2 / 6])

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


def _step_rates(cfg, steps_per_epoch: int) -> list[float]:
    """The visual group's rate at every optimizer step of a per-step schedule."""
    seed_everything(0)
    model = build_model(cfg.model, cfg.data.num_frames)
    optimizers, schedulers = make_optimizers(model, cfg.trainer, steps_per_epoch)
    rates = []
    for _ in range(cfg.trainer.epochs * steps_per_epoch):
        rates.append(optimizers["clip_visual"].param_groups[0]["lr"])
        optimizers["clip_visual"].step()
        schedulers["clip_visual"].step()
    return rates


def test_per_step_schedule_equals_timms_cosine_as_x_clip_runs_it():
    """X-CLIP's official scheduler: timm CosineLRScheduler over all steps, lr_min = lr / 100,
    warm-up from 0 over 5 epochs, t_in_epochs=False."""
    from timm.scheduler.cosine_lr import CosineLRScheduler

    epochs, steps, lr = 8, 7, 8e-6
    cfg = _cfg(epochs=epochs, lr_visual=lr, visual_optimizer="adamw", lr_schedule="cosine",
               warmup_epochs=5, min_lr_ratio=0.01, schedule_unit="step", warmup_start=0.0,
               cosine_after_warmup=False)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    timm = CosineLRScheduler(opt, t_initial=epochs * steps, lr_min=lr / 100, warmup_lr_init=0,
                             warmup_t=5 * steps, cycle_limit=1, t_in_epochs=False)
    expected = []
    for t in range(epochs * steps):
        timm.step_update(t)
        expected.append(opt.param_groups[0]["lr"])
    assert _step_rates(cfg, steps) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_per_step_schedule_with_warmup_start_and_cosine_after_warmup_as_stdd():
    """PySlowFast (STDD's official code): linear warm-up from WARMUP_START_LR to BASE_LR, then
    cosine from BASE_LR to COSINE_END_LR over the epochs after the warm-up."""
    epochs, steps, base, start, end, warm = 6, 4, 3.33e-6, 3.33e-8, 3.33e-8, 2
    cfg = _cfg(epochs=epochs, lr_visual=base, lr_schedule="cosine", warmup_epochs=warm,
               min_lr_ratio=end / base, schedule_unit="step", warmup_start=start / base)
    expected = []
    for t in range(epochs * steps):
        e = t / steps
        if e < warm:
            expected.append(start + (base - start) * e / warm)
        else:
            expected.append(end + (base - end) * 0.5 * (1 + math.cos(
                math.pi * (e - warm) / (epochs - warm))))
    assert _step_rates(cfg, steps) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("skip", ["1d", "1d_pos"])
def test_weight_decay_skips_1d_tensors_and_positional_embeddings(skip):
    cfg = _cfg(weight_decay=0.001, weight_decay_skip=skip, visual_optimizer="adamw",
               new_optimizer="adamw")
    cfg.model.trainable_blocks = 4  # the whole tower, positional embedding included
    seed_everything(0)
    model = build_model(cfg.model, cfg.data.num_frames)
    optimizers, _ = make_optimizers(model, cfg.trainer)
    names = {id(p): n for n, p in model.named_parameters()}
    for opt in optimizers.values():
        for group in opt.param_groups:
            for p in group["params"]:
                pos = "positional_embedding" in names[id(p)]
                undecayed = p.dim() <= 1 or (skip == "1d_pos" and pos)
                assert group["weight_decay"] == (0.0 if undecayed else 0.001), names[id(p)]
    visual = optimizers["clip_visual"].param_groups
    assert any(p.dim() == 1 for p in visual[1]["params"])


def test_gradient_clipping_bounds_the_update():
    from vidablate.train.step import train_step

    cfg = _cfg(lr_new=1.0, new_optimizer="sgd", momentum=0.0)
    cfg.model.sgam = True
    cfg.model.trainable_blocks, cfg.model.train_visual_proj = 0, False  # only new modules train
    g = torch.Generator().manual_seed(0)
    video, imu = torch.randn(2, 8, 3, 32, 32, generator=g), torch.randn(2, 6, 128, generator=g)
    names = ["a b", "c d", "e f"]
    updates = {}
    for clip in (0.0, 1e-3):
        seed_everything(0)
        model = build_model(cfg.model, 8).train()
        optimizers, _ = make_optimizers(model, cfg.trainer)
        before = [p.detach().clone() for p in optimizers["new"].param_groups[0]["params"]]
        train_step(model, model, optimizers, video, imu, names, torch.tensor([0, 1]),
                   device=torch.device("cpu"), clip_norm=clip)
        after = optimizers["new"].param_groups[0]["params"]
        updates[clip] = torch.cat([(a.detach() - b).flatten() for a, b in zip(after, before,
                                                                               strict=True)])
    assert updates[0.0].norm() > 1e-3  # lr 1: the step is the gradient itself
    assert updates[1e-3].norm() == pytest.approx(1e-3, rel=1e-4)  # clipped to norm 1e-3

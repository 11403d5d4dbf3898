"""Behaviour tests for resumable trial state and the zero-shot metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

# isort: split
from vidablate.data.protocols import harmonic_mean
from vidablate.model import VideoCLIP
from vidablate.train.checkpoint import (
    STATE_FILE,
    CheckpointMismatch,
    load_state,
    save_state,
)

N = 4
CLASSES = ["a", "b", "c"]


IS_CLIP = {"sirm": True, "sgam": True}
"""The model every checkpoint test saves: IS-CLIP's trainable tail, IMU branch, SIRM and SGAM."""


def _optimizers(model: VideoCLIP) -> dict[str, torch.optim.Optimizer]:
    groups = model.param_groups()
    return {
        "clip_visual": torch.optim.Adam(groups["clip_visual"], lr=1e-3),
        "new": torch.optim.SGD(groups["new"], lr=1e-2, momentum=0.9),
    }


def _schedulers(optimizers) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
    return {k: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
            for k, o in optimizers.items()}


def _train_step(model, optimizers, schedulers) -> None:
    g = torch.Generator().manual_seed(11)
    video = torch.randn(2, N, 3, 32, 32, generator=g)
    imu = torch.randn(2, 6, 64, generator=g)
    logits, out = model(video, imu, CLASSES)
    loss = model.loss(logits, out, torch.tensor([0, 2]))["loss"]
    for o in optimizers.values():
        o.zero_grad()
    loss.backward()
    for o in optimizers.values():
        o.step()
    for s in schedulers.values():
        s.step()


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    """One trained step of a SIRM+SGAM model saved to disk, plus what was saved."""
    directory = tmp_path_factory.mktemp("ckpt")
    model = tiny_model(**IS_CLIP)
    initial = _trainable(model)
    optimizers = _optimizers(model)
    schedulers = _schedulers(optimizers)
    _train_step(model, optimizers, schedulers)
    history = [{"epoch": 0, "loss": 1.25, "hm": 12.5}]
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = save_state(directory, model, optimizers, schedulers, 3, history, "run-abc")
    after_save = (torch.rand(4), np.random.rand(3), random.random())
    return {
        "dir": directory,
        "path": path,
        "initial": initial,
        "trained": _trainable(model),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "history": history,
        "after_save": after_save,
    }


def test_save_writes_the_state_file(saved):
    assert saved["path"] == saved["dir"] / STATE_FILE
    assert saved["path"].is_file()
    # one step really moved the trainable tensors (otherwise the round trip proves nothing)
    moved = [n for n in saved["trained"]
             if not torch.equal(saved["trained"][n], saved["initial"][n])]
    assert any(n.startswith("frame_encoder.") for n in moved)
    assert any(n.startswith("sirm.") for n in moved)
    assert any(n.startswith("sgam.") for n in moved)
    assert any(n.startswith("imu.") for n in moved)


def test_round_trip_restores_everything(tiny_model, saved):
    model = tiny_model(**IS_CLIP)
    optimizers = _optimizers(model)
    schedulers = _schedulers(optimizers)
    assert not all(torch.equal(saved["trained"][n], t) for n, t in _trainable(model).items())

    torch.manual_seed(1234)  # scramble the RNGs: load must restore them
    np.random.seed(1234)
    random.seed(1234)
    state = load_state(saved["dir"], model, optimizers, schedulers)

    after_load = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(after_load[0], saved["after_save"][0])
    np.testing.assert_array_equal(after_load[1], saved["after_save"][1])
    assert after_load[2] == saved["after_save"][2]

    loaded = _trainable(model)
    assert loaded.keys() == saved["trained"].keys()
    for name, tensor in saved["trained"].items():
        assert torch.equal(loaded[name], tensor), name

    assert state["epoch"] == 3
    assert state["history"] == saved["history"]
    assert state["mlflow_run_id"] == "run-abc"

    adam = optimizers["clip_visual"].state_dict()
    ref = saved["optimizers"]["clip_visual"]
    assert adam["state"].keys() == ref["state"].keys() and adam["state"]
    for idx, s in ref["state"].items():
        assert torch.equal(adam["state"][idx]["exp_avg"], s["exp_avg"])
        assert torch.equal(adam["state"][idx]["exp_avg_sq"], s["exp_avg_sq"])
        assert torch.equal(torch.as_tensor(adam["state"][idx]["step"]),
                           torch.as_tensor(s["step"]))
    sgd = optimizers["new"].state_dict()
    for idx, s in saved["optimizers"]["new"]["state"].items():
        assert torch.equal(sgd["state"][idx]["momentum_buffer"], s["momentum_buffer"])

    for k, s in schedulers.items():
        assert s.last_epoch == saved["schedulers"][k]["last_epoch"] == 1
        assert optimizers[k].param_groups[0]["lr"] == pytest.approx(
            0.5 * (1e-3 if k == "clip_visual" else 1e-2))


def test_loaded_model_continues_like_the_saved_one(tiny_model, saved):
    model = tiny_model(**IS_CLIP)
    optimizers = _optimizers(model)
    load_state(saved["dir"], model, optimizers, {})
    g = torch.Generator().manual_seed(3)
    video, imu = torch.randn(2, N, 3, 32, 32, generator=g), torch.randn(2, 6, 64, generator=g)
    with torch.no_grad():
        out = model.encode_video(video, imu).video
    reference = tiny_model(**IS_CLIP)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name in saved["trained"]:
                p.copy_(saved["trained"][name])
        expected = reference.encode_video(video, imu).video
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    "overrides",
    [{"sgam": False}, {"sirm": False}, {"trainable_blocks": 1}, {"train_visual_proj": False}],
)
def test_other_toggles_raise_mismatch(tiny_model, saved, overrides):
    model = tiny_model(**{**IS_CLIP, **overrides})
    before = _trainable(model)
    with pytest.raises(CheckpointMismatch):
        load_state(saved["dir"], model, _optimizers(model), {})
    after = _trainable(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_no_teacher_raises_mismatch(tiny_model, saved):
    model = tiny_model(**IS_CLIP, distill=False)
    with pytest.raises(CheckpointMismatch, match="frozen"):
        load_state(saved["dir"], model, _optimizers(model), {})


def test_other_frozen_weights_raise_mismatch(tiny_model, saved):
    model = tiny_model(**IS_CLIP, seed=1)
    with pytest.raises(CheckpointMismatch, match="frozen"):
        load_state(saved["dir"], model, _optimizers(model), {})


def test_other_module_widths_raise_mismatch(tiny_model, saved):
    model = tiny_model(**IS_CLIP, imu_width=32)
    before = _trainable(model)
    with pytest.raises(CheckpointMismatch):
        load_state(saved["dir"], model, _optimizers(model), {})
    after = _trainable(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


# --------------------------------------------------------------------------- metrics


def test_harmonic_mean_matches_isclip_table():
    # isclip Table II, SIRM + SGAM: Base 97.7, Novel 66.3, HM 79.0
    assert harmonic_mean(97.7, 66.3) == pytest.approx(2 * 97.7 * 66.3 / (97.7 + 66.3))
    assert round(harmonic_mean(97.7, 66.3), 1) == 79.0
    # Table II baseline row: 97.6 / 60.5 -> 74.7
    assert round(harmonic_mean(97.6, 60.5), 1) == 74.7


def test_harmonic_mean_edge_cases():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 80.0) == 0.0
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)
    assert harmonic_mean(30.0, 90.0) == pytest.approx(harmonic_mean(90.0, 30.0))
    assert harmonic_mean(30.0, 90.0) < (30.0 + 90.0) / 2

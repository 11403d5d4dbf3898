"""Epoch weight averaging (stdd §Implementation Details): the running mean is exact, evaluation
sees it while training does not, and it survives a just-in-time checkpoint and restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.train
import torch
from torch import nn

from vidablate.config import ConfigError, ExperimentConfig
from vidablate.train.averaging import EpochAverage
from vidablate.train.checkpoint import STATE_FILE

from ..fakes import FakeTrain, run_until_preempted


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    return net


def test_running_mean_from_the_start_epoch_and_swap_in_and_out():
    net = _net()
    frozen = net[0].weight.detach().clone()
    avg = EpochAverage(net, start=2)
    seen = []
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad:
                    p.add_(float(epoch))
        seen.append(net[1].weight.detach().clone())
        avg.update(epoch)
    assert avg.count == 3 and len(avg.average) == 3  # weight 0 is frozen: not averaged
    current = net[1].weight.detach().clone()
    with avg.applied():
        torch.testing.assert_close(net[1].weight, torch.stack(seen[1:]).mean(0))
        assert torch.equal(net[0].weight, frozen)
    assert torch.equal(net[1].weight, current)

    other = _net()
    restored = EpochAverage(other, start=2)
    restored.load_state_dict(avg.state_dict())
    assert restored.count == 3
    for a, b in zip(restored.average, avg.average, strict=True):
        assert torch.equal(a, b)


def test_before_the_first_update_evaluation_uses_the_current_weights():
    net = _net()
    avg = EpochAverage(net, start=3)
    avg.update(1)
    before = net[1].weight.detach().clone()
    with avg.applied():
        assert torch.equal(net[1].weight, before)


def _experiment(epochs: int, **trainer) -> dict:
    return {"model": {"sirm": True},
            "data": {"train_per_class": 2, "test_per_class": 1},
            "trainer": {"epochs": epochs, "batch_size": 4, "num_workers": 0,
                        "lr_visual": 1e-3, "lr_new": 1e-2, "preemption_check_every": 2,
                        **trainer}}


def _state(directory) -> dict:
    with directory.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, weights_only=True)


def test_the_loop_evaluates_the_average_and_trains_the_last_weights(tmp_path, monkeypatch):
    from vidablate.train import loop

    def run(name: str, **trainer):
        (tmp_path / name).mkdir()
        fake = FakeTrain(tmp_path / name)
        checkpoints, evaluated = [], []
        real_eval, real_report = loop.evaluate_protocol, fake.report

        def spy_eval(model, *args, **kwargs):
            evaluated.append({n: p.detach().clone() for n, p in model.named_parameters()
                              if p.requires_grad})
            return real_eval(model, *args, **kwargs)

        def keep(metrics, checkpoint=None):
            real_report(metrics, checkpoint)
            if checkpoint is not None:
                checkpoints.append(_state(fake.latest))

        with monkeypatch.context() as m:
            fake.install(m)
            m.setattr(ray.train, "report", keep)
            m.setattr(loop, "evaluate_protocol", spy_eval)
            loop.train_loop_per_worker({"experiment": _experiment(3, **trainer),
                                        "mlflow_run_id": None})
        return fake.reports, checkpoints, evaluated

    plain, plain_ckpts, _ = run("plain")
    averaged, avg_ckpts, evaluated = run("avg", epoch_average=True, epoch_average_start=2)
    for a, b in zip(plain, averaged, strict=True):  # training itself is unchanged
        assert a["train_loss"] == b["train_loss"]
    for a, b in zip(plain_ckpts, avg_ckpts, strict=True):  # checkpoints hold training weights
        for name in a["trainable"]:
            assert torch.equal(a["trainable"][name], b["trainable"][name])
    assert plain[0]["hm"] == averaged[0]["hm"]  # epoch 1: the average has not started
    final = avg_ckpts[-1]["epoch_average"]
    assert final["count"] == 2
    for name, got in evaluated[-1].items():
        want = (plain_ckpts[1]["trainable"][name] + plain_ckpts[2]["trainable"][name]) / 2
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(final["params"][name], want)
    assert any(not torch.equal(evaluated[-1][n], plain_ckpts[2]["trainable"][n])
               for n in evaluated[-1])


def test_the_average_survives_a_preemption_and_restart(tmp_path, monkeypatch):
    from vidablate.train import loop

    config = {"experiment": _experiment(3, epoch_average=True), "mlflow_run_id": None}
    (tmp_path / "clean").mkdir()
    clean = FakeTrain(tmp_path / "clean")
    with monkeypatch.context() as m:
        clean.install(m)
        loop.train_loop_per_worker(config)

    (tmp_path / "run").mkdir()
    first = FakeTrain(tmp_path / "run", warn_at=6)  # epoch 2, step 4 of 8
    run_until_preempted(loop, config, first, monkeypatch)
    assert _state(first.latest)["epoch_average"]["count"] == 1
    second = FakeTrain(tmp_path / "run", resume=first.latest)
    with monkeypatch.context() as m:
        second.install(m)
        loop.train_loop_per_worker(config)
    for got, want in zip(second.reports, clean.reports[1:], strict=True):
        for key in ("train_loss", "base_acc", "novel_acc", "hm"):
            assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_epoch_average_start_must_be_positive():
    with pytest.raises(ConfigError, match=r"trainer\.epoch_average_start"):
        ExperimentConfig.from_dict({"trainer": {"epoch_average_start": 0}}).validate()

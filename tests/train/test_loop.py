"""The shared Ray Train loop: exact resume from a checkpoint, and DDP over 2 gloo workers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray.train
import torch
from ray.train.torch import TorchTrainer

from vidablate.train.checkpoint import STATE_FILE
from vidablate.train.loop import train_loop_per_worker

pytestmark = pytest.mark.e2e


def _fit(storage: Path, name: str, epochs: int, workers: int = 1, **model) -> ray.train.Result:
    exp = {
        "model": {"sirm": True, "sgam": True, **model},
        "data": {"train_per_class": 2, "test_per_class": 1},
        "trainer": {"epochs": epochs, "batch_size": 8, "num_workers": workers,
                    "lr_visual": 1e-3, "lr_new": 1e-2},
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": exp, "mlflow_run_id": "run-123"},
        scaling_config=ray.train.ScalingConfig(num_workers=workers),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage)),
    )
    return trainer.fit()


def _state(result: ray.train.Result) -> dict:
    with result.checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, weights_only=True)


def test_restarted_run_resumes_from_checkpoint_and_matches_uninterrupted(ray_local, tmp_path):
    full = _state(_fit(tmp_path, "full", epochs=3))
    _fit(tmp_path, "interrupted", epochs=2)
    restarted_at = time.time()
    resumed_result = _fit(tmp_path, "interrupted", epochs=3)  # same name: Train finds its run
    resumed = _state(resumed_result)

    assert resumed["epoch"] == 3 and resumed["mlflow_run_id"] == "run-123"
    times = [h["finished_at"] for h in resumed["history"]]
    assert times[0] < restarted_at < times[2], "epochs 1-2 must come from the checkpoint"
    for a, b in zip(full["history"], resumed["history"], strict=True):
        for key in ("train_loss", "base_acc", "novel_acc", "hm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for name, tensor in full["trainable"].items():
        torch.testing.assert_close(tensor, resumed["trainable"][name], rtol=1e-5, atol=1e-6)


def test_ddp_over_two_gloo_workers(ray_local, tmp_path):
    result = _fit(tmp_path, "ddp", epochs=1, workers=2)
    assert result.error is None
    assert result.metrics["world_size"] == 2
    assert result.metrics["epoch"] == 1
    assert 0.0 <= result.metrics["base_acc"] <= 100.0
    state = _state(result)
    assert state["epoch"] == 1 and set(state["optimizers"]) == {"clip_visual", "new"}

"""Protocol metrics of the shared loop: base/novel (HM) and closed set (top-1/top-5), and the
zero-shot path (``trainer.epochs=0``) through Ray Train's local mode."""

from __future__ import annotations

import pytest
import ray.train
import torch
from ray.train.torch import TorchTrainer

from vidablate.config import ExperimentConfig
from vidablate.data.protocols import build_protocol, harmonic_mean
from vidablate.model import build_model
from vidablate.train.loop import evaluate, evaluate_protocol, train_loop_per_worker

SMALL = {"train_per_class": 1, "test_per_class": 2}


def _setup(protocol: str):
    cfg = ExperimentConfig.from_dict({"data": {**SMALL, "protocol": protocol}}).validate()
    torch.manual_seed(0)
    return cfg, build_protocol(cfg), build_model(cfg.model, cfg.data.num_frames)


def test_closed_set_trains_and_tests_every_class():
    cfg, data, model = _setup("closed_set")
    assert [s.name for s in data.evals] == ["test"]
    assert len(data.train_names) == cfg.data.num_classes
    assert {int(data.train[i]["label"]) for i in range(len(data.train))} == set(range(32))
    metrics = evaluate_protocol(model, data, cfg, torch.device("cpu"), 0, 1, False)
    assert set(metrics) == {"top1", "top5", "corrupt_eval"}
    assert metrics["corrupt_eval"] == 0
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 100.0


def test_base_novel_reports_hm_of_its_parts():
    cfg, data, model = _setup("base_novel")
    metrics = evaluate_protocol(model, data, cfg, torch.device("cpu"), 0, 1, False)
    assert set(metrics) == {"base_acc", "novel_acc", "hm", "corrupt_eval"}
    assert metrics["hm"] == pytest.approx(harmonic_mean(metrics["base_acc"],
                                                        metrics["novel_acc"]))


def test_top5_counts_a_hit_anywhere_in_the_five_best():
    class Fixed(torch.nn.Module):
        """Logits that rank class 3 first and class 0 fifth for every clip."""

        def forward(self, video, imu, names):
            logits = torch.arange(len(names), dtype=torch.float).flip(0).roll(4)
            return logits.expand(video.shape[0], -1), None

    cfg, data, _ = _setup("closed_set")
    model = Fixed()
    ranks = torch.arange(32).flip(0).roll(4).argsort(descending=True)
    top1_class, top5 = int(ranks[0]), {int(c) for c in ranks[:5]}
    test = data.evals[0].dataset
    labels = [int(test[i]["label"]) for i in range(len(test))]
    scores = evaluate(model, test, data.train_names, 0, 16, torch.device("cpu"))
    top1, top5_acc = scores["top1"], scores["top5"]
    assert top1 == pytest.approx(100 * sum(lbl == top1_class for lbl in labels) / len(labels))
    assert top5_acc == pytest.approx(100 * sum(lbl in top5 for lbl in labels) / len(labels))


@pytest.mark.parametrize("protocol,keys", [("base_novel", {"base_acc", "novel_acc", "hm"}),
                                           ("closed_set", {"top1", "top5"})])
def test_zero_epochs_evaluates_the_initial_model_only(tmp_path, protocol, keys):
    exp = {"data": {**SMALL, "protocol": protocol}, "trainer": {"epochs": 0, "num_workers": 0}}
    result = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": exp, "mlflow_run_id": None},
        scaling_config=ray.train.ScalingConfig(num_workers=0),
        run_config=ray.train.RunConfig(name="zs", storage_path=str(tmp_path)),
    ).fit()
    assert result.error is None
    assert result.metrics["epoch"] == 0
    assert keys <= set(result.metrics)
    assert "train_loss" not in result.metrics
    assert result.checkpoint is None

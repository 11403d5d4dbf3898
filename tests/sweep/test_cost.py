"""The dry run's cost: a trial's model parameters and forward FLOPs."""

from __future__ import annotations

from vidablate.config import ExperimentConfig
from vidablate.model import build_model
from vidablate.sweep.cost import model_cost


def test_cost_counts_trainable_parameters_and_flops():
    exp = ExperimentConfig.from_dict({"model": {"sgam": True}}).validate().to_dict()
    total, trainable, gflops = model_cost(exp)
    model = build_model(ExperimentConfig.from_dict(exp).model, 8)
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for g in model.param_groups().values() for p in g)
    assert 0 < trainable < total
    base = model_cost(ExperimentConfig().validate().to_dict())
    assert 0 < base[2] < gflops  # SGAM and the IMU branch add compute

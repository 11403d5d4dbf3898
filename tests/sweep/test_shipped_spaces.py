"""Every shipped search space passes the dry run: it loads, every row (or every HPO bound and
choice) validates against the typed config, and its cost can be described."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidablate.config import ExperimentConfig
from vidablate.model import build_model
from vidablate.sweep.runner import describe, model_cost
from vidablate.sweep.space import expand, load_space

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))


def test_there_is_a_space_per_paper():
    papers = {load_space(p).paper for p in SPACES}
    assert {"isclip", "xclip", "motionprompt", "stdd", "omniclip"} <= papers


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_space_passes_the_dry_run(path):
    space = load_space(path)
    assert space.name == path.stem, "space=NAME must find the file"
    trials = expand(space)
    text = describe(space, trials, cost=False)
    assert "training clip passes" in text
    if space.kind == "table":
        assert space.source and space.title
        with_numbers = [r for r in space.rows if r.paper]
        assert with_numbers or space.notes, "a table needs the paper's numbers or notes on them"
    else:
        assert space.objective["metric"] in space.metrics


def test_cost_counts_trainable_parameters_and_flops():
    exp = ExperimentConfig.from_dict({"model": {"sgam": True}}).validate().to_dict()
    total, trainable, gflops = model_cost(exp)
    model = build_model(ExperimentConfig.from_dict(exp).model, 8)
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for g in model.param_groups().values() for p in g)
    assert 0 < trainable < total
    base = model_cost(ExperimentConfig().validate().to_dict())
    assert 0 < base[2] < gflops  # SGAM and the IMU branch add compute

"""Trial packing and the driver's cache plans: light cached trials ask for a GPU fraction,
concurrency follows the cluster's resources, and the plan of every row of a table is stated."""

from __future__ import annotations

import pytest
import ray.train

from vidablate.config import ConfigError
from vidablate.sweep.caching import concurrency, plan_trials, trial_resources, worker_resources
from vidablate.sweep.preflight import check_resources
from vidablate.sweep.space import expand, load_space
from vidablate.sweep.trial import scaling_config


def _trainer(**kw):
    return {"num_workers": 1, "cpus_per_worker": 2, "use_gpu": True,
            "packed_gpu_fraction": 0.25, **kw}


def test_packed_trials_ask_for_a_gpu_fraction_and_others_for_whole_gpus():
    assert worker_resources(_trainer(), packed=True) == {"CPU": 2.0, "GPU": 0.25}
    assert worker_resources(_trainer(), packed=False) == {"CPU": 2.0, "GPU": 1.0}
    assert worker_resources(_trainer(use_gpu=False), packed=True) == {"CPU": 2.0}
    assert trial_resources(_trainer(num_workers=2), packed=True) == {"CPU": 4.0, "GPU": 0.5}
    config = scaling_config(_trainer(), packed=True)  # Ray accepts the fractional request
    assert isinstance(config, ray.train.ScalingConfig)
    assert config.resources_per_worker == {"CPU": 2.0, "GPU": 0.25}


def test_concurrency_comes_from_the_cluster_and_the_lightest_request():
    from types import SimpleNamespace

    trials = [SimpleNamespace(key=f"t{i}", experiment={"trainer": _trainer()}) for i in range(6)]
    one_gpu = {"CPU": 16.0, "GPU": 1.0}
    assert concurrency(trials, {}, one_gpu) == 1
    assert concurrency(trials, {t.key: True for t in trials}, one_gpu) == 4
    assert concurrency(trials, {t.key: True for t in trials}, {"CPU": 4.0, "GPU": 1.0}) == 2
    assert concurrency(trials[:3], {t.key: True for t in trials}, {"CPU": 64, "GPU": 8}) == 3
    # an HPO space: one template, as many trials at once as its samples and the cluster allow
    assert concurrency(trials[:1], {}, {"CPU": 16.0, "GPU": 8.0}, count=16) == 8
    assert concurrency(trials[:1], {}, {"CPU": 16.0, "GPU": 8.0}, count=4) == 4
    mixed = {"t0": True}  # one packed trial among whole-GPU ones: Ray queues the rest
    assert concurrency(trials, mixed, one_gpu) == 4


def test_check_resources_counts_gpu_fractions():
    from types import SimpleNamespace

    t = SimpleNamespace(key="t", experiment={"trainer": _trainer(num_workers=2)})
    check_resources([t], {"CPU": 4.0, "GPU": 0.5}, {"t": True})
    with pytest.raises(ConfigError, match="needs 2 GPU"):
        check_resources([t], {"CPU": 4.0, "GPU": 1.0}, {"t": False})


def test_every_row_of_a_table_gets_a_stated_cache_decision(tmp_path):
    space = load_space("omniclip_modules")
    trials = expand(space, None, {"trainer": {"epochs": 1}}, None)
    plans = plan_trials(trials, str(tmp_path / "cache"), "auto")
    assert set(plans) == {t.key for t in trials}
    for t in trials:
        p = plans[t.key].plan
        assert p.reason, t.key
        m = t.experiment["model"]
        spg_or_te = (m["pta"] or m["spg"] or m["omni_temporal"]) and (m["spg"] or m["omni_te"])
        if spg_or_te:  # hooks on block 1: nothing before them to cache
            assert not p.use and "block 1 carries" in p.reason
    assert any(p.plan.use for p in plans.values())
    with pytest.raises(ConfigError, match="cache=require"):
        plan_trials(trials, str(tmp_path / "cache"), "require")

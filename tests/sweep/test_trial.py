"""Where a trial's loop runs (``trainer.executor``): what the Tune trial asks Ray for, and how
many relaunches Tune gives a trial whose loop runs in its own process."""

from __future__ import annotations

import pytest

from vidablate.config import ConfigError, ExperimentConfig, executor_of
from vidablate.sweep.trial import (
    HEAD_NODE_RESOURCE,
    placement,
    trial_request,
    tune_relaunches,
)


def _trainer(**kw):
    return {"num_workers": 1, "cpus_per_worker": 2, "use_gpu": False,
            "packed_gpu_fraction": 0.25, "max_failures": 2, "executor": "auto", **kw}


def test_auto_runs_one_worker_in_the_trial_and_ddp_under_ray_train():
    assert executor_of(_trainer()) == "trial"
    assert executor_of(_trainer(num_workers=0)) == "trial"
    assert executor_of(_trainer(num_workers=2)) == "train"
    assert executor_of(_trainer(executor="train")) == "train"
    assert executor_of({"num_workers": 1}) == "trial"  # a trainer section from before the knob


def test_a_trial_process_holds_its_workers_resources_and_a_train_driver_only_the_head():
    assert trial_request(_trainer(), packed=False) == {"CPU": 2.0}
    assert trial_request(_trainer(use_gpu=True), packed=True) == {"CPU": 2.0, "GPU": 0.25}
    driver = trial_request(_trainer(executor="train"), packed=False)
    assert driver["CPU"] == 0 and driver[HEAD_NODE_RESOURCE] > 0
    assert trial_request(_trainer(num_workers=2), packed=False) == driver
    bundles = placement(trial_request(_trainer(), packed=False)).bundles
    assert bundles == [{"CPU": 2.0}]


def test_tune_relaunches_a_trial_process_as_often_as_ray_train_would_restart_its_workers():
    assert tune_relaunches([_trainer(executor="train")], 1) == 1
    assert tune_relaunches([_trainer()], 1) == 3  # trainer.max_failures 2 + the sweep's 1
    assert tune_relaunches([_trainer(), _trainer(max_failures=5, num_workers=2)], 0) == 2
    assert tune_relaunches([], 1) == 1


def test_executor_is_checked_before_anything_runs():
    with pytest.raises(ConfigError, match="trainer.executor must be one of"):
        ExperimentConfig.from_dict({"trainer": {"executor": "thread"}}).validate()
    with pytest.raises(ConfigError, match="trainer.executor=trial runs one worker.*"
                                          "num_workers=2"):
        ExperimentConfig.from_dict({"trainer": {"executor": "trial", "num_workers": 2,
                                                "batch_size": 8}}).validate()
    ExperimentConfig.from_dict({"trainer": {"executor": "train", "num_workers": 2,
                                            "batch_size": 8}}).validate()

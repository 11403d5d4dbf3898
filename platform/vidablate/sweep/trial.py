"""Trial execution: the Tune function trainables, each the driver of one Ray Train trial.

Ray 2.60 pattern (Train V2): a Tune function trainable is the driver of one trial; it builds a
``TorchTrainer`` whose ``RunConfig`` has a deterministic name (the trial's key) and the
``TuneReportCallback`` that forwards rank 0's metrics to Tune. A restarted trial resumes from
its last checkpoint, because Train finds its earlier run by name in storage.
"""

from __future__ import annotations

from typing import Any

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ..config import dotted_to_nested, merge
from ..train.loop import train_loop_per_worker
from .caching import worker_resources
from .tracking import decode_hpo_config, hpo_trial_key

HEAD_NODE_RESOURCE = "node:__internal_head__"
"""The resource Ray gives the head node alone (1.0; ``ray._common.constants``)."""
TRIAL_DRIVER_RESOURCES = {"cpu": 0, "memory": 64 * 2**20, HEAD_NODE_RESOURCE: 0.001}
"""The Tune trial only drives its TorchTrainer; the Train workers hold the CPUs/GPUs. Ray rejects
an empty request, so the driver asks for no CPU and the memory it roughly uses; concurrency
comes from max_concurrent (derived from the cluster's CPUs/GPUs). It runs on the head node:
Ray Train starts a trial's controller on the node of its driver, so a worker node lost (a spot
node) takes only Train workers, which the controller restarts from the last checkpoint
(``trainer.max_failures``); a controller lost with its node would leave its workers'
placement group holding the survivors' CPUs until the sweep ends (seen with Ray 2.60)."""


def run_trial(config: dict[str, Any], trials: dict[str, dict[str, Any]], train_root: str) -> None:
    """The Tune function trainable: drive one TorchTrainer for one (row, seed)."""
    _fit(config["trial"], trials[config["trial"]], train_root)


def run_hpo_trial(config: dict[str, Any], common: dict[str, Any], train_root: str,
                  cache_options: dict[str, Any] | None = None, packed: bool = False) -> None:
    """The Tune function trainable of an HPO space: the Optuna-sampled values over the common
    config, one TorchTrainer named after the trial's counter (stable across restores)."""
    key = hpo_trial_key(tune.get_context().get_trial_id())
    experiment = merge(common, dotted_to_nested(decode_hpo_config(config)))
    _fit(key, {"experiment": experiment, "run_id": None, "cache": cache_options,
               "packed": packed}, train_root)


def _fit(name: str, spec: dict[str, Any], train_root: str) -> None:
    t = spec["experiment"]["trainer"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": spec["experiment"], "mlflow_run_id": spec["run_id"],
                           "cache": spec.get("cache")},
        scaling_config=scaling_config(t, bool(spec.get("packed"))),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=train_root,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=t["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()


def scaling_config(trainer: dict[str, Any], packed: bool) -> ray.train.ScalingConfig:
    """Ray Train workers of one trial; a packed trial's workers ask for a GPU fraction."""
    return ray.train.ScalingConfig(
        num_workers=trainer["num_workers"], use_gpu=trainer["use_gpu"],
        resources_per_worker=worker_resources(trainer, packed))

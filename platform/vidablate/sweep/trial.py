"""Trial execution: the Tune function trainables, one per (row, seed) or HPO sample.

A trial's loop runs where ``trainer.executor`` says (``config.executor_of``):

- ``trial``: in the Tune trial's own process (``train_loop_in_trial``). The trial holds its
  worker's CPUs/GPU; Tune keeps its checkpoints and relaunches it from the last one when its
  process or node is lost (``tune_relaunches``).
- ``train``: the trial drives one Ray Train ``TorchTrainer`` (Ray 2.60, Train V2) whose
  ``RunConfig`` has a deterministic name (the trial's key) and the ``TuneReportCallback`` that
  forwards rank 0's metrics to Tune. A restarted trial resumes from its last checkpoint,
  because Train finds its earlier run by name in storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ..config import dotted_to_nested, executor_of, merge
from ..train.loop import train_loop_in_trial, train_loop_per_worker
from .caching import worker_resources
from .tracking import decode_hpo_config, hpo_trial_key

HEAD_NODE_RESOURCE = "node:__internal_head__"
"""The resource Ray gives the head node alone (1.0; ``ray._common.constants``)."""
TRIAL_DRIVER_RESOURCES = {"CPU": 0.0, "memory": 64 * 2**20, HEAD_NODE_RESOURCE: 0.001}
"""A trial that drives a TorchTrainer: the Train workers hold the CPUs/GPUs. Ray rejects an
empty request, so the driver asks for no CPU and the memory it roughly uses; concurrency
comes from max_concurrent (derived from the cluster's CPUs/GPUs). It runs on the head node:
Ray Train starts a trial's controller on the node of its driver, so a worker node lost (a spot
node) takes only Train workers, which the controller restarts from the last checkpoint
(``trainer.max_failures``); a controller lost with its node would leave its workers'
placement group holding the survivors' CPUs until the sweep ends (seen with Ray 2.60)."""


def trial_request(trainer: dict[str, Any], packed: bool) -> dict[str, float]:
    """The resources a Tune trial asks for: its worker's, when the loop runs in the trial's
    process; the driver's (``TRIAL_DRIVER_RESOURCES``) when Ray Train runs it."""
    if executor_of(trainer) == "trial":
        return worker_resources(trainer, packed)
    return dict(TRIAL_DRIVER_RESOURCES)


def placement(request: dict[str, float]) -> tune.PlacementGroupFactory:
    return tune.PlacementGroupFactory([request])


def tune_relaunches(trainers: list[dict[str, Any]], max_failures: int) -> int:
    """Tune's ``FailureConfig.max_failures`` for a sweep: ``max_failures`` relaunches of any
    failed trial, plus, when some trial runs in its own process, that trial's
    ``trainer.max_failures`` (the worker-loss retries Ray Train would have given it)."""
    own = [int(t["max_failures"]) for t in trainers if executor_of(t) == "trial"]
    return max_failures + max(own, default=0)


def reuse_processes(trainers: list[dict[str, Any]]) -> bool:
    """Tune's ``reuse_actors``: when every trial runs its loop in its own process, a finished
    trial's process runs the next trial of the same resources, so a process start and its
    imports are paid once per slot, not once per trial. The loop leaves nothing behind that
    changes the next trial: it seeds, sets its threads and builds its model and data anew (the
    process-wide caches hold tokenizers, filesystems and probes), and a failed trial's process
    is not reused."""
    return bool(trainers) and all(executor_of(t) == "trial" for t in trainers)


def with_resources(trainable: Callable, request: Callable[[dict[str, Any]], dict[str, float]]
                   ) -> Any:
    """``trainable`` with each trial's resources from its config (``request(config)``)."""
    return tune.with_resources(trainable, lambda config: placement(request(config)))


def run_trial(config: dict[str, Any], trials: dict[str, dict[str, Any]], train_root: str) -> None:
    """The Tune function trainable of a table: one (row, seed)."""
    _run(config["trial"], trials[config["trial"]], train_root)


def hpo_experiment(config: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The Optuna-sampled values over the common config."""
    return merge(common, dotted_to_nested(decode_hpo_config(config)))


def run_hpo_trial(config: dict[str, Any], common: dict[str, Any], train_root: str,
                  cache_options: dict[str, Any] | None = None, packed: bool = False) -> None:
    """The Tune function trainable of an HPO space: the sampled values over the common config,
    named after the trial's counter (stable across restores)."""
    key = hpo_trial_key(tune.get_context().get_trial_id())
    _run(key, {"experiment": hpo_experiment(config, common), "run_id": None,
               "cache": cache_options, "packed": packed}, train_root)


def _run(name: str, spec: dict[str, Any], train_root: str) -> None:
    loop_config = {"experiment": spec["experiment"], "mlflow_run_id": spec["run_id"],
                   "cache": spec.get("cache")}
    t = spec["experiment"]["trainer"]
    if executor_of(t) == "trial":
        train_loop_in_trial(loop_config)
        return
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling_config(t, bool(spec.get("packed"))),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=train_root,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=t["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )
    trainer.fit()


CHECKPOINTS_KEPT = 2
"""Checkpoints kept per trial (the newest), under Ray Train or Tune."""


def scaling_config(trainer: dict[str, Any], packed: bool) -> ray.train.ScalingConfig:
    """Ray Train workers of one trial; a packed trial's workers ask for a GPU fraction."""
    return ray.train.ScalingConfig(
        num_workers=trainer["num_workers"], use_gpu=trainer["use_gpu"],
        resources_per_worker=worker_resources(trainer, packed))

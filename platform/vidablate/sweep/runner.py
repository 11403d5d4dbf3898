"""Run a search space on Ray: one Tune trial per (row, seed), each a Ray Train TorchTrainer.

Ray 2.60 pattern (Train V2): a Tune function trainable is the driver of one trial; it builds a
``TorchTrainer`` whose ``RunConfig`` has a deterministic name (the trial's key) and the
``TuneReportCallback`` that forwards rank 0's metrics to Tune. Re-running the same command
restores the Tune experiment (finished trials are skipped) and every restarted trial resumes
from its last checkpoint, because Train finds its earlier run by name in storage.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ..config import ConfigError
from ..report.table import TrialOutcome, build_table, to_markdown, write_report
from ..train.loop import train_loop_per_worker
from .space import Space, TrialSpec, expand, load_space, select_rows, sweep_id
from .tracking import MLflowTrialCallback, SweepTracker, resolve_tracking_uri

TRIAL_DRIVER_RESOURCES = {"cpu": 0, "memory": 64 * 2**20}
"""The Tune trial only drives its TorchTrainer; the Train workers hold the CPUs/GPUs. Ray rejects
an empty request, so the driver asks for no CPU and the memory it roughly uses; concurrency
comes from max_concurrent (derived from the cluster's CPUs/GPUs)."""


@dataclass
class SweepSettings:
    """How to run a sweep (not what to train: that is the experiment config)."""

    storage_path: str | None = None
    """Tune/Train storage: local dir (default ./ray_results), shared FS or cloud URI."""
    tracking_uri: str | None = None
    """MLflow store; default $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db."""
    resume: bool = True
    """Restore an earlier run of the same sweep (finished trials are skipped)."""
    seeds: list[int] | None = None
    """Override the space's seeds."""
    rows: list[str] | None = None
    """Run only these rows of the table (by row name)."""
    max_concurrent: int = 0
    """Trials at once; 0 = as many as the cluster's CPUs/GPUs allow."""
    max_trial_failures: int = 1
    """Tune relaunches of a failed trial (each resumes from its last checkpoint)."""
    ray_address: str | None = None
    """None: $RAY_ADDRESS (set by `ray job submit`) if present, else a new local cluster."""
    num_cpus: int | None = None
    """CPUs of a new local cluster (None = all)."""
    experiment_name: str | None = None
    """MLflow experiment; default the space's name."""
    report_dir: str | None = None
    """Where the table files go before they are logged; default <storage>/<sweep id>-report."""
    verbose_workers: bool = False
    """Forward worker logs to this console (Ray's log_to_driver)."""
    dry_run: bool = False
    """Print the trials and their cost, run nothing."""


@dataclass
class SweepReport:
    sweep_id: str
    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    markdown: str
    files: dict[str, Path]
    outcomes: list[TrialOutcome]
    trials: list[TrialSpec] = field(default_factory=list)


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial"])


def run_trial(config: dict[str, Any], trials: dict[str, dict[str, Any]], train_root: str) -> None:
    """The Tune function trainable: drive one TorchTrainer for one (row, seed)."""
    spec = trials[config["trial"]]
    t = spec["experiment"]["trainer"]
    resources = {"CPU": t["cpus_per_worker"]}
    if t["use_gpu"]:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": spec["experiment"], "mlflow_run_id": spec["run_id"]},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t["num_workers"], use_gpu=t["use_gpu"], resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=config["trial"],
            storage_path=train_root,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=t["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()


def _storage(settings: SweepSettings) -> str:
    path = settings.storage_path or str(Path.cwd() / "ray_results")
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _concurrency(trials: list[TrialSpec], settings: SweepSettings) -> int:
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    t = trials[0].experiment["trainer"]
    workers = max(t["num_workers"], 1)
    res = ray.cluster_resources()
    if t["use_gpu"]:
        fit = int(res.get("GPU", 0) // workers)
    else:
        fit = int(res.get("CPU", 1) // (workers * t["cpus_per_worker"]))
    return max(1, min(fit, len(trials)))


def check_resources(trials: list[TrialSpec], resources: dict[str, float]) -> None:
    """Fail before launch when no trial could ever be scheduled on this cluster."""
    for t in trials:
        tr = t.experiment["trainer"]
        workers = max(tr["num_workers"], 1)
        need_cpu = workers * tr["cpus_per_worker"]
        if tr["use_gpu"] and resources.get("GPU", 0) < workers:
            raise ConfigError(
                f"trial {t.key}: trainer.use_gpu=true with trainer.num_workers={workers} needs "
                f"{workers} GPU(s); the Ray cluster has {resources.get('GPU', 0):g}")
        if resources.get("CPU", 0) < need_cpu:
            raise ConfigError(
                f"trial {t.key}: trainer.num_workers={workers} x trainer.cpus_per_worker="
                f"{tr['cpus_per_worker']} needs {need_cpu} CPUs; the Ray cluster has "
                f"{resources.get('CPU', 0):g}")


def _init_ray(settings: SweepSettings) -> None:
    if ray.is_initialized():
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"log_to_driver": settings.verbose_workers}
    if address == "local" and settings.num_cpus:
        kwargs["num_cpus"] = settings.num_cpus
    # workers import the package even when the driver found it through sys.path only
    src = str(Path(__file__).resolve().parents[2])
    kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        [src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}}
    ray.init(address=address, **kwargs)


def describe(space: Space, trials: list[TrialSpec]) -> str:
    """Dry-run view: the trials a space expands to and their size."""
    lines = [f"space {space.name}: {len(space.rows)} rows x {len(trials) // len(space.rows)} "
             f"seeds = {len(trials)} trials"]
    for t in trials:
        d, tr = t.experiment["data"], t.experiment["trainer"]
        clips = d["train_per_class"] * d["base_classes"]
        lines.append(f"  {t.key:<24} {tr['epochs']} epochs x {clips} clips, "
                     f"{max(tr['num_workers'], 1)} worker(s), "
                     f"toggles {{{', '.join(f'{k}={v}' for k, v in t.params.items() if k not in ('seed', 'row'))}}}")
    total = sum(t.experiment["trainer"]["epochs"] * t.experiment["data"]["train_per_class"]
                * t.experiment["data"]["base_classes"] for t in trials)
    lines.append(f"  total: {total} training clip passes")
    return "\n".join(lines)


def run_sweep(
    space_name: str,
    base: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    settings: SweepSettings | None = None,
) -> SweepReport | None:
    """Validate, launch (or resume) and report one sweep. Returns None for a dry run."""
    settings = settings or SweepSettings()
    space = load_space(space_name)
    if settings.rows:
        space = select_rows(space, settings.rows)
    trials = expand(space, base, overrides, settings.seeds)  # fails before any trial starts
    sid = sweep_id(space, trials)
    if settings.dry_run:
        print(describe(space, trials))
        return None

    _init_ray(settings)
    check_resources(trials, ray.cluster_resources())  # before any run is created
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    experiment_name = settings.experiment_name or space.name
    tracker = SweepTracker(tracking_uri, experiment_name)
    parent_id, created = tracker.parent_run(sid, {
        "space": space.name, "space_file": str(space.path), "trials": len(trials),
        "seeds": [t.seed for t in trials if t.row == space.rows[0].name],
    })
    run_ids = {t.key: tracker.child_run(sid, parent_id, t) for t in trials}
    storage = _storage(settings)
    print(f"sweep {sid}: {len(trials)} trials; storage {storage}/{sid}; "
          f"MLflow {tracking_uri} (experiment {experiment_name!r}, parent run {parent_id}"
          f"{'' if created else ', resumed'})", flush=True)

    trial_payload = {t.key: {"experiment": t.experiment, "run_id": run_ids[t.key]}
                     for t in trials}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, trials=trial_payload, train_root=f"{storage}/{sid}-train"),
        TRIAL_DRIVER_RESOURCES,
    )
    exp_path = f"{storage}/{sid}"
    started = time.time()
    if settings.resume and tune.Tuner.can_restore(exp_path):
        print(f"resuming {exp_path}: finished trials are kept, the rest continue", flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.key for t in trials])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=_concurrency(trials, settings),
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=sid, storage_path=storage, verbose=0,
                callbacks=[MLflowTrialCallback(
                    tracking_uri, run_ids,
                    {t.key: t.experiment["trainer"]["epochs"] for t in trials})],
                failure_config=tune.FailureConfig(max_failures=settings.max_trial_failures),
            ),
        )
    grid = tuner.fit()

    by_key = {t.key: t for t in trials}
    outcomes: dict[str, TrialOutcome] = {}
    for result in grid:
        key = result.config.get("trial") if result.config else None
        if key not in by_key:
            continue
        t = by_key[key]
        metrics = {k: float(v) for k, v in (result.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        done = metrics.get("epoch") == t.experiment["trainer"]["epochs"]
        status = "ok" if result.error is None and done else "failed"
        outcomes[key] = TrialOutcome(t.row, t.seed, metrics, status,
                                     "" if result.error is None else str(result.error)[:2000])
    for t in trials:
        outcomes.setdefault(t.key, TrialOutcome(t.row, t.seed, {}, "missing"))
    ordered = [outcomes[t.key] for t in trials]

    table = build_table(space, ordered)
    report_dir = Path(settings.report_dir or (
        f"{storage}/{sid}-report" if "://" not in storage else f"{sid}-report"))
    files = write_report(space, table, report_dir)
    for path in files.values():
        tracker.client.log_artifact(parent_id, str(path), artifact_path="table")
    failed = [o for o in ordered if o.status != "ok"]
    tracker.client.set_tag(parent_id, "vidablate.trials_failed", str(len(failed)))
    tracker.client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    markdown = to_markdown(space, table)
    elapsed = time.time() - started
    print(f"\n{markdown}\n", flush=True)
    for o in failed:
        print(f"trial {o.row} seed {o.seed}: {o.status} {o.error.splitlines()[-1] if o.error else ''}",
              file=sys.stderr)
    store = tracking_uri
    ui = (f"mlflow ui --backend-store-uri {store}" if store.startswith("sqlite")
          else f"open {store}")
    print(f"sweep {sid} done in {math.ceil(elapsed)} s; table files in {report_dir}\n"
          f"MLflow: experiment {experiment_name!r}, parent run {parent_id}\n"
          f"browse: {ui}", flush=True)
    return SweepReport(sid, parent_id, tracking_uri, experiment_name, markdown, files,
                       ordered, trials)

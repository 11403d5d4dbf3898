"""Run a search space on Ray: load and expand it, print the dry run (``cost``) or run the
pre-flight checks (``preflight``), start Ray, build the feature cache, open the sweep's MLflow
parent run, then run the grid of a table (``grid``) or the Optuna search of an HPO space
(``hpo``); each trial is one Tune trial that runs its loop in its own process or drives a Ray
Train TorchTrainer (``trial``).

Re-running the same command restores the Tune experiment (finished trials are skipped) and every
restarted trial resumes from its newest checkpoint, which it finds in storage by its name.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ..config import ExperimentConfig
from ..data.preflight import check_data
from ..report.table import TrialOutcome
from . import interrupt, quiet, timing
from .caching import (
    build_entries,
    cache_root,
    concurrency,
    describe_plan,
    ensure_folder,
    plan_trials,
)
from .cost import describe
from .earlier import earlier_sweep_note
from .grid import run_grid
from .hpo import run_hpo
from .lock import store_created, sweep_lock
from .preflight import (
    check_local_gpu,
    check_object_store,
    check_resources,
    check_storage,
    check_tracking,
    check_tune_state,
    tune_state_error,
)
from .provenance import run_tags
from .space import Space, TrialSpec, expand, load_space, select_rows, sweep_id
from .tracking import SweepTracker, log_sweep_files, resolve_tracking_uri, resolved_trials


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
    retry_errored: bool = True
    """On resume, trials that ended in an error run again from their last checkpoint; False
    keeps them as failed cells."""
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
    cache: str = "auto"
    """Frozen-prefix feature cache: ``auto`` (trials that can read it do, the others say
    why), ``off``, or ``require`` (fail when a trial cannot)."""
    cache_path: str | None = None
    """Where cached features live; default ``<storage>/feature_cache`` (shared by nodes)."""
    cache_only: bool = False
    """Build the trials' feature-cache entries and stop (``jobs/cache_features.py``)."""
    scheduler: str = ""
    """HPO: early stopping, one of ``schedulers.TYPES`` with the space's settings; empty =
    the space's own ``scheduler`` (fifo when it names none)."""
    recipe: str = "auto"
    """The papers' recipes: ``auto`` (each space's own ``recipe`` on real data), ``none``, or a
    recipe name for every trial (``conf/recipe/<name>.yaml``)."""
    command: list[str] = field(default_factory=list)
    """The command line, tagged on every run (``vidablate.command``); default ``sys.argv``."""


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
    space_file: Path | None = None
    """The space file the sweep ran (the dashboard lists a user's file beside the shipped)."""


def _cache_root(settings: SweepSettings) -> str:
    path = settings.cache_path
    if path and "://" not in path:
        path = str(Path(path).expanduser().resolve())
    return cache_root(path, _storage(settings))


def _storage(settings: SweepSettings) -> str:
    path = settings.storage_path or str(Path.cwd() / "ray_results")
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _report_dir(settings: SweepSettings, storage: str, sid: str) -> Path:
    """Where the table files go before they are logged: ``report_dir`` or beside the sweep's
    storage (a cloud storage: ./<sweep id>-report)."""
    return Path(settings.report_dir or (
        f"{storage}/{sid}-report" if "://" not in storage else f"{sid}-report"))


def _concurrency(trials: list[TrialSpec], settings: SweepSettings,
                 packed: dict[str, bool] | None = None, count: int | None = None) -> int:
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    return concurrency(trials, packed or {}, ray.cluster_resources(), count)


def _local_concurrency(trials: list[TrialSpec], settings: SweepSettings,
                       plans: dict[str, Any]) -> int:
    """Trials at once on the local cluster a run would start (``max_concurrent`` wins)."""
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    local = {"CPU": float(settings.num_cpus or os.cpu_count() or 1),
             "GPU": float(torch.cuda.device_count())}
    return concurrency(trials, {k: tc.packed for k, tc in plans.items()}, local)


def _init_ray(settings: SweepSettings) -> None:
    quiet.install()
    if ray.is_initialized():
        return
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"log_to_driver": settings.verbose_workers}
    if address == "local":
        kwargs["dashboard_host"] = "127.0.0.1"  # a new local cluster is not reachable from outside
        if settings.num_cpus:
            kwargs["num_cpus"] = settings.num_cpus
    # workers import the package even when the driver found it through sys.path only
    src = str(Path(__file__).resolve().parents[2])
    kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        [src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}}
    ray.init(address=address, **kwargs)
    interrupt.install()  # after ray.init: Ray's SIGTERM handler exits without a word
    private_token_file()


def private_token_file() -> Path | None:
    """Ray writes its cluster token (``ray start`` with ``RAY_AUTH_MODE=token``) readable by
    every user of the machine; make it the owner's alone (0600). Returns the file it tightened."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or not info.st_mode & 0o077:
            return None
        path.chmod(0o600)
    except OSError:  # no token file, or not ours to change
        return None
    print(f"ray: {path} was readable by other users; now 0600", flush=True)
    return path


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
    if settings.scheduler:
        space = dataclasses.replace(space, scheduler=dataclasses.replace(
            space.scheduler, type=settings.scheduler))
    trials = expand(space, base, overrides, settings.seeds, settings.recipe)  # fails before any trial starts
    if space.kind == "hpo":
        space.scheduler.check(f"{space.path}", int(trials[0].experiment["trainer"]["epochs"]))
    sid = sweep_id(space, trials)
    root = _cache_root(settings)
    planned = trials if space.kind != "hpo" else trials[:1]  # HPO: the template's prefix
    if settings.dry_run:
        plans = plan_trials(planned, root, settings.cache, random_weights=True)
        print(describe(space, trials, plans=plans, concurrency=_local_concurrency(
            planned, settings, plans), fixed=timing.load(_storage(settings))))
        return None
    check_storage(_storage(settings))
    if settings.cache != "off" and "://" in (settings.cache_path or ""):
        check_object_store(root, "cache_path")  # the default is under the storage checked above
    with sweep_lock(_storage(settings), sid, shlex.join(settings.command or sys.argv)):
        return _launch(space, trials, sid, root, planned, settings)


def _launch(space: Space, trials: list[TrialSpec], sid: str, root: str,
            planned: list[TrialSpec], settings: SweepSettings) -> SweepReport | None:
    """The sweep under its lock: the remaining pre-flight, Ray, the cache, MLflow, Tune."""
    if settings.resume:  # a damaged Tune state is reported before anything starts
        check_tune_state(f"{_storage(settings)}/{sid}")
    check_tracking(resolve_tracking_uri(settings.tracking_uri))
    check_local_gpu(trials, settings)
    # the data pre-flight, before any run or trial exists
    for line in check_data([ExperimentConfig.from_dict(t.experiment) for t in trials]):
        print(f"pre-flight: {line}", flush=True)
    plans = plan_trials(planned, root, settings.cache)
    for t in planned:
        print(f"trial {t.key}: {describe_plan(plans[t.key], t.experiment['trainer'])}",
              flush=True)
    if any(tc.plan.use for tc in plans.values()):
        ensure_folder(root)
    packed = {k: tc.packed for k, tc in plans.items()}
    cache_options = {"mode": settings.cache, "root": root}

    _init_ray(settings)
    check_resources(trials, ray.cluster_resources(), packed)  # before any run is created
    building = time.time()
    counts = build_entries(plans, planned, log=lambda line: print(line, flush=True))
    build_s = time.time() - building
    if settings.cache_only:
        print(f"feature cache of {space.name} in {root}: {counts['entries']} entries, "
              f"{counts['reused']} were complete, {counts['parts']} part(s) built", flush=True)
        return None
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    experiment_name = settings.experiment_name or space.name
    with store_created(tracking_uri):
        tracker = SweepTracker(tracking_uri, experiment_name,
                               run_tags(settings.command or list(sys.argv)))
    parent_id, created = tracker.parent_run(sid, {
        "space": space.name, "space_file": str(space.path), "trials": len(trials),
        "seeds": sorted({t.seed for t in trials}),
    })
    if created:
        note = earlier_sweep_note(tracker.client, tracker.experiment_id, space.name, sid,
                                  resolved_trials(trials))
        if note:
            print(note, flush=True)
    log_sweep_files(tracker, parent_id, space.path, trials)
    storage = _storage(settings)
    report_dir = _report_dir(settings, storage, sid)

    def restore(exp_path: str, trainable: Any) -> tune.Tuner | None:
        return _restore(exp_path, trainable, settings)

    startup_s = time.time() - timing.origin() - build_s

    if space.kind == "hpo":
        template = trials[0]
        one = {template.key: packed.get(template.key, False)}
        markdown, files, outcomes = run_hpo(
            space, template, sid, tracker, parent_id, created, storage,
            cache_options=cache_options, packed=one[template.key], restore=restore,
            max_concurrent=_concurrency([template], settings, one, space.num_samples),
            max_failures=settings.max_trial_failures, report_dir=report_dir,
            startup_s=startup_s)
        return SweepReport(sid, parent_id, tracking_uri, experiment_name, markdown, files,
                           outcomes, [template], space.path)
    markdown, files, outcomes = run_grid(
        space, trials, sid, tracker, parent_id, created, storage, cache_options=cache_options,
        packed=packed, restore=restore, max_concurrent=_concurrency(trials, settings, packed),
        max_failures=settings.max_trial_failures, report_dir=report_dir, startup_s=startup_s)
    return SweepReport(sid, parent_id, tracking_uri, experiment_name, markdown, files,
                       outcomes, trials, space.path)


def _restore(exp_path: str, trainable: Any, settings: SweepSettings) -> tune.Tuner | None:
    """The Tuner of an earlier run of this sweep when resuming is on and one exists: finished
    trials are kept, errored and unfinished ones continue from their checkpoints."""
    if not settings.resume or not check_tune_state(exp_path):
        return None
    print(f"resuming {exp_path}: finished trials are kept, the rest continue", flush=True)
    try:
        return tune.Tuner.restore(exp_path, trainable=trainable,
                                  resume_errored=settings.retry_errored)
    except Exception as err:  # noqa: BLE001 - a damaged state file fails in many ways
        raise tune_state_error(exp_path, err) from None

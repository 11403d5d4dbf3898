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
from ray import tune

from ..data.preflight import check_data
from ..report.hpo import hpo_table
from ..report.table import TrialOutcome, build_table, to_markdown, write_report
from ..train.keys import DIVERGED_KEY
from .caching import (
    build_entries,
    cache_root,
    concurrency,
    describe_plan,
    ensure_folder,
    plan_trials,
)
from .cost import describe
from .preflight import (
    _redact,
    check_local_gpu,
    check_resources,
    check_storage,
    check_tracking,
    check_tune_state,
    tune_state_error,
)
from .space import Space, TrialSpec, expand, load_space, select_rows, sweep_id
from .tracking import (
    HPOTrialCallback,
    MLflowTrialCallback,
    SweepTracker,
    decode_hpo_config,
    encode_hpo_key,
    hpo_trial_key,
    resolve_tracking_uri,
    use_driver_state,
)
from .trial import TRIAL_DRIVER_RESOURCES, run_hpo_trial, run_trial


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


def _cache_root(settings: SweepSettings) -> str:
    path = settings.cache_path
    if path and "://" not in path:
        path = str(Path(path).expanduser().resolve())
    return cache_root(path, _storage(settings))


def _storage(settings: SweepSettings) -> str:
    path = settings.storage_path or str(Path.cwd() / "ray_results")
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _concurrency(trials: list[TrialSpec], settings: SweepSettings,
                 packed: dict[str, bool] | None = None) -> int:
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    return concurrency(trials, packed or {}, ray.cluster_resources())


def _init_ray(settings: SweepSettings) -> None:
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
    root = _cache_root(settings)
    planned = trials if space.kind != "hpo" else trials[:1]  # HPO: the template's prefix
    if settings.dry_run:
        print(describe(space, trials, plans=plan_trials(planned, root, settings.cache)))
        return None
    check_storage(_storage(settings))
    if settings.resume:  # a damaged Tune state is reported before anything starts
        check_tune_state(f"{_storage(settings)}/{sid}")
    check_tracking(resolve_tracking_uri(settings.tracking_uri))
    check_local_gpu(trials, settings)
    # the data pre-flight, before any run or trial exists; check_data takes ExperimentConfig
    # objects after the merge: [ExperimentConfig.from_dict(t.experiment) for t in trials]
    for line in check_data([t.experiment for t in trials]):  # NOTE(merge): see above
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
    counts = build_entries(plans, planned, log=lambda line: print(line, flush=True))
    if settings.cache_only:
        print(f"feature cache of {space.name} in {root}: {counts['entries']} entries, "
              f"{counts['reused']} were complete, {counts['parts']} part(s) built", flush=True)
        return None
    tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    experiment_name = settings.experiment_name or space.name
    tracker = SweepTracker(tracking_uri, experiment_name)
    parent_id, created = tracker.parent_run(sid, {
        "space": space.name, "space_file": str(space.path), "trials": len(trials),
        "seeds": sorted({t.seed for t in trials}),
    })
    storage = _storage(settings)
    if space.kind == "hpo":
        return _run_hpo(space, trials[0], sid, tracker, parent_id, created, storage, settings,
                        cache_options, packed.get(trials[0].key, False))
    run_ids = {t.key: tracker.child_run(sid, parent_id, t) for t in trials}
    print(f"sweep {sid}: {len(trials)} trials; storage {storage}/{sid}; "
          f"MLflow {_redact(tracking_uri)} (experiment {experiment_name!r}, parent run {parent_id}"
          f"{'' if created else ', resumed'})", flush=True)

    trial_payload = {t.key: {"experiment": t.experiment, "run_id": run_ids[t.key],
                             "cache": cache_options, "packed": packed[t.key]} for t in trials}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, trials=trial_payload, train_root=f"{storage}/{sid}-train"),
        TRIAL_DRIVER_RESOURCES,
    )
    exp_path = f"{storage}/{sid}"
    started = time.time()
    use_driver_state(tracking_uri, run_ids)
    tuner = _restore(exp_path, trainable, settings)
    if tuner is None:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.key for t in trials])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=_concurrency(trials, settings, packed),
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
        outcomes[key] = _outcome(t, result, metrics)
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
    ui = _browse(store)
    print(f"sweep {sid} done in {math.ceil(elapsed)} s; table files in {report_dir}\n"
          f"MLflow: experiment {experiment_name!r}, parent run {parent_id}\n"
          f"browse: {ui}", flush=True)
    return SweepReport(sid, parent_id, tracking_uri, experiment_name, markdown, files,
                       ordered, trials)


def _outcome(t: TrialSpec, result: Any, metrics: dict[str, float]) -> TrialOutcome:
    """ok only when the trial reached its last epoch without error or divergence."""
    diverged = (result.metrics or {}).get(DIVERGED_KEY)
    if isinstance(diverged, str):
        return TrialOutcome(t.row, t.seed, {}, "diverged", diverged)
    done = metrics.get("epoch") == t.experiment["trainer"]["epochs"]
    status = "ok" if result.error is None and done else "failed"
    return TrialOutcome(t.row, t.seed, metrics, status,
                        "" if result.error is None else str(result.error)[:2000])


def _run_hpo(space: Space, template: TrialSpec, sid: str, tracker: SweepTracker, parent_id: str,
             created: bool, storage: str, settings: SweepSettings,
             cache_options: dict[str, Any] | None = None, packed: bool = False) -> SweepReport:
    """Optuna TPE through Ray Tune's OptunaSearch: ``num_samples`` trials, each one
    TorchTrainer; a restarted driver restores the searcher and the unfinished trials."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = space.objective["metric"], space.objective["mode"]
    epochs = int(template.experiment["trainer"]["epochs"])
    print(f"sweep {sid}: Optuna TPE, {space.num_samples} trials on {metric} ({mode}); storage "
          f"{storage}/{sid}; MLflow {_redact(tracker.tracking_uri)} (experiment "
          f"{tracker.experiment!r}, parent run {parent_id}{'' if created else ', resumed'})",
          flush=True)
    trainable = tune.with_resources(
        tune.with_parameters(run_hpo_trial, common=template.experiment,
                             train_root=f"{storage}/{sid}-train", cache_options=cache_options,
                             packed=packed),
        TRIAL_DRIVER_RESOURCES)
    callback = HPOTrialCallback(tracker.tracking_uri, tracker.experiment, sid, parent_id,
                                template.experiment, template.seed, epochs, space.num_samples)
    exp_path = f"{storage}/{sid}"
    started = time.time()
    use_driver_state(tracker.tracking_uri, {})
    tuner = _restore(exp_path, trainable, settings)
    if tuner is None:
        searcher = OptunaSearch(metric=metric, mode=mode,
                                sampler=TPESampler(seed=template.seed))
        tuner = tune.Tuner(
            trainable,
            param_space={encode_hpo_key(k): _distribution(d) for k, d in space.search.items()},
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=space.num_samples,
                max_concurrent_trials=_concurrency([template], settings,
                                                   {template.key: packed}),
                trial_name_creator=lambda t: hpo_trial_key(t.trial_id),
                trial_dirname_creator=lambda t: hpo_trial_key(t.trial_id),
            ),
            run_config=tune.RunConfig(
                name=sid, storage_path=storage, verbose=0, callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=settings.max_trial_failures),
            ),
        )
    grid = tuner.fit()
    rows = []
    for result in grid:
        metrics = {k: float(v) for k, v in (result.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        trial_id = (result.metrics or {}).get("trial_id")
        key = hpo_trial_key(trial_id) if trial_id else Path(result.path).name
        rows.append((key, decode_hpo_config(result.config or {}), metrics,
                     "ok" if result.error is None and metrics.get("epoch") == epochs else "failed"))
    rows.sort(key=lambda r: r[0])
    markdown, csv = hpo_table(space, rows)
    report_dir = Path(settings.report_dir or (
        f"{storage}/{sid}-report" if "://" not in storage else f"{sid}-report"))
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {"md": report_dir / "hpo.md", "csv": report_dir / "hpo.csv"}
    files["md"].write_text(markdown + "\n")
    files["csv"].write_text(csv)
    for path in files.values():
        tracker.client.log_artifact(parent_id, str(path), artifact_path="table")
    ok = [r for r in rows if r[3] == "ok" and metric in r[2]]
    if ok:
        best = (max if mode == "max" else min)(ok, key=lambda r: r[2][metric])
        tracker.client.set_tag(parent_id, "vidablate.best_trial", best[0])
        tracker.client.log_metric(parent_id, f"best_{metric}", best[2][metric])
        for k, v in best[1].items():
            tracker.client.set_tag(parent_id, f"vidablate.best.{k}", str(v))
    failed = [r for r in rows if r[3] != "ok"]
    tracker.client.set_tag(parent_id, "vidablate.trials_failed", str(len(failed)))
    tracker.client.set_terminated(parent_id, "FAILED" if failed or not ok else "FINISHED")
    print(f"\n{markdown}\n", flush=True)
    store = tracker.tracking_uri
    ui = _browse(store)
    print(f"sweep {sid} done in {math.ceil(time.time() - started)} s; best "
          f"{best[0] + ' ' + metric + '=' + format(best[2][metric], '.2f') if ok else 'none'}\n"
          f"MLflow: experiment {tracker.experiment!r}, parent run {parent_id}\nbrowse: {ui}",
          flush=True)
    outcomes = [TrialOutcome(key, template.seed, metrics, status)
                for key, _, metrics, status in rows]
    return SweepReport(sid, parent_id, tracker.tracking_uri, tracker.experiment, markdown,
                       files, outcomes, [template])


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


def _browse(store: str) -> str:
    """How to look at the results in MLflow."""
    return f"mlflow ui --backend-store-uri {store}" if store.startswith("sqlite") \
        else f"open {_redact(store)}"


def _distribution(dim: dict[str, Any]) -> Any:
    if dim["type"] == "loguniform":
        return tune.loguniform(float(dim["low"]), float(dim["high"]))
    if dim["type"] == "uniform":
        return tune.uniform(float(dim["low"]), float(dim["high"]))
    if dim["type"] == "int":
        return tune.randint(int(dim["low"]), int(dim["high"]) + 1)  # inclusive bounds
    return tune.choice(list(dim["values"]))


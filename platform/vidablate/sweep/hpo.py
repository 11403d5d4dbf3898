"""The HPO sweep of a space: Optuna TPE through Ray Tune's OptunaSearch, ``num_samples`` trials
over the space's ``search`` dimensions (each run as ``trial`` says); the best trial is tagged on the
sweep's MLflow parent run and the per-trial table is written, logged and printed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from ..report.hpo import hpo_table
from ..report.table import TrialOutcome
from . import interrupt, timing
from .preflight import _redact
from .schedulers import STOPPED, Scheduler
from .space import Space, TrialSpec
from .tracking import (
    HPOTrialCallback,
    SweepTracker,
    browse_command,
    decode_hpo_config,
    deliver_held,
    encode_hpo_key,
    hpo_trial_key,
    record_failures,
    trial_error,
    use_driver_state,
)
from .trial import (
    CHECKPOINTS_KEPT,
    hpo_experiment,
    reuse_processes,
    run_hpo_trial,
    trial_request,
    tune_relaunches,
    with_resources,
)


def run_hpo(space: Space, template: TrialSpec, sid: str, tracker: SweepTracker, parent_id: str,
            created: bool, storage: str, *, cache_options: dict[str, Any] | None,
            packed: bool, restore: Callable[[str, Any], tune.Tuner | None],
            max_concurrent: int, max_failures: int, report_dir: Path,
            startup_s: float | None = None
            ) -> tuple[str, dict[str, Path], list[TrialOutcome]]:
    """Optuna TPE through Ray Tune's OptunaSearch: ``num_samples`` trials; a restarted driver restores the searcher and the unfinished trials. Returns
    the table's Markdown, its files and one outcome per trial (arguments as ``grid.run_grid``;
    ``template`` holds the common config and the seed; the space's scheduler stops trials
    early)."""
    # optuna and Ray's OptunaSearch take ~0.4 s to import and only HPO spaces need them
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = space.objective["metric"], space.objective["mode"]
    epochs = int(template.experiment["trainer"]["epochs"])
    scheduler = space.scheduler
    stopping = scheduler.describe(epochs)
    print(f"sweep {sid}: Optuna TPE, {stopping}, {space.num_samples} trials on {metric} "
          f"({mode}); storage "
          f"{storage}/{sid}; MLflow {_redact(tracker.tracking_uri)} (experiment "
          f"{tracker.experiment!r}, parent run {parent_id}{'' if created else ', resumed'})",
          flush=True)
    common = template.experiment
    trainable = with_resources(
        tune.with_parameters(run_hpo_trial, common=common, train_root=f"{storage}/{sid}-train",
                             cache_options=cache_options, packed=packed),
        lambda config: trial_request(hpo_experiment(config, common)["trainer"], packed))
    callback = HPOTrialCallback(tracker.tracking_uri, tracker.experiment, sid, parent_id,
                                template.experiment, template.seed, epochs, space.num_samples,
                                tags=tracker.run_tags, storage=storage,
                                stopping="" if scheduler.type == "fifo" else stopping)
    exp_path = f"{storage}/{sid}"
    started = time.time()
    use_driver_state(tracker.tracking_uri, tracker.experiment, parent_id, tracker.run_tags)
    tuner = restore(exp_path, trainable)
    if tuner is None:
        searcher = OptunaSearch(metric=metric, mode=mode,
                                sampler=TPESampler(seed=template.seed))
        tuner = tune.Tuner(
            trainable,
            param_space={encode_hpo_key(k): _distribution(d) for k, d in space.search.items()},
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=space.num_samples,
                scheduler=scheduler.build(metric, mode, epochs),
                max_concurrent_trials=max_concurrent,
                reuse_actors=reuse_processes([common["trainer"]]),
                trial_name_creator=lambda t: hpo_trial_key(t.trial_id),
                trial_dirname_creator=lambda t: hpo_trial_key(t.trial_id),
            ),
            run_config=tune.RunConfig(
                name=sid, storage_path=storage, verbose=0, callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=tune_relaunches(
                    [common["trainer"]], max_failures)),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            ),
        )
    grid = interrupt.fit(tuner, tracker, sid, parent_id, exp_path)
    deliver_held(sid, report_dir)
    rows, errors = [], []
    for result in grid:
        metrics = {k: float(v) for k, v in (result.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        trial_id = (result.metrics or {}).get("trial_id")
        key = hpo_trial_key(trial_id) if trial_id else Path(result.path).name
        error = trial_error(sid, key) if result.error is None else str(result.error)[-4000:]
        rows.append((key, decode_hpo_config(result.config or {}), metrics,
                     _status(error, metrics, epochs, scheduler)))
        if error:
            errors.append((key, error))
    rows.sort(key=lambda r: r[0])
    markdown, csv = hpo_table(space, rows, "" if scheduler.type == "fifo" else stopping)
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
    failed = [r for r in rows if r[3] not in ("ok", STOPPED)]
    tracker.client.set_tag(parent_id, "vidablate.trials_failed", str(len(failed)))
    record_failures(tracker, sid, parent_id, errors)
    tracker.client.set_terminated(parent_id, "FAILED" if failed or not ok else "FINISHED")
    print(f"\n{markdown}\n", flush=True)
    timing.report(sid, storage, time.time() - started, max_concurrent, startup_s)
    ui = browse_command(tracker.tracking_uri, tracker.experiment_id)
    print(f"sweep {sid} done in {math.ceil(time.time() - started)} s; best "
          f"{best[0] + ' ' + metric + '=' + format(best[2][metric], '.2f') if ok else 'none'}\n"
          f"MLflow: experiment {tracker.experiment!r}, parent run {parent_id}\nbrowse: {ui}",
          flush=True)
    outcomes = [TrialOutcome(key, template.seed, metrics, status)
                for key, _, metrics, status in rows]
    return markdown, files, outcomes


def _status(error: str, metrics: dict[str, float], epochs: int, scheduler: Scheduler) -> str:
    if error:
        return "failed"
    trained = metrics.get("epoch")
    if trained == epochs:
        return "ok"
    return STOPPED if scheduler.type != "fifo" and trained else "failed"


def _distribution(dim: dict[str, Any]) -> Any:
    if dim["type"] == "loguniform":
        return tune.loguniform(float(dim["low"]), float(dim["high"]))
    if dim["type"] == "uniform":
        return tune.uniform(float(dim["low"]), float(dim["high"]))
    if dim["type"] == "int":
        return tune.randint(int(dim["low"]), int(dim["high"]) + 1)  # inclusive bounds
    return tune.choice(list(dim["values"]))

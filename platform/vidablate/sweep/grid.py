"""The grid sweep of a table: one Tune trial per (row, seed) over every trial of the space;
the trials' outcomes become the "reproduced vs paper" table, written, logged to the sweep's
MLflow parent run and printed."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from ..report.claims import judge_table
from ..report.render import to_markdown, write_report
from ..report.table import TrialOutcome, build_table
from ..train.keys import DIVERGED_KEY
from . import interrupt, timing
from .preflight import _redact
from .provenance import provenance
from .space import Space, TrialSpec
from .tracking import (
    MLflowTrialCallback,
    SweepTracker,
    browse_command,
    deliver_held,
    failure_reason,
    log_seed_summaries,
    log_table_summary,
    record_failures,
    trial_error,
    use_driver_state,
)
from .trial import (
    CHECKPOINTS_KEPT,
    reuse_processes,
    run_trial,
    trial_request,
    tune_relaunches,
    with_resources,
)


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial"])


def run_grid(space: Space, trials: list[TrialSpec], sid: str, tracker: SweepTracker,
             parent_id: str, created: bool, storage: str, *, cache_options: dict[str, Any],
             packed: dict[str, bool], restore: Callable[[str, Any], tune.Tuner | None],
             max_concurrent: int, max_failures: int, report_dir: Path,
             startup_s: float | None = None
             ) -> tuple[str, dict[str, Path], list[TrialOutcome]]:
    """Run (or restore and continue) every trial, then report the table; returns its
    Markdown, the table files and one outcome per trial in the trials' order.

    ``restore(experiment path, trainable)`` gives the Tuner of an earlier run of this sweep or
    None; ``max_concurrent``: trials at once; ``max_failures``: Tune relaunches of a failed
    trial; ``report_dir``: where the table files go before they are logged; ``startup_s``:
    the command's start-up before the sweep (``sweep.timing``)."""
    tracking_uri, experiment_name = tracker.tracking_uri, tracker.experiment
    print(f"sweep {sid}: {len(trials)} trials; storage {storage}/{sid}; "
          f"MLflow {_redact(tracking_uri)} (experiment {experiment_name!r}, parent run {parent_id}"
          f"{'' if created else ', resumed'})", flush=True)

    trial_payload = {t.key: {"experiment": t.experiment, "run_id": None,
                             "cache": cache_options, "packed": packed[t.key]} for t in trials}
    trainable = with_resources(
        tune.with_parameters(run_trial, trials=trial_payload, train_root=f"{storage}/{sid}-train"),
        lambda config: trial_request(trial_payload[config["trial"]]["experiment"]["trainer"],
                                     trial_payload[config["trial"]]["packed"]))
    exp_path = f"{storage}/{sid}"
    started = time.time()
    use_driver_state(tracking_uri, experiment_name, parent_id, tracker.run_tags)
    tuner = restore(exp_path, trainable)
    if tuner is None:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.key for t in trials])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                reuse_actors=reuse_processes([t.experiment["trainer"] for t in trials]),
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=sid, storage_path=storage, verbose=0,
                callbacks=[MLflowTrialCallback(
                    tracking_uri, experiment_name, sid, parent_id, {t.key: t for t in trials},
                    {t.key: t.experiment["trainer"]["epochs"] for t in trials},
                    tags=tracker.run_tags, storage=storage)],
                failure_config=tune.FailureConfig(max_failures=tune_relaunches(
                    [t.experiment["trainer"] for t in trials], max_failures)),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            ),
        )
    grid = interrupt.fit(tuner, tracker, sid, parent_id, exp_path)
    deliver_held(sid, report_dir)

    by_key = {t.key: t for t in trials}
    outcomes: dict[str, TrialOutcome] = {}
    for result in grid:
        key = result.config.get("trial") if result.config else None
        if key not in by_key:
            continue
        t = by_key[key]
        metrics = {k: float(v) for k, v in (result.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        outcomes[key] = _outcome(t, result, metrics, trial_error(sid, key))
    for t in trials:
        outcomes.setdefault(t.key, TrialOutcome(t.row, t.seed, {}, "missing"))
    ordered = [outcomes[t.key] for t in trials]

    table = build_table(space, ordered)
    verdicts = judge_table(space.claims, table)
    header = provenance(trials)
    files = write_report(space, table, report_dir, header, verdicts)
    for name, path in files.items():
        tracker.client.log_artifact(parent_id, str(path),
                                    artifact_path="claims" if name == "claims" else "table")
    log_table_summary(tracker.client, parent_id, table, verdicts, header)
    log_seed_summaries(tracker, sid, table, trials)
    failed = [o for o in ordered if o.status != "ok"]
    tracker.client.set_tag(parent_id, "vidablate.trials_failed", str(len(failed)))
    record_failures(tracker, sid, parent_id,
                    [(t.key, o.error) for t, o in zip(trials, ordered, strict=True)
                     if o.status == "failed" and o.error])
    tracker.client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    markdown = to_markdown(space, table, header, verdicts)
    elapsed = time.time() - started
    print(f"\n{markdown}\n", flush=True)
    timing.report(sid, storage, elapsed, max_concurrent, startup_s)
    for o in failed:
        print(f"trial {o.row} seed {o.seed}: {o.status}"
              f"{': ' + failure_reason(o.error) if o.error else ''}", file=sys.stderr)
    ui = browse_command(tracking_uri, tracker.experiment_id)
    print(f"sweep {sid} done in {math.ceil(elapsed)} s; table files in {report_dir}\n"
          f"MLflow: experiment {experiment_name!r}, parent run {parent_id}\n"
          f"browse: {ui}", flush=True)
    return markdown, files, ordered


def _outcome(t: TrialSpec, result: Any, metrics: dict[str, float],
             seen: str = "") -> TrialOutcome:
    """ok only when the trial reached its last epoch without error or divergence; ``seen`` is
    the error the driver saw, for a result whose error file the storage did not keep."""
    diverged = (result.metrics or {}).get(DIVERGED_KEY)
    if isinstance(diverged, str):
        return TrialOutcome(t.row, t.seed, {}, "diverged", diverged)
    done = metrics.get("epoch") == t.experiment["trainer"]["epochs"]
    error = seen if result.error is None else str(result.error)[-4000:]
    status = "ok" if not error and done else "failed"
    return TrialOutcome(t.row, t.seed, metrics, status, error)  # the innermost error is last

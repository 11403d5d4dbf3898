"""MLflow tracking from one process (the Tune driver): experiment per space, parent run per
sweep, child run per trial. Runs are found again by tags, so a resumed sweep or trial continues
its run instead of creating a duplicate (Ray's MLflowLoggerCallback keeps that map in memory)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from ..config import dotted_to_nested, merge
from ..errors import TrackingUnreachable
from ..report.claims import Verdict
from ..report.claims import counts as verdict_counts
from ..report.table import TableRow, direction_counts
from ..train.keys import (
    DIAGNOSTIC_METRICS,
    DIVERGED_KEY,
    HISTORY_KEY,
    KSHOT_KEY,
    LOOP_TIME_KEY,
    NODE_KEY,
    REPLAYED_KEY,
)
from .outbox import Outbox
from .preflight import _redact
from .space import TrialSpec

SWEEP_TAG = "vidablate.sweep_id"
FAILURE_TAG = "vidablate.failure"
STOPPED_TAG = "vidablate.stopped"
"""Why an HPO trial ended before its last epoch: its early-stopping scheduler, as MLflow's
run status KILLED."""
"""Why a run failed (the trial's error, or the divergence), on the child and the parent."""
TRIAL_TAG = "vidablate.trial_key"
PARENT_TAG = "mlflow.parentRunId"
SPACE_HASH_TAG = "vidablate.space.sha256"
"""SHA-256 of the space file a sweep ran (the dashboard marks the table stale when it changes)."""
CHECKPOINT_PATH_KEY = "checkpoint_path"
"""Where Ray Tune's ``TuneReportCallback`` puts the path of a report's Train checkpoint (a loop
run in the trial's own process has Tune's checkpoint on the trial instead)."""
NODE_TAG = "vidablate.node"
"""The Ray node id that trained a trial's last reported epoch."""
NODES_TAG = "vidablate.nodes"
"""Every node a trial trained on, in order (more than one when a node was lost)."""
CHECKPOINT_TAG = "vidablate.checkpoint"
"""A finished trial's last checkpoint (``vidablate predict RUN_ID`` loads it)."""
TRACKED_METRICS = ("train_loss", "train_ce", "train_kd", "base_acc", "novel_acc", "hm", "top1",
                   "top5", "top1_std", "top5_std", "corrupt_train", "corrupt_eval", "feature_cache",
                   LOOP_TIME_KEY)


def tracked(key: str) -> bool:
    """Metrics logged to MLflow: the fixed set, the modules' diagnostics and per-split
    cross-dataset accuracies."""
    return key in TRACKED_METRICS or key in DIAGNOSTIC_METRICS or key.startswith("top1_split")


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``tracking_uri=`` wins, then $MLFLOW_TRACKING_URI, then ./mlflow.db (sqlite)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


UI_PORT = 5000
"""``mlflow ui``'s default port."""


def browse_command(store: str, experiment_id: str | None = None) -> str:
    """How to look at the results in MLflow: for a local store a ``mlflow ui`` command that
    works without an activated venv (this interpreter's ``-m mlflow``) and the runs page of
    the experiment (MLflow 3 opens an experiment on its GenAI overview otherwise)."""
    page = f"#/experiments/{experiment_id}/runs" if experiment_id else ""
    if store.startswith("sqlite"):
        return (f"{shlex.quote(sys.executable)} -m mlflow ui --backend-store-uri {store} "
                f"--port {UI_PORT}\n  then open http://127.0.0.1:{UI_PORT}/{page}")
    if store.startswith(("http://", "https://")):
        return f"open {_redact(store).rstrip('/')}/{page}"
    return f"open {_redact(store)}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local sqlite store live beside the database file (./mlartifacts), so the
    `mlflow ui` command we print finds them; a tracking server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class SweepTracker:
    """Creates or finds the experiment, the sweep's parent run and the trials' child runs."""

    def __init__(self, tracking_uri: str, experiment: str,
                 run_tags: dict[str, str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_tags = dict(run_tags or {})
        """Set on the parent and every child run (source, versions, command line)."""
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=default_artifact_location(tracking_uri))

    def _find(self, filter_string: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=2)
        return runs[0].info.run_id if runs else None

    def parent_run(self, sweep_id: str, params: dict[str, Any],
                   tags: dict[str, str] | None = None) -> tuple[str, bool]:
        """(run id, created) for the sweep's parent run; the run tags are set on every launch,
        so a resumed sweep names the code that continued it."""
        existing = self._find(f"tags.`{SWEEP_TAG}` = '{sweep_id}' and "
                              f"tags.`vidablate.kind` = 'sweep'")
        if existing:
            self.client.update_run(existing, status="RUNNING")
            self._set_tags(existing, {**self.run_tags, **(tags or {})})
            return existing, False
        run = self.client.create_run(self.experiment_id, run_name=sweep_id, tags={
            SWEEP_TAG: sweep_id, "vidablate.kind": "sweep", **self.run_tags, **(tags or {})})
        self._log_params(run.info.run_id, params)
        return run.info.run_id, True

    def find_child(self, sweep_id: str, key: str) -> str | None:
        """The child run of a trial, None when the trial never started."""
        return self._find(f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`{TRIAL_TAG}` = '{key}'")

    def child_run(self, sweep_id: str, parent_id: str, trial: TrialSpec,
                  tags: dict[str, str] | None = None) -> str:
        """Find or create a trial's child run (created when the trial starts, so its start
        time is the trial's) with its params and its resolved config as ``config.yaml``."""
        existing = self.find_child(sweep_id, trial.key)
        if existing:
            return existing
        run = self.client.create_run(
            self.experiment_id, run_name=trial.key,
            tags={SWEEP_TAG: sweep_id, TRIAL_TAG: trial.key, PARENT_TAG: parent_id,
                  "vidablate.kind": "trial", "vidablate.row": trial.row,
                  "vidablate.seed": str(trial.seed), **self.run_tags, **(tags or {})},
        )
        params = {**{f"toggle.{k}": v for k, v in trial.params.items()},
                  **flatten(trial.experiment)}
        self._log_params(run.info.run_id, params)
        self.client.log_text(run.info.run_id, yaml.safe_dump(
            {"row": trial.row, "seed": trial.seed, "recipe": trial.recipe or None,
             **trial.experiment}, sort_keys=False), "config.yaml")
        return run.info.run_id

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])


def space_hash(path: str | Path) -> str:
    """SHA-256 of a space file, as tagged on the sweep's parent run."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def log_sweep_files(tracker: SweepTracker, run_id: str, space_file: Path,
                    trials: list[TrialSpec]) -> None:
    """The parent run's inputs as artifacts: the space file as written (``space/``) and every
    trial's resolved config (``config/trials.yaml``, by trial key)."""
    tracker.client.log_artifact(run_id, str(space_file), artifact_path="space")
    tracker.client.set_tag(run_id, SPACE_HASH_TAG, space_hash(space_file))
    tracker.client.log_text(run_id, yaml.safe_dump(resolved_trials(trials), sort_keys=False),
                            "config/trials.yaml")


def resolved_trials(trials: list[TrialSpec]) -> dict[str, dict[str, Any]]:
    """Every trial's resolved config by trial key (the parent run's ``config/trials.yaml``)."""
    return {t.key: {"row": t.row, "seed": t.seed, "recipe": t.recipe or None, **t.experiment}
            for t in trials}


def log_table_summary(client: MlflowClient, run_id: str, table: list[TableRow],
                      verdicts: list[Verdict], provenance: list[tuple[str, str]]) -> None:
    """The parent run's summary of a table: what ours ran on (``vidablate.ran_on.*`` tags),
    each claim's verdict (``vidablate.claim.<i>`` tags), their counts (``vidablate.claims.*``
    tags and ``claims_*`` metrics), the direction counts of the effects and each row's effect
    against the reference (``effect.<row>.<metric>`` metrics: mean of the paired change)."""
    tags = {f"vidablate.ran_on.{label}": text[:5000] for label, text in provenance}
    for i, v in enumerate(verdicts, 1):
        tags[f"vidablate.claim.{i}"] = f"{v.verdict} ({v.detail}): {v.claim.text}"[:5000]
    now = int(time.time() * 1000)
    metrics = []
    if verdicts:
        for kind, n in verdict_counts(verdicts).items():
            tags[f"vidablate.claims.{kind}"] = str(n)
            metrics.append(Metric(f"claims_{kind}", float(n), now, 0))
    if any(r.reference for r in table):
        for kind, n in direction_counts(table).items():
            metrics.append(Metric(f"effects_{kind}", float(n), now, 0))
    for key, value in row_summary(table).items():
        metrics.append(Metric(key, value, now, 0))
    tag_items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, max(len(metrics), len(tag_items)), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], tags=tag_items[i:i + 1000])


def row_summary(table: list[TableRow]) -> dict[str, float]:
    """The parent run's per-row metrics: ``ours.<row>.<metric>`` (mean over seeds),
    ``ours_std.<row>.<metric>``, ``paper.<row>.<metric>``, ``delta.<row>.<metric>`` (ours -
    paper), ``paper_effect.<row>.<metric>`` and ``effect.<row>.<metric>`` (change against the
    reference row, the paper's and ours paired by seed)."""
    out: dict[str, float] = {}
    for row in table:
        for metric, cell in row.cells.items():
            values = {"ours": cell.mean, "ours_std": cell.std, "paper": cell.paper,
                      "delta": cell.delta, "paper_effect": cell.paper_effect,
                      "effect": cell.effect.mean if cell.effect else None}
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    out[f"{name}.{row.name}.{metric}"] = float(value)
    return out


def seed_summary(table: list[TableRow], row: str, seed: int) -> dict[str, float]:
    """A child run's comparison metrics: ``paper.<metric>``, ``delta.<metric>`` (this seed's
    value - the paper's), ``paper_effect.<metric>`` and ``effect.<metric>`` (this seed's value
    - the reference row's of the same seed), so MLflow's compare view shows them by the
    run's own ``<metric>``."""
    by_name = {r.name: r for r in table}
    ref = next((r for r in table if r.reference), None)
    out: dict[str, float] = {}
    for metric, cell in by_name[row].cells.items():
        ours = cell.values.get(seed)
        if cell.paper is not None:
            out[f"paper.{metric}"] = cell.paper
            if ours is not None:
                out[f"delta.{metric}"] = ours - cell.paper
        if cell.paper_effect is not None:
            out[f"paper_effect.{metric}"] = cell.paper_effect
        if ref is not None and ref.name != row and ours is not None:
            ref_value = ref.cells[metric].values.get(seed)
            if ref_value is not None:
                out[f"effect.{metric}"] = ours - ref_value
    return out


def log_seed_summaries(tracker: SweepTracker, sweep_id: str, table: list[TableRow],
                       trials: list[TrialSpec]) -> None:
    """``seed_summary`` into every child run that exists."""
    now = int(time.time() * 1000)
    for t in trials:
        run_id = tracker.find_child(sweep_id, t.key)
        values = seed_summary(table, t.row, t.seed) if run_id else {}
        if values:
            tracker.client.log_batch(run_id, metrics=[
                Metric(k, v, now, 0) for k, v in values.items() if math.isfinite(v)])


_DRIVER_STATE: dict[str, Any] = {}

QUIET_WHEN_ZERO = ("corrupt_train", "corrupt_eval")
"""Counters charted per epoch only once non-zero (on clean data they would be flat lines)."""


def use_driver_state(tracking_uri: str, experiment: str, parent_id: str,
                     tags: dict[str, str] | None = None) -> None:
    """Set before ``Tuner.restore`` so restored callbacks log where this driver says."""
    _DRIVER_STATE.clear()
    _DRIVER_STATE.update(tracking_uri=tracking_uri, experiment=experiment, parent_id=parent_id,
                         tags=dict(tags or {}))


_LIVE: dict[str, MLflowTrialCallback] = {}
"""Sweep id -> the callback Tune calls (a restored Tuner unpickles its own copy)."""


def checkpoint_uri(path: str | None, storage: str | None) -> str | None:
    """A trial's last checkpoint as a URI. Ray Train reports it to Tune as a path on the
    storage's filesystem (``checkpoint_path``), which lacks the ``s3://`` of a cloud storage;
    ``vidablate predict RUN_ID`` reads the tag back."""
    if not path or "://" in path or not storage or "://" not in storage:
        return path
    return f"{storage.split('://', 1)[0]}://{path}"


def deliver_held(sweep_id: str, report_dir: Path, wait_s: float | None = None) -> None:
    """After ``fit``: deliver the writes a tracking outage held. If the store does not answer
    within ``wait_s`` (``outbox.WAIT_AT_END_S``), raise ``TrackingUnreachable`` naming them;
    they are saved to ``<report_dir>/undelivered-tracking.json``."""
    callback = _LIVE.get(sweep_id)
    if callback is None:
        return
    save = report_dir / "undelivered-tracking.json"
    missing = callback.undelivered(save_to=save, wait_s=wait_s)
    if missing:
        shown = "; ".join(missing[:6]) + (f"; and {len(missing) - 6} more"
                                          if len(missing) > 6 else "")
        raise TrackingUnreachable(
            f"the tracking store {_redact(callback.tracking_uri)} did not answer: "
            f"{len(missing)} writes were not delivered ({shown}); listed in {save}. The "
            f"trials' results and checkpoints are kept in the sweep's storage: run the same "
            f"command again once the store answers, and the missing epochs are logged from "
            f"the checkpoints")


def trial_times(sweep_id: str) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Each trial's (start, end) on this driver and its seconds inside the training loop."""
    callback = _LIVE.get(sweep_id)
    if callback is None:
        return {}, {}
    return {k: (a, b) for k, (a, b) in callback.spans.items()}, dict(callback.loop_s)


def trial_error(sweep_id: str, key: str) -> str:
    """The error text of a failed trial as the driver saw it (empty when none): what a trial
    result lacks when Tune could not write its error file to the storage (a bucket that
    denies writes)."""
    callback = _LIVE.get(sweep_id)
    return callback.errors.get(key, "") if callback is not None else ""


class MLflowTrialCallback(Callback):
    """Tune callback on the driver: creates (or finds again) a trial's child run when the trial
    starts, logs its per-epoch metrics, its status at the end, and prints one progress line
    per reported epoch. Every write goes through an ``Outbox``: while the tracking server
    does not answer, trials keep training and the writes wait, in order."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str, parent_id: str,
                 specs: dict[str, TrialSpec], epochs: dict[str, int], printer: bool = True,
                 tags: dict[str, str] | None = None, storage: str | None = None) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.storage = storage
        """The sweep's storage (the scheme of the checkpoint URIs)."""
        self.sweep_id, self.parent_id = sweep_id, parent_id
        self.specs = specs
        self.tags = dict(tags or {})
        self.run_ids: dict[str, str] = {}
        self.epochs = epochs
        self.printer = printer
        self.num_trials = 0
        self._client: MlflowClient | None = None
        self._started = time.time()
        self._logged: dict[str, int] = {}
        self._nonzero: set[tuple[str, str]] = set()
        self._began: dict[str, float] = {}
        """Trial key -> when this driver saw it start (for the ETA)."""
        self._steps: dict[str, tuple[int, int]] = {}
        """Trial key -> (epochs reported under this driver, the last epoch reported)."""
        self._done: set[str] = set()
        self._outbox: Outbox | None = None
        self._nodes: dict[str, list[str]] = {}
        """Run id -> the nodes it trained on, in order (read once from its tag)."""
        self.errors: dict[str, str] = {}
        """Trial key -> the error text Tune wrote on the driver's disk when the trial failed."""
        self.stopping = ""
        """The early-stopping scheduler of an HPO sweep (its description); empty = none."""
        self.spans: dict[str, list[float]] = {}
        """Trial key -> [start, last seen] on this driver (``sweep.timing``)."""
        self.loop_s: dict[str, float] = {}
        """Trial key -> seconds inside the training loop, summed over the epochs reported."""
        _LIVE[sweep_id] = self

    def __getstate__(self) -> dict[str, Any]:  # the client is rebuilt after a restore
        state = dict(self.__dict__)
        state["_client"] = None
        state["_outbox"] = None  # held writes are closures; a restored trial replays its history
        state["_logged"] = {}  # re-read from MLflow: the driver may have logged more since
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Tune unpickles the callback of the first driver on restore: take this driver's
        tracking URI, experiment and parent run (``use_driver_state``), find the child runs
        again by their tags, and restart the progress clock."""
        self.__dict__.update(state)
        self.__dict__.setdefault("storage", None)  # state saved by an older version
        self.__dict__.setdefault("_outbox", None)
        self.__dict__.setdefault("errors", {})
        self.__dict__.setdefault("stopping", "")
        self._started = time.time()
        self._began, self._steps, self._done, self._nodes = {}, {}, set(), {}
        self.spans, self.loop_s = {}, {}
        if _DRIVER_STATE:
            self.tracking_uri = _DRIVER_STATE["tracking_uri"]
            self.experiment = _DRIVER_STATE["experiment"]
            self.parent_id = _DRIVER_STATE["parent_id"]
            self.tags = _DRIVER_STATE["tags"]
            self.run_ids = {}
        _LIVE[self.sweep_id] = self

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(_redact(self.tracking_uri), self.printer)
        return self._outbox

    def undelivered(self, save_to: Path | None = None, wait_s: float | None = None) -> list[str]:
        """At the end of the sweep: deliver what an outage held (waiting up to ``wait_s``);
        the names of the writes that never reached the store (saved to ``save_to``)."""
        if self._outbox is None or not self._outbox.held:
            return []
        kw = {} if wait_s is None else {"wait_s": wait_s}
        return self._outbox.drain(save_to=save_to, **kw)

    def _key(self, trial: Any) -> str:
        return str(trial.config.get("trial"))

    def _spec(self, trial: Any) -> TrialSpec | None:
        return self.specs.get(self._key(trial))

    def _last_step(self, run_id: str) -> int:
        """The last epoch logged to a run (read from MLflow once per driver). A trial that
        restarts from a checkpoint older than its last report repeats epochs; their metrics
        are not logged a second time, so each run has one value per epoch."""
        if run_id not in self._logged:
            steps = [m.step for key in ("train_loss", "top1", "hm")
                     for m in self.client.get_metric_history(run_id, key)]
            self._logged[run_id] = max(steps, default=-1)
        return self._logged[run_id]

    def _run(self, trial: Any) -> str | None:
        key = self._key(trial)
        if key not in self.run_ids:
            spec = self._spec(trial)
            if spec is None:
                return None
            tracker = SweepTracker(self.tracking_uri, self.experiment, self.tags)
            self.run_ids[key] = tracker.child_run(self.sweep_id, self.parent_id, spec)
        return self.run_ids[key]

    def _charted(self, run_id: str, key: str, value: float) -> bool:
        if key in QUIET_WHEN_ZERO and value == 0 and (run_id, key) not in self._nonzero:
            return False
        self._nonzero.add((run_id, key))
        return True

    def _total(self, key: str) -> int:
        return int(self.epochs.get(key, self.epochs.get("*", 0)) or 0)

    def _keys(self, trials: list) -> list[str]:
        """Every trial of the sweep: a grid's keys are known up front (Tune creates the
        trials themselves only as slots free up); HPO trials not sampled yet count by number."""
        keys = [k for k in self.epochs if k != "*"]
        if not keys:
            keys = [self._key(t) for t in trials]
            keys += [f"?{i}" for i in range(max(self.num_trials - len(keys), 0))]
        return keys

    def _count(self, trials: list) -> str:
        total = len(self._keys(trials))
        done = self._done | {self._key(t) for t in trials if t.status in ("TERMINATED", "ERROR")}
        running = sum(t.status == "RUNNING" and self._key(t) not in done for t in trials)
        queued = max(total - len(done) - running, 0)
        return f"{len(done)}/{total} done, {running} running, {queued} queued"

    def eta(self, key: str, trials: list) -> tuple[float | None, float | None]:
        """Seconds left for this trial and for the table: epochs left times the mean epoch
        time seen so far under this driver, the table's spread over the trials running."""
        per_epoch = [(time.time() - self._began[k]) / n for k, (n, _) in self._steps.items()
                     if n and k in self._began and k not in self._done]
        if not per_epoch:
            return None, None
        epoch_s = sum(per_epoch) / len(per_epoch)
        last = self._steps.get(key, (0, 0))[1]
        trial_left = max(self._total(key) - last, 0) * epoch_s
        done = self._done | {self._key(t) for t in trials if t.status in ("TERMINATED", "ERROR")}
        left = sum(max(self._total(k) - self._steps.get(k, (0, 0))[1], 0)
                   for k in self._keys(trials) if k not in done)
        running = max(sum(t.status == "RUNNING" for t in trials), 1)
        return trial_left, left * epoch_s / running

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self._key(trial)

        def start() -> None:
            run_id = self._run(trial)
            if run_id:
                self.client.update_run(run_id, status="RUNNING")

        self.outbox.send(f"trial {key}: run RUNNING", start)
        self._began[key] = time.time()
        self.spans.setdefault(key, [self._began[key]] * 2)
        if self.printer:
            print(f"[{time.time() - self._started:6.0f}s] {key:<24} started   "
                  f"({self._count(trials)})", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        key = self._key(trial)
        result = dict(result)
        if isinstance(result.get(HISTORY_KEY), str):
            self.outbox.send(f"trial {key}: checkpointed epochs",
                             lambda: self._log_history(trial, result))
        if result.get(REPLAYED_KEY):
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        if isinstance(result.get(LOOP_TIME_KEY), (int, float)):
            self.loop_s[key] = self.loop_s.get(key, 0.0) + float(result[LOOP_TIME_KEY])
        if key in self.spans:
            self.spans[key][1] = time.time()

        def log() -> None:
            run_id = self._run(trial)
            if run_id and isinstance(result.get(DIVERGED_KEY), str):
                self.client.set_tag(run_id, FAILURE_TAG, result[DIVERGED_KEY][:5000])
            metrics = self._metrics(run_id, result, step, now) if run_id else []
            if run_id and metrics and step > self._last_step(run_id):
                self.client.log_batch(run_id, metrics=metrics)
                self._logged[run_id] = step
            if run_id and isinstance(result.get(KSHOT_KEY), str):
                self.client.log_text(run_id, result[KSHOT_KEY], f"{KSHOT_KEY}.json")
            if run_id and isinstance(result.get(NODE_KEY), str) and result[NODE_KEY]:
                self._log_node(run_id, result[NODE_KEY])

        self.outbox.send(f"trial {key}: epoch {step} metrics", log)
        n, _ = self._steps.get(key, (0, 0))
        self._steps[key] = (n + 1, step)
        self._began.setdefault(key, self._started)
        if self.printer:
            parts = [f"{name} {result[k]:5.1f}" for k, name in
                     (("base_acc", "base"), ("novel_acc", "novel"), ("hm", "hm"),
                      ("top1", "top1")) if k in result]
            trial_left, table_left = self.eta(key, trials)
            eta = "" if trial_left is None else \
                f"  ETA trial {_clock(trial_left)}, table {_clock(table_left)}"
            print(f"[{time.time() - self._started:6.0f}s] {key:<24} epoch {step}/"
                  f"{self._total(key) or '?'}  loss {result.get('train_loss', float('nan')):.3f}"
                  f"  {'  '.join(parts)}{eta}   ({self._count(trials)})", flush=True)

    def _metrics(self, run_id: str, values: dict[str, Any], step: int, now: int) -> list[Metric]:
        return [Metric(k, float(v), now, step) for k, v in values.items()
                if tracked(k) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and self._charted(run_id, k, v)]

    def _log_node(self, run_id: str, node: str) -> None:
        """Tag the node of this epoch; append it to the run's node list when it changed."""
        if run_id not in self._nodes:
            known = self.client.get_run(run_id).data.tags.get(NODES_TAG, "")
            self._nodes[run_id] = [n for n in known.split(",") if n]
        if self._nodes[run_id][-1:] == [node]:
            return
        nodes = [*self._nodes[run_id], node]  # kept only once the store has it (an outage)
        self.client.log_batch(run_id, tags=[RunTag(NODE_TAG, node),
                                            RunTag(NODES_TAG, ",".join(nodes)[:5000])])
        self._nodes[run_id] = nodes

    def _log_history(self, trial: Any, result: dict) -> None:
        """Log the checkpointed epochs a restored trial carries that MLflow lacks (trained
        after the driver stopped listening), in order, each once."""
        run_id = self._run(trial)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        current = int(result.get("epoch", 0)) if not result.get(REPLAYED_KEY) else None
        for entry in json.loads(result[HISTORY_KEY]):
            step = int(entry.get("epoch", 0))
            if step <= self._last_step(run_id) or (current is not None and step >= current):
                continue
            metrics = self._metrics(run_id, entry, step, now)
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
                self._logged[run_id] = step

    def _finished(self, trials: list, trial: Any, how: str) -> None:
        key = self._key(trial)
        self._done.add(key)
        if key in self.spans:
            self.spans[key][1] = time.time()
        if self.printer:
            print(f"[{time.time() - self._started:6.0f}s] {key:<24} {how:<9} "
                  f"({self._count(trials)})", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = dict(trial.last_result or {})
        early = self.stopping and int(last.get("epoch", 0)) < self._total(self._key(trial))
        self._finished(trials, trial, "stopped" if early else "finished")
        checkpoint = checkpoint_uri(last.get(CHECKPOINT_PATH_KEY) or _tune_checkpoint(trial),
                                    self.storage)
        end = int(time.time() * 1000)

        def finish() -> None:
            run_id = self._run(trial)
            if run_id and last.get(REPLAYED_KEY):
                # finished under an earlier driver: keep its status and end time
                info_ = self.client.get_run(run_id).info
                self.client.set_terminated(run_id, info_.status if info_.status != "RUNNING"
                                           else "FINISHED", end_time=info_.end_time)
            elif run_id:
                if checkpoint:
                    self.client.set_tag(run_id, CHECKPOINT_TAG, str(checkpoint))
                diverged = isinstance(last.get(DIVERGED_KEY), str)
                trained, total = int(last.get("epoch", 0)), self._total(self._key(trial))
                stopped = bool(self.stopping) and not diverged and trained < total
                if stopped:
                    self.client.set_tag(run_id, STOPPED_TAG, (
                        f"{self.stopping}: stopped after epoch {trained} of {total}"))
                self.client.set_terminated(run_id, "FAILED" if diverged else
                                           "KILLED" if stopped else "FINISHED", end_time=end)

        self.outbox.send(f"trial {self._key(trial)}: run FINISHED", finish)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trials, trial, "failed")
        try:  # Tune reads it back from the storage, which lacks it when the storage refused it
            self.errors[self._key(trial)] = Path(trial.error_file).read_text()[-4000:]
        except (OSError, TypeError):  # no error file (TypeError: no local path)
            pass
        end = int(time.time() * 1000)

        def fail() -> None:
            run_id = self._run(trial)
            if run_id:
                self.client.set_terminated(run_id, "FAILED", end_time=end)

        self.outbox.send(f"trial {self._key(trial)}: run FAILED", fail)


def _tune_checkpoint(trial: Any) -> str | None:
    """The path of a trial's last Tune checkpoint (a loop run in the trial's own process)."""
    checkpoint = getattr(trial, "checkpoint", None)
    return getattr(checkpoint, "path", None) if checkpoint is not None else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class HPOTrialCallback(MLflowTrialCallback):
    """MLflow logging for Optuna-sampled trials: the sampled values are the child run's
    params. Trial keys come from Tune's trial ids, stable across restores."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str, parent_id: str,
                 common: dict[str, Any], seed: int, epochs: int, num_trials: int,
                 tags: dict[str, str] | None = None, storage: str | None = None,
                 stopping: str = "") -> None:
        super().__init__(tracking_uri, experiment, sweep_id, parent_id, {}, {"*": epochs},
                         tags=tags, storage=storage)
        self.stopping = stopping
        self.common, self.seed, self.num_trials = common, seed, num_trials

    def _key(self, trial: Any) -> str:
        return hpo_trial_key(trial.trial_id)

    def _spec(self, trial: Any) -> TrialSpec | None:
        sampled = decode_hpo_config(trial.config)
        return TrialSpec(self._key(trial), "hpo", self.seed,
                         merge(self.common, dotted_to_nested(sampled)), sampled)


def hpo_trial_key(trial_id: str) -> str:
    """``hpo-<Tune trial id>``: Tune keeps a trial's id when an experiment is restored."""
    return f"hpo-{trial_id}"


def encode_hpo_key(dotted: str) -> str:
    """Tune config keys must not contain dots or slashes (Tune flattens with '/')."""
    return dotted.replace(".", "__")


def decode_hpo_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in config.items()}


_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<kind>[A-Z]\w*(?:Error|Exception|Interrupt))"
                     r"(?:\([^)]*\))?: (?P<message>.+)$")
_WRAPPERS = ("RayTaskError", "WorkerGroupError", "TrainingFailedError", "RayActorError",
             "TuneError")
"""Ray's own wrappers around the error a trial raised: the reason is the innermost one."""


def failure_reason(error: str) -> str:
    """The error a failed trial raised, from the text Tune keeps (a wrapped traceback): the
    last ``Kind: message`` line that is not one of Ray's wrappers, e.g. ``NoSpaceError: no
    space left on <path>: need 3 MiB, 0 free``."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    found = [(i, m) for i, m in enumerate(map(_RAISED.match, lines)) if m]
    inner = [(i, m) for i, m in found if m["kind"] not in _WRAPPERS]
    if not (inner or found):
        return lines[-1][:500] if lines else ""
    i, best = (inner or found)[-1]
    message = best["message"]
    if message.endswith(":") and i + 1 < len(lines):  # "...controller error:" + the cause
        message = f"{message} {lines[i + 1]}"
    return f"{best['kind']}: {message}"[:500]


def record_failures(tracker: SweepTracker, sid: str, parent_id: str,
                    failed: list[tuple[str, str]]) -> None:
    """Each failed trial's reason (from its error text: (trial key, error) pairs) on its child
    run, and the first on the parent run, as the ``vidablate.failure`` tag."""
    reasons = []
    for key, error in failed:
        reason = failure_reason(error)
        reasons.append(f"{key}: {reason}")
        child = tracker.find_child(sid, key)
        if child:
            tracker.client.set_tag(child, FAILURE_TAG, reason)
    if reasons:
        tracker.client.set_tag(parent_id, FAILURE_TAG, (
            f"{len(reasons)} trial(s) failed; first {reasons[0]}")[:5000])

"""Ctrl-C and SIGTERM stop a sweep gracefully.

Tune handles the first SIGINT itself: it stops stepping, saves the experiment state with the
unfinished trials still unfinished (so the next launch continues them), and ``fit`` returns.
SIGTERM (a scheduler's stop, ``kill``) is routed to the same path; Ray's own SIGTERM handler
exits at once and leaves the MLflow runs RUNNING. After ``fit`` the driver marks the runs of the
unfinished trials and the parent run KILLED, prints how to resume and exits 128 + the signal
number (130 / 143). A second Ctrl-C skips Tune's last save and ends the driver at once.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from mlflow.tracking import MlflowClient

from ..errors import SweepInterrupted
from .preflight import _read_tune_state
from .provenance import COMMAND_TAG
from .tracking import SWEEP_TAG, SweepTracker

INTERRUPTED_TAG = "vidablate.interrupted"
"""Set on the parent run (and the child runs it stopped) of an interrupted sweep: the signal."""

_received: list[int] = []


def install() -> None:
    """Route SIGTERM to Tune's graceful SIGINT path (call after ``ray.init``, which installs
    Ray's exiting handler, on the main thread)."""
    _received.clear()

    def on_term(signum: int, frame: Any) -> None:
        _received.append(signum)
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)


def signal_received() -> int:
    """The signal that stopped the sweep: SIGTERM when it came, else SIGINT (Tune's)."""
    return signal.SIGTERM if signal.SIGTERM in _received else signal.SIGINT


def unfinished(exp_path: str) -> tuple[int, int]:
    """(unfinished, all) trials in the Tune state ``fit`` saved last: a trial neither finished
    nor errored there is one a signal stopped (Tune marks it TERMINATED in memory while it
    cleans up, but saves it as it was, so the next launch continues it)."""
    trials = [json.loads(entry[0]) for entry in _read_tune_state(exp_path)["trial_data"]]
    left = [t for t in trials if t.get("status") not in ("TERMINATED", "ERROR")]
    return len(left), len(trials)


def stop_runs(client: MlflowClient, experiment_id: str, sweep_id: str, parent_id: str,
              signum: int) -> list[str]:
    """Mark the sweep's RUNNING runs (children, then the parent) KILLED with the signal's
    name; returns the child run ids it stopped."""
    name = signal.Signals(signum).name
    runs = client.search_runs(
        [experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' and attributes.status = 'RUNNING'",
        max_results=10_000)
    stopped = []
    for run in runs:
        if run.info.run_id == parent_id:
            continue
        client.set_tag(run.info.run_id, INTERRUPTED_TAG, name)
        client.set_terminated(run.info.run_id, "KILLED")
        stopped.append(run.info.run_id)
    client.set_tag(parent_id, INTERRUPTED_TAG, name)
    client.set_terminated(parent_id, "KILLED")
    return stopped


def fit(tuner: Any, tracker: SweepTracker, sweep_id: str, parent_id: str,
        exp_path: str | None = None) -> Any:
    """``tuner.fit()``; when a signal stopped it, mark the runs KILLED and raise
    SweepInterrupted with the command that resumes the sweep. ``exp_path``: the experiment's
    URI (Tune's ``experiment_path`` drops the ``s3://`` of a cloud storage)."""
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C during Tune's last save
        raise _interrupted(tracker, sweep_id, parent_id, None, signal.SIGINT) from None
    left, total = unfinished(exp_path or grid.experiment_path)
    # a trial that errored while its storage refused writes is saved as it was last written
    # (RUNNING): it failed, no signal stopped it
    left -= min(left, getattr(grid, "num_errors", 0))
    if left:
        raise _interrupted(tracker, sweep_id, parent_id, (total - left, total),
                           signal_received())
    return grid


def _interrupted(tracker: SweepTracker, sweep_id: str, parent_id: str,
                 counts: tuple[int, int] | None, signum: int) -> SweepInterrupted:
    stop_runs(tracker.client, tracker.experiment_id, sweep_id, parent_id, signum)
    done = f"{counts[0]}/{counts[1]} trials finished, the rest stopped at their last " \
        f"checkpoint" if counts else "trials stopped at their last checkpoint"
    command = tracker.run_tags.get(COMMAND_TAG) or "the same command"
    return SweepInterrupted(signum, (
        f"sweep {sweep_id} interrupted by {signal.Signals(signum).name}: {done}; their MLflow "
        f"runs are KILLED. Resume with: {command}"))

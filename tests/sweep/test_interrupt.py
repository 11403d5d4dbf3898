"""A signal during ``fit``: the unfinished trials' runs and the parent end KILLED with the
signal's name, the error carries the resume command and the exit code 128 + signal."""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from vidablate.sweep import interrupt
from vidablate.sweep.provenance import run_tags
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space
from vidablate.sweep.tracking import SweepTracker


class FakeTuner:
    """``fit`` saves a Tune state with these trial statuses (as Tune's state file holds them)
    and returns a grid pointing at it."""

    def __init__(self, folder, statuses: list[str], raise_kb: bool = False,
                 errors: int = 0) -> None:
        self.folder, self.statuses, self.raise_kb = folder, statuses, raise_kb
        self.errors = errors

    def fit(self):
        if self.raise_kb:
            raise KeyboardInterrupt
        data = [[json.dumps({"status": s, "trial_id": str(i)}), "{}"]
                for i, s in enumerate(self.statuses)]
        (self.folder / "experiment_state-2026.json").write_text(json.dumps({"trial_data": data}))
        return SimpleNamespace(experiment_path=str(self.folder), num_errors=self.errors)


@pytest.fixture
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "e", run_tags(["vidablate", "ablate", "space=isclip_modules"]))
    parent, _ = tracker.parent_run("sw", {})
    trials = expand(load_space(SHIPPED_SPACES / "isclip_modules.yaml"), seeds=[0])
    done = tracker.child_run("sw", parent, trials[0])
    tracker.client.set_terminated(done, "FINISHED")
    running = tracker.child_run("sw", parent, trials[1])
    tracker.client.update_run(running, status="RUNNING")
    return SimpleNamespace(tracker=tracker, parent=parent, done=done, running=running,
                           client=MlflowClient(uri))


def test_finished_fit_passes_through(sweep, tmp_path):
    grid = interrupt.fit(FakeTuner(tmp_path, ["TERMINATED", "ERROR"]), sweep.tracker, "sw",
                         sweep.parent)
    assert grid.experiment_path == str(tmp_path)
    assert sweep.client.get_run(sweep.parent).info.status == "RUNNING"


def test_a_trial_that_errored_unsaved_is_not_an_interruption(sweep, tmp_path):
    """Storage that refused writes keeps the failed trial's last saved status (RUNNING);
    the in-memory grid knows it errored: the sweep failed, no signal stopped it."""
    grid = interrupt.fit(FakeTuner(tmp_path, ["TERMINATED", "RUNNING"], errors=1),
                         sweep.tracker, "sw", sweep.parent)
    assert grid.num_errors == 1
    assert sweep.client.get_run(sweep.parent).info.status == "RUNNING"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_unfinished_trials_mean_interrupted(sweep, signum, monkeypatch, tmp_path):
    monkeypatch.setattr(interrupt, "_received", [signum] if signum == signal.SIGTERM else [])
    with pytest.raises(interrupt.SweepInterrupted) as err:
        interrupt.fit(FakeTuner(tmp_path, ["TERMINATED", "RUNNING", "PENDING"]), sweep.tracker, "sw",
                      sweep.parent)
    assert err.value.code == 128 + signum
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: 1/3 trials finished" in str(err.value)
    assert "Resume with: vidablate ablate space=isclip_modules" in str(err.value)
    for run, status in ((sweep.parent, "KILLED"), (sweep.running, "KILLED"),
                        (sweep.done, "FINISHED")):
        info = sweep.client.get_run(run)
        assert info.info.status == status
        assert (info.data.tags.get(interrupt.INTERRUPTED_TAG) == name) == (status == "KILLED")


def test_second_ctrl_c_still_marks_the_runs(sweep):
    with pytest.raises(interrupt.SweepInterrupted) as err:
        interrupt.fit(FakeTuner(None, [], raise_kb=True), sweep.tracker, "sw", sweep.parent)
    assert err.value.code == 130
    assert sweep.client.get_run(sweep.running).info.status == "KILLED"


def test_sigterm_is_routed_to_sigint(monkeypatch):
    seen = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupt.install()
        signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 5
        while not seen and time.time() < deadline:
            time.sleep(0.01)
        assert seen == [signal.SIGINT]
        assert interrupt.signal_received() == signal.SIGTERM
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

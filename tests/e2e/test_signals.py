"""Ctrl-C (SIGINT) and SIGTERM to the driver mid-trial, then the same command again, on the
embedded default: the driver exits 130 / 143 with the resume command, leaves no MLflow run
RUNNING (the stopped trial's run and the parent are KILLED), and the re-run completes the
trial with exactly one value per epoch in MLflow and the same final result as a run that was
never interrupted. Prints what it measured (``pytest -s``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.faults_helpers import launch, wait_until

pytestmark = pytest.mark.e2e

BUDGET = 420
ABLATE = [sys.executable, str(REPO / "jobs" / "ablate.py")]
EPOCHS = 8
ARGS = ["space=isclip_modules", "rows=[baseline]", "seeds=[0]", "num_cpus=2",
        f"trainer.epochs={EPOCHS}", "data.train_per_class=8", "data.test_per_class=1",
        "trainer.batch_size=8"]


def _children(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("isclip_modules")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return runs


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same trial run once without a signal: its per-epoch train loss and final hm."""
    tmp = tmp_path_factory.mktemp("clean")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = subprocess.run(ABLATE + ARGS + [f"tracking_uri={uri}"], cwd=tmp,
                         capture_output=True, text=True, timeout=BUDGET)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (child,) = [r for r in _children(uri) if r.data.tags.get("vidablate.kind") == "trial"]
    return {"train_loss": _history(uri, child.info.run_id, "train_loss"),
            "hm": child.data.metrics["hm"]}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_stops_gracefully_and_the_rerun_completes(ablate_cmd, tmp_path, signum,
                                                        uninterrupted):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + ARGS + [f"tracking_uri={uri}"]
    first = launch(cmd, tmp_path, BUDGET)
    try:
        wait_until("epoch 2", lambda: any(e >= 2 for _, _, e in first.progress()), BUDGET,
                   first, 0.05)
        t_signal = time.time()
        os.kill(first.pid, signum)
        code = first.wait(120)
        stop_s = time.time() - t_signal
    finally:
        first.kill_session()
        first.dump("first")
    assert code == 128 + signum, f"exit code {code}{first.tail()}"
    assert "Resume with:" in first.stderr and "space=isclip_modules" in first.stderr, first.tail()
    assert "Traceback" not in first.stderr, first.tail()
    runs = _children(uri)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"], \
        [(r.data.tags.get("vidablate.kind"), r.info.status) for r in runs]
    name = signal.Signals(signum).name
    assert {r.data.tags.get("vidablate.interrupted") for r in runs} == {name}
    logged_before = max(e for _, _, e in first.progress())

    again = launch(cmd, tmp_path, BUDGET)
    try:
        code = again.wait(BUDGET)
    finally:
        again.kill_session()
        again.dump("again")
    assert code == 0, f"re-run exit code {code}{again.tail()}"
    runs = _children(uri)
    parents = [r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 1, (len(parents), len(children))
    assert parents[0].info.status == "FINISHED" and children[0].info.status == "FINISHED"
    losses = _history(uri, children[0].info.run_id, "train_loss")
    assert [s for s, _ in losses] == list(range(1, EPOCHS + 1)), losses
    resumed_at = min(e for _, _, e in again.progress())
    print(f"\n[{name}] driver stopped {stop_s:.1f} s after the signal, exit {128 + signum}; "
          f"epochs logged before: {logged_before}, the re-run reported from epoch "
          f"{resumed_at}; MLflow train_loss steps {[s for s, _ in losses]}")
    # the resumed trial continues the same computation: same losses, same final result
    assert [round(v, 4) for _, v in losses] == \
        [round(v, 4) for _, v in uninterrupted["train_loss"]]
    assert children[0].data.metrics["hm"] == pytest.approx(uninterrupted["hm"], abs=1e-6)

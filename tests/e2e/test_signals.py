"""Ctrl-C (SIGINT), then SIGTERM, to the driver mid-trial, each followed by the same command,
on the embedded default: the driver exits 130 / 143 with the resume command and leaves no
MLflow run RUNNING (the stopped trial's run and the parent are KILLED); the last run completes
the trial with exactly one value per epoch in MLflow and the same losses and final result as a
run that was never interrupted. Prints what it measured (``pytest -s``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.faults_helpers import launch, run_to_end, wait_until

pytestmark = pytest.mark.e2e

BUDGET = 420
ABLATE = [sys.executable, str(REPO / "jobs" / "ablate.py")]
EPOCHS = 7
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


def _stop(cli, signum: int, after_epoch: int) -> tuple[int, float]:
    """Send ``signum`` to the driver once it reported ``after_epoch``; (exit code, seconds the
    driver took to stop)."""
    wait_until(f"epoch {after_epoch}", lambda: any(e >= after_epoch for _, _, e in cli.progress()),
               BUDGET, cli, 0.05)
    t_signal = time.time()
    os.kill(cli.pid, signum)
    code = cli.wait(120)
    return code, time.time() - t_signal


def _check_stopped(uri: str, cli, signum: int) -> None:
    name = signal.Signals(signum).name
    assert "Resume with:" in cli.stderr and "space=isclip_modules" in cli.stderr, cli.tail()
    assert "Traceback" not in cli.stderr, cli.tail()
    runs = _children(uri)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"], \
        [(r.data.tags.get("vidablate.kind"), r.info.status) for r in runs]
    assert {r.data.tags.get("vidablate.interrupted") for r in runs} == {name}
    assert {r.info.status for r in runs} == {"KILLED"}


def test_sigint_then_sigterm_then_the_same_command_completes(ablate_cmd, tmp_path,
                                                             uninterrupted):
    """Ctrl-C in epoch 2, the same command, SIGTERM two epochs later, the same command again."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + ARGS + [f"tracking_uri={uri}"]
    measured = []
    for name, signum in (("sigint", signal.SIGINT), ("sigterm", signal.SIGTERM)):
        cli = launch(cmd, tmp_path, BUDGET)
        try:
            start = min((e for _, _, e in cli.progress()), default=1)
            code, stop_s = _stop(cli, signum, 2 if signum == signal.SIGINT else 4)
        finally:
            cli.kill_session()
            cli.dump(name)
        assert code == 128 + signum, f"exit code {code}{cli.tail()}"
        _check_stopped(uri, cli, signum)
        seen = [e for _, _, e in cli.progress()]
        measured.append(f"{name}: reported epochs {seen[0] if seen else start}-"
                        f"{seen[-1] if seen else '?'}, stopped {stop_s:.1f} s after the signal, "
                        f"exit {code}")

    again, code = run_to_end(cmd, tmp_path, BUDGET, "again")
    assert code == 0, f"re-run exit code {code}{again.tail()}"
    runs = _children(uri)
    parents = [r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 1, (len(parents), len(children))
    assert parents[0].info.status == "FINISHED" and children[0].info.status == "FINISHED"
    losses = _history(uri, children[0].info.run_id, "train_loss")
    assert [s for s, _ in losses] == list(range(1, EPOCHS + 1)), losses
    resumed = [e for _, _, e in again.progress()]
    print(f"\n[signals] {'; '.join(measured)}; the last run reported epochs {resumed[0]}-"
          f"{resumed[-1]}; MLflow train_loss steps {[s for s, _ in losses]}")
    # the resumed trial continued the same computation: same losses, same final result
    assert [round(v, 4) for _, v in losses] == \
        [round(v, 4) for _, v in uninterrupted["train_loss"]]
    assert children[0].data.metrics["hm"] == pytest.approx(uninterrupted["hm"], abs=1e-6)

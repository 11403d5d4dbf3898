"""Two copies of the same command at once, with no tracking store yet: one runs the table, the
other stops at once with an ``error:`` line naming the running one (exit 2, no Ray started, no
run created); every trial trains once and MLflow has one value per epoch. (Two different
tables creating one new store together: ``tests/sweep/test_lock.py``.)"""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.faults_helpers import Cli

pytestmark = pytest.mark.e2e

BUDGET = 420
EPOCHS = 2
ARGS = ["seeds=[0]", "num_cpus=2", f"trainer.epochs={EPOCHS}",
        "data.train_per_class=2", "data.test_per_class=1", "trainer.batch_size=8"]


def test_second_copy_of_a_sweep_fails_at_once(ablate_cmd, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + ["space=isclip_modules", "rows=[baseline]", *ARGS, f"tracking_uri={uri}"]
    a, b = Cli(cmd, tmp_path), Cli(cmd, tmp_path)
    try:
        # the loser is the one that exits first; it must not wait for the winner's table
        deadline = time.time() + BUDGET
        while a.proc.poll() is None and b.proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        loser, winner = (a, b) if a.proc.poll() is not None else (b, a)
        lost_after = time.time() - loser.started
        assert loser.wait(10) == 2, loser.tail()
        assert winner.wait(BUDGET) == 0, winner.tail()
    finally:
        for cli, name in ((a, "a"), (b, "b")):
            cli.kill_session()
            cli.dump(name)
    (line,) = [x for x in loser.stdout.splitlines() if x.startswith("error:")]
    assert "this sweep is already running" in line and f"pid {winner.pid}" in line, line
    assert "Started a local Ray instance" not in loser.stderr
    assert winner.proc.poll() is not None
    print(f"\n[two launches] the second stopped {lost_after:.1f} s after its start: {line}")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("isclip_modules").experiment_id])
    kinds = sorted(r.data.tags.get("vidablate.kind") for r in runs)
    assert kinds == ["sweep", "trial"], kinds
    (child,) = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train_loss"))
    assert steps == list(range(1, EPOCHS + 1)), steps

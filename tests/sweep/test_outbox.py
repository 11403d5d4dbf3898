"""Tracking writes through an outage: held in order while the store does not answer, delivered
when it answers again, named and saved when it never does. Unit cases with a store that fails
on cue, then a real MLflow server (PostgreSQL, artifacts in S3) stopped and started mid-trial."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vidablate.errors import TrackingUnreachable
from vidablate.sweep import outbox as outbox_mod
from vidablate.sweep.outbox import Outbox, unreachable
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space
from vidablate.sweep.tracking import MLflowTrialCallback, SweepTracker, deliver_held

DOWN = MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed "
                       "with exception HTTPConnectionPool(host='127.0.0.1', port=1): Max retries "
                       "exceeded with url (Caused by NewConnectionError: Connection refused)")


class Store:
    """Answers after ``fail`` refused attempts; records what it received, in order."""

    def __init__(self, fail: int) -> None:
        self.fail, self.got, self.attempts = fail, [], 0

    def op(self, name: str):
        def run() -> None:
            self.attempts += 1
            if self.fail > 0:
                self.fail -= 1
                raise DOWN
            self.got.append(name)
        return run


def test_connection_failures_are_told_from_rejected_requests():
    assert unreachable(DOWN)
    assert unreachable(RuntimeError("x")) is False
    chained = MlflowException("wrapped")
    chained.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert unreachable(chained)
    assert not unreachable(MlflowException("INVALID_PARAMETER_VALUE: param 'lr' changed"))


def test_writes_are_held_in_order_and_delivered_when_the_store_answers(capsys, monkeypatch):
    monkeypatch.setattr(outbox_mod, "RETRY_EVERY_S", 0.0)
    store = Store(fail=3)
    box = Outbox("http://tracking:5000")
    for name in ("a", "b", "c"):
        box.send(name, store.op(name))
    assert store.got == [] and [w for w, _ in box.held] == ["a", "b", "c"]
    out = capsys.readouterr().out
    assert out.count("does not answer") == 1 and "training goes on" in out
    box.send("d", store.op("d"))
    assert store.got == ["a", "b", "c", "d"] and not box.held
    out = capsys.readouterr().out
    assert "answers again" in out and "4 held writes delivered" in out
    with pytest.raises(MlflowException, match="INVALID"):  # a rejected write is a bug: raised
        box.send("bad", lambda: (_ for _ in ()).throw(MlflowException("INVALID_PARAMETER")))


def test_retries_wait_between_attempts_while_down(monkeypatch):
    store = Store(fail=100)
    box = Outbox("s")
    for name in "abcdef":
        box.send(name, store.op(name))
    assert store.attempts == 1  # one refused attempt, then no new try within RETRY_EVERY_S


def test_what_never_arrives_is_named_and_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_mod, "RETRY_EVERY_S", 0.05)
    store = Store(fail=10**6)
    box = Outbox("http://tracking:5000", printer=False)
    box.send("trial x: epoch 3 metrics", store.op("3"))
    box.send("trial x: run FINISHED", store.op("f"))
    start = time.monotonic()
    missing = box.drain(wait_s=0.3, save_to=tmp_path / "u.json")
    assert 0.3 <= time.monotonic() - start < 2
    assert missing == ["trial x: epoch 3 metrics", "trial x: run FINISHED"]
    assert json.loads((tmp_path / "u.json").read_text())["undelivered"] == missing


def test_a_tracking_server_outage_mid_trial_loses_and_duplicates_nothing(mlflow_server,
                                                                       tmp_path, capsys):
    """Epochs reported while the server is down wait; after a restart on the same port they
    arrive once, in order, and the run ends FINISHED. A server that stays down ends the sweep
    with the writes named and saved."""
    server = mlflow_server("outage")
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    a, b = expand(space, seeds=[0])[:2]
    cb = MLflowTrialCallback(server.uri, "outage", "sw", "p", {a.key: a, b.key: b},
                             {a.key: 4, b.key: 2})
    ta = SimpleNamespace(config={"trial": a.key}, last_result={}, status="RUNNING")
    tb = SimpleNamespace(config={"trial": b.key}, last_result={}, status="RUNNING")
    cb.on_trial_start(0, [ta], ta)
    for epoch in (1, 2):
        cb.on_trial_result(0, [ta], ta, {"epoch": epoch, "train_loss": 10.0 - epoch})
    server.stop()
    start = time.monotonic()
    for epoch in (3, 4):
        cb.on_trial_result(0, [ta], ta, {"epoch": epoch, "train_loss": 10.0 - epoch})
    ta.last_result = {"epoch": 4}
    cb.on_trial_complete(0, [ta], ta)
    cb.on_trial_start(0, [ta, tb], tb)  # a trial that starts during the outage
    assert time.monotonic() - start < 15  # the driver is not stalled by MLflow's retries
    assert len(cb.outbox.held) == 4 and "does not answer" in capsys.readouterr().out
    server.start()
    deliver_held("sw", tmp_path)
    client = MlflowClient(server.uri)
    tracker = SweepTracker(server.uri, "outage")
    run_a = tracker.find_child("sw", a.key)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_a, "train_loss")) \
        == [(e, 10.0 - e) for e in (1, 2, 3, 4)]
    assert client.get_run(run_a).info.status == "FINISHED"
    runs = client.search_runs([tracker.experiment_id])
    assert sorted(r.data.tags["vidablate.trial_key"] for r in runs) == [a.key, b.key]
    # the server goes away again and does not come back
    server.stop()
    cb.on_trial_result(0, [tb], tb, {"epoch": 1, "train_loss": 1.0})
    with pytest.raises(TrackingUnreachable, match=rf"trial {b.key}: epoch 1 metrics") as err:
        deliver_held("sw", tmp_path, wait_s=1)
    assert "undelivered-tracking.json" in str(err.value)
    assert json.loads((tmp_path / "undelivered-tracking.json").read_text())["undelivered"] == \
        [f"trial {b.key}: epoch 1 metrics"]

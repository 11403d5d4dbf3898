"""MLflow conventions of a sweep, read back with the MLflow client: source/version/command tags,
the space file and resolved configs as artifacts, paper / ours / delta / effect metrics side by
side for the compare view, child runs created when their trial starts, quiet zero counters."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from vidablate.report.table import TrialOutcome, build_table
from vidablate.sweep.provenance import run_tags
from vidablate.sweep.space import SHIPPED_SPACES, expand, load_space
from vidablate.sweep.tracking import (
    HPOTrialCallback,
    MLflowTrialCallback,
    SweepTracker,
    log_seed_summaries,
    log_sweep_files,
    log_table_summary,
)
from vidablate.train.keys import HISTORY_KEY, REPLAYED_KEY

HM = {("baseline", 0): 50.0, ("baseline", 1): 52.0, ("baseline", 2): 51.0,
      ("sirm", 0): 53.0, ("sirm", 1): 51.0, ("sirm", 2): 55.0,
      ("sgam", 0): 49.0, ("sgam", 1): 52.5, ("sgam", 2): 50.0,
      ("sirm_sgam", 0): 60.0, ("sirm_sgam", 1): 58.0, ("sirm_sgam", 2): 59.0}
"""Made-up results of a 3-seed IS-CLIP Table II: the input of the summary, not a result."""


@pytest.fixture
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    trials = expand(space, seeds=[0, 1, 2])
    tracker = SweepTracker(uri, "isclip_modules", run_tags(["vidablate", "ablate",
                                                            "space=isclip_modules"]))
    parent, created = tracker.parent_run("sw1", {"space": space.name})
    for t in trials:
        tracker.child_run("sw1", parent, t)
    outcomes = [TrialOutcome(t.row, t.seed, {"hm": HM[(t.row, t.seed)], "base_acc": 90.0,
                                             "novel_acc": 40.0}) for t in trials]
    table = build_table(space, outcomes)
    log_table_summary(tracker.client, parent, table, [], [("data", "synthetic")])
    log_seed_summaries(tracker, "sw1", table, trials)
    log_sweep_files(tracker, parent, space.path, trials)
    return SimpleNamespace(client=MlflowClient(uri), parent=parent, trials=trials,
                           tracker=tracker, space=space, created=created)


def test_compare_view_has_paper_ours_and_deltas_per_child(sweep):
    runs = sweep.client.search_runs([sweep.tracker.experiment_id],
                                    "tags.`vidablate.kind` = 'trial'")
    assert len(runs) == 12
    paper = {r.name: r.paper for r in sweep.space.rows}
    for run in runs:
        row, seed = run.data.tags["vidablate.row"], int(run.data.tags["vidablate.seed"])
        m = run.data.metrics
        assert m["paper.hm"] == paper[row]["hm"]
        assert m["delta.hm"] == pytest.approx(HM[(row, seed)] - paper[row]["hm"])
        if row == "baseline":  # the reference row has no change against itself
            assert "effect.hm" not in m and "paper_effect.hm" not in m
        else:
            assert m["paper_effect.hm"] == pytest.approx(paper[row]["hm"] -
                                                         paper["baseline"]["hm"])
            assert m["effect.hm"] == pytest.approx(HM[(row, seed)] - HM[("baseline", seed)])


def test_parent_carries_per_row_summaries(sweep):
    m = sweep.client.get_run(sweep.parent).data.metrics
    assert m["ours.sirm_sgam.hm"] == pytest.approx(59.0)
    assert m["ours_std.sirm_sgam.hm"] == pytest.approx(1.0)
    assert m["paper.sirm_sgam.hm"] == 79.0
    assert m["delta.sirm_sgam.hm"] == pytest.approx(59.0 - 79.0)
    assert m["paper_effect.sirm_sgam.hm"] == pytest.approx(79.0 - 74.7)
    assert m["effect.sirm_sgam.hm"] == pytest.approx(8.0)  # paired: (10 + 6 + 8) / 3
    assert "effect.baseline.hm" not in m


def test_runs_name_the_code_versions_and_command(sweep):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for run_id in (sweep.parent, sweep.tracker.find_child("sw1", sweep.trials[0].key)):
        tags = sweep.client.get_run(run_id).data.tags
        assert tags["mlflow.source.git.commit"] == head
        assert tags["vidablate.git.dirty"] in ("true", "false")
        assert tags["vidablate.version.torch"] == metadata.version("torch")
        assert tags["vidablate.version.mlflow"] == metadata.version("mlflow")
        assert tags["vidablate.command"] == "vidablate ablate space=isclip_modules"


def test_space_file_and_resolved_configs_are_artifacts(sweep, tmp_path):
    client, parent = sweep.client, sweep.parent
    space_file = client.download_artifacts(parent, "space/isclip_modules.yaml", str(tmp_path))
    assert open(space_file).read() == sweep.space.path.read_text()
    resolved = yaml.safe_load(open(client.download_artifacts(parent, "config/trials.yaml",
                                                             str(tmp_path))))
    assert set(resolved) == {t.key for t in sweep.trials}
    t = sweep.trials[-1]
    assert resolved[t.key]["model"] == t.experiment["model"]
    child = sweep.tracker.find_child("sw1", t.key)
    one = yaml.safe_load(open(client.download_artifacts(child, "config.yaml", str(tmp_path))))
    assert one["row"] == t.row and one["trainer"] == t.experiment["trainer"]


def test_resumed_parent_is_found_again(sweep):
    again, created = sweep.tracker.parent_run("sw1", {"space": "isclip_modules"})
    assert (again, created, sweep.created) == (sweep.parent, False, True)


def test_zero_counters_are_not_charted_until_non_zero(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    t = expand(space, seeds=[0])[0]
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 3}, printer=False)
    trial = SimpleNamespace(config={"trial": t.key}, last_result={}, status="RUNNING")
    cb.on_trial_start(0, [trial], trial)
    for epoch, corrupt in ((1, 0), (2, 2), (3, 0)):
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "train_loss": 1.0,
                                               "corrupt_train": corrupt})
    run = SweepTracker(uri, "e").find_child("sw", t.key)
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run, "corrupt_train")] == \
        [(2, 2.0), (3, 0.0)]
    assert len(client.get_metric_history(run, "train_loss")) == 3


def test_console_announces_queued_trials_counts_and_eta(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    a, b = expand(space, seeds=[0])[:2]
    clock = [1000.0]
    monkeypatch.setattr("vidablate.sweep.tracking.time.time", lambda: clock[0])
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {a.key: a, b.key: b}, {a.key: 4, b.key: 4})
    ta = SimpleNamespace(config={"trial": a.key}, last_result={}, status="RUNNING")
    tb = SimpleNamespace(config={"trial": b.key}, last_result={}, status="PENDING")
    cb.on_trial_start(0, [ta, tb], ta)
    assert f"{a.key} " in capsys.readouterr().out.splitlines()[-1]
    for epoch in (1, 2):
        clock[0] += 10.0  # 10 s per epoch
        # Tune lists only the trials it created; the grid's other trial is still queued
        cb.on_trial_result(0, [ta], ta, {"epoch": epoch, "train_loss": 1.0})
    line = capsys.readouterr().out.splitlines()[-1]
    assert "epoch 2/4" in line and "0/2 done, 1 running, 1 queued" in line
    # 2 epochs left of a (20 s) + 4 of b (40 s), one trial running at a time
    assert "ETA trial 0m20s, table 1m00s" in line
    ta.status = "TERMINATED"
    cb.on_trial_complete(0, [ta, tb], ta)
    assert "finished" in capsys.readouterr().out and "1/2 done" in \
        cb._count([ta, tb])  # counted at completion, not one report later


def test_epochs_checkpointed_while_the_driver_was_away_are_logged_once(tmp_path):
    """Ctrl-C: the worker trained and checkpointed epochs 3-4 after the driver stopped
    listening; the restored trial's first report carries them and each epoch is logged once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    t = expand(space, seeds=[0])[0]
    trial = SimpleNamespace(config={"trial": t.key}, last_result={}, status="RUNNING")
    first = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 6}, printer=False)
    first.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        first.on_trial_result(0, [trial], trial, {"epoch": epoch, "train_loss": 10.0 - epoch})
    history = json.dumps([{"epoch": e, "train_loss": 10.0 - e, "finished_at": 1.0}
                          for e in (1, 2, 3, 4)])
    second = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 6}, printer=False)
    second.on_trial_start(0, [trial], trial)
    second.on_trial_result(0, [trial], trial, {"epoch": 5, "train_loss": 5.0,
                                               HISTORY_KEY: history})
    second.on_trial_result(0, [trial], trial, {"epoch": 6, "train_loss": 4.0})
    run = SweepTracker(uri, "e").find_child("sw", t.key)
    steps = [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run, "train_loss")]
    assert sorted(steps) == [(e, 10.0 - e) for e in range(1, 7)]
    # a finished trial restored from its final checkpoint logs what MLflow lacked, nothing twice
    third = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 7}, printer=False)
    history = json.dumps([{"epoch": e, "train_loss": 10.0 - e} for e in range(1, 8)])
    third.on_trial_result(0, [trial], trial, {"epoch": 7, "train_loss": 3.0, REPLAYED_KEY: True,
                                              HISTORY_KEY: history})
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run, "train_loss")]
    assert sorted(steps) == list(range(1, 8))


@pytest.fixture
def one_trial(tmp_path):
    """(tracking URI, the first trial of IS-CLIP Table II)."""
    space = load_space(SHIPPED_SPACES / "isclip_modules.yaml")
    return f"sqlite:///{tmp_path / 'mlflow.db'}", expand(space, seeds=[0])[0]


def test_runs_are_tagged_with_the_nodes_that_trained_them(one_trial):
    """A trial that moves to another node (its node was lost) lists both, in order."""
    uri, t = one_trial
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 4}, printer=False)
    trial = SimpleNamespace(config={"trial": t.key}, last_result={}, status="RUNNING")
    cb.on_trial_start(0, [trial], trial)
    for epoch, node in ((1, "n1"), (2, "n1"), (3, "n2"), (4, "n2")):
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "train_loss": 1.0, "node": node})
    tags = MlflowClient(uri).get_run(SweepTracker(uri, "e").find_child("sw", t.key)).data.tags
    assert tags["vidablate.node"] == "n2" and tags["vidablate.nodes"] == "n1,n2"


def test_a_node_tag_that_failed_to_arrive_is_sent_again(one_trial):
    """The node list is remembered only once the store has it: a write that failed (an
    outage) is retried whole, not skipped as already sent."""
    uri, t = one_trial
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 4}, printer=False)
    run_id = cb._run(SimpleNamespace(config={"trial": t.key}))
    real = cb.client.log_batch
    calls = []

    def refuse_once(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise ConnectionError("Connection refused")
        return real(*args, **kwargs)

    cb.client.log_batch = refuse_once
    with pytest.raises(ConnectionError):
        cb._log_node(run_id, "n1")
    cb._log_node(run_id, "n1")
    assert MlflowClient(uri).get_run(run_id).data.tags["vidablate.nodes"] == "n1"


@pytest.mark.parametrize("storage,path,want", [
    ("/data/ray_results", "/data/ray_results/sw-train/t/checkpoint_1",
     "/data/ray_results/sw-train/t/checkpoint_1"),
    ("s3://bucket/ablations", "bucket/ablations/sw-train/t/checkpoint_1",
     "s3://bucket/ablations/sw-train/t/checkpoint_1"),
])
def test_a_finished_run_names_its_last_checkpoint_as_a_uri(one_trial, storage, path, want):
    """Ray Train hands Tune the checkpoint as a path (``checkpoint_path``), without the
    scheme of a cloud storage; the tag is what ``vidablate predict RUN_ID`` opens."""
    uri, t = one_trial
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 1}, printer=False,
                             storage=storage)
    trial = SimpleNamespace(config={"trial": t.key}, status="TERMINATED", checkpoint=None,
                            last_result={"epoch": 1, "checkpoint_path": path})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_complete(0, [trial], trial)
    run = MlflowClient(uri).get_run(SweepTracker(uri, "e").find_child("sw", t.key))
    assert run.data.tags["vidablate.checkpoint"] == want and run.info.status == "FINISHED"


def test_a_trial_process_run_names_tunes_checkpoint(one_trial):
    """A loop run in the trial's own process reports no ``checkpoint_path``: the tag is the
    path of Tune's last checkpoint of the trial, with the storage's scheme."""
    uri, t = one_trial
    cb = MLflowTrialCallback(uri, "e", "sw", "p", {t.key: t}, {t.key: 1}, printer=False,
                             storage="s3://bucket/ablations")
    trial = SimpleNamespace(config={"trial": t.key}, status="TERMINATED",
                            checkpoint=SimpleNamespace(path="bucket/ablations/sw/t/checkpoint_3"),
                            last_result={"epoch": 1})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_complete(0, [trial], trial)
    run = MlflowClient(uri).get_run(SweepTracker(uri, "e").find_child("sw", t.key))
    assert run.data.tags["vidablate.checkpoint"] == "s3://bucket/ablations/sw/t/checkpoint_3"


@pytest.mark.parametrize("stopping,epochs,status", [
    ("asha early stopping (max 4 epochs, grace period 1, reduction factor 2)", 2, "KILLED"),
    ("asha early stopping (max 4 epochs, grace period 1, reduction factor 2)", 4, "FINISHED"),
    ("", 2, "FINISHED"),
])
def test_an_hpo_trial_stopped_early_is_killed_with_its_reason(one_trial, stopping, epochs,
                                                             status, capsys):
    uri, t = one_trial
    cb = HPOTrialCallback(uri, "e", "sw", "p", t.experiment, 0, 4, 3, stopping=stopping)
    trial = SimpleNamespace(trial_id="abc_00001", config={"trainer__lr_new": 0.01},
                            status="TERMINATED", last_result={"epoch": epochs})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_complete(0, [trial], trial)
    run = MlflowClient(uri).get_run(SweepTracker(uri, "e").find_child("sw", "hpo-abc_00001"))
    assert run.info.status == status
    if status == "KILLED":
        assert run.data.tags["vidablate.stopped"] == f"{stopping}: stopped after epoch 2 of 4"
        assert "hpo-abc_00001            stopped" in capsys.readouterr().out
    else:
        assert "vidablate.stopped" not in run.data.tags

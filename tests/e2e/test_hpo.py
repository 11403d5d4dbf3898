"""End to end: an Optuna (TPE) HPO space with ASHA early stopping through Ray Tune on a local
cluster into MLflow (a stopped trial is KILLED with its reason); a second run of the same
command restores the finished search and adds no run."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY

pytestmark = pytest.mark.e2e

SPACE = {
    "name": "tiny_hpo", "kind": "hpo", "paper": "isclip", "title": "tiny HPO",
    "metrics": {"hm": "HM", "base_acc": "Base", "novel_acc": "Novel"},
    "objective": {"metric": "hm", "mode": "max"}, "num_samples": 4,
    "fixed": {"model.sgam": True},
    "search": {"trainer.lr_new": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
               "model.sgam_hidden": {"type": "categorical", "values": [0, 16]}},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
}
EPOCHS = 3


def test_hpo_space_samples_trials_into_mlflow_and_resumes(ablate_cmd, tmp_path):
    space = tmp_path / "tiny_hpo.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # one trial at a time: each meets the rungs of the ones before it
    cmd = ablate_cmd + [f"space={space}", f"tracking_uri={uri}", "num_cpus=2",
                        "max_concurrent=1", f"trainer.epochs={EPOCHS}",
                        *[a for a in TINY if not a.startswith("trainer.epochs=")]]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Optuna TPE, asha early stopping (max 3 epochs, grace period 1, reduction factor " \
           "2), objective hm (max)" in first.stdout
    assert "best hpo-" in first.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny_hpo")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    assert len(parent) == 1 and len(children) == 4
    sampled = set()
    stopped = [r for r in children if r.info.status == "KILLED"]
    assert stopped, "ASHA stopped no trial"
    for run in stopped:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps and max(steps) < EPOCHS
        assert run.data.tags["vidablate.stopped"] == (
            f"asha early stopping (max 3 epochs, grace period 1, reduction factor 2): stopped "
            f"after epoch {max(steps)} of {EPOCHS}")
        assert f"| {run.info.run_name} |" in first.stdout  # the HPO table lists it as stopped
        assert [line for line in first.stdout.splitlines()
                if line.startswith(f"| {run.info.run_name} |")][0].endswith(" stopped |")
    trained = sum(max(m.step for m in client.get_metric_history(r.info.run_id, "train_loss"))
                  for r in children)
    assert trained < 4 * EPOCHS and f"4 trials, {trained} trial-epochs trained" in first.stdout
    for run in children:
        assert run.info.status in ("FINISHED", "KILLED")
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        lr = float(run.data.params["toggle.trainer.lr_new"])
        assert 1e-5 <= lr <= 1e-1
        assert float(run.data.params["trainer.lr_new"]) == lr  # the trial trained with it
        assert run.data.params["toggle.model.sgam_hidden"] in ("0", "16")
        assert "hm" in run.data.metrics
        sampled.add(lr)
    assert len(sampled) == 4  # distinct samples
    tags = parent[0].data.tags
    assert tags["vidablate.best_trial"] in {r.info.run_name for r in children}
    arts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "table")}
    assert {"table/hpo.md", "table/hpo.csv"} <= arts

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    assert len(client.search_runs([exp.experiment_id])) == 5

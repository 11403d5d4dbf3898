"""End to end: an Optuna (TPE) HPO space through Ray Tune on a local cluster into MLflow; a
second run of the same command restores the finished search and adds no run."""

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
    "objective": {"metric": "hm", "mode": "max"}, "num_samples": 2,
    "fixed": {"model.sgam": True},
    "search": {"trainer.lr_new": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
               "model.sgam_hidden": {"type": "categorical", "values": [0, 16]}},
}


def test_hpo_space_samples_trials_into_mlflow_and_resumes(ablate_cmd, tmp_path):
    space = tmp_path / "tiny_hpo.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + [f"space={space}", f"tracking_uri={uri}", "num_cpus=2", *TINY]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Optuna TPE, objective hm (max)" in first.stdout
    assert "best hpo-" in first.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny_hpo")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    assert len(parent) == 1 and len(children) == 2
    sampled = set()
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        lr = float(run.data.params["toggle.trainer.lr_new"])
        assert 1e-3 <= lr <= 1e-1
        assert float(run.data.params["trainer.lr_new"]) == lr  # the trial trained with it
        assert run.data.params["toggle.model.sgam_hidden"] in ("0", "16")
        assert "hm" in run.data.metrics
        sampled.add(lr)
    assert len(sampled) == 2  # two distinct samples
    tags = parent[0].data.tags
    assert tags["vidablate.best_trial"] in {r.info.run_name for r in children}
    arts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "table")}
    assert {"table/hpo.md", "table/hpo.csv"} <= arts

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    assert len(client.search_runs([exp.experiment_id])) == 3

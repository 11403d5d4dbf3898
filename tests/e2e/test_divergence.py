"""End to end: one row of a table diverges (a learning rate of 1e30 makes the loss NaN/inf);
that trial stops, its MLflow run is FAILED with the reason, its cell reads "(failed)", and the
other row finishes with numbers."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def test_a_diverging_row_is_a_failed_cell_and_the_table_renders(ablate_cmd, tmp_path):
    space = {
        "name": "diverge", "title": "divergence", "metrics": {"hm": "HM"},
        "fixed": {"trainer.epochs": 3, "data.train_per_class": 2, "data.test_per_class": 1,
                  "trainer.batch_size": 8},
        "rows": [{"name": "sane", "label": "Sane row", "paper": {"hm": 50.0}},
                 {"name": "wild", "label": "Wild row", "paper": {"hm": 50.0},
                  "toggles": {"trainer.lr_new": 1.0e30, "trainer.lr_visual": 1.0e30}}],
    }
    (tmp_path / "diverge.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(ablate_cmd + [f"space={tmp_path / 'diverge.yaml'}", f"tracking_uri={uri}",
                                       "num_cpus=2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # a trial failed
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    wild = next(line for line in table if "Wild row" in line)
    sane = next(line for line in table if "Sane row" in line)
    ours = -3  # cells end with: HM paper | HM ours | delta |
    assert "(failed)" in wild and wild.split("|")[ours].strip() == "—"
    assert "(failed)" not in sane and float(sane.split("|")[ours]) >= 0
    assert "diverged" in out.stderr
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("diverge")
    runs = {r.data.tags.get("vidablate.row"): r for r in client.search_runs([exp.experiment_id])}
    assert runs["wild"].info.status == "FAILED"
    assert "diverged" in runs["wild"].data.tags["vidablate.failure"]
    assert runs["sane"].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs["sane"].info.run_id, "hm")] == [1, 2, 3]

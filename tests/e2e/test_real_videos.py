"""End to end on real files: the synthetic set written as H.264 mp4 + IMU csv files with
PyAV (``export_synthetic``), read back through a Parquet manifest by the decoding path
(decord or PyAV, DataLoader worker processes), in a table run through Ray into MLflow:
k-shot draw saved as an artifact, multi-view evaluation, a corrupt test video skipped and
counted. A manifest with missing files fails pre-flight before anything starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from vidablate.data.converters import export_synthetic
from vidablate.data.manifest import read_manifest, write_manifest
from vidablate.data.synthetic import SyntheticSpec

pytestmark = pytest.mark.e2e


def _dataset(tmp_path: Path, corrupt: bool = True, missing: bool = False) -> Path:
    spec = SyntheticSpec(num_classes=4, train_per_class=3, test_per_class=2, num_frames=8,
                         image_size=32)
    files = export_synthetic(tmp_path / "data", spec)
    test = read_manifest(files["test"]).to_pylist()
    if corrupt:  # a truncated copy of a real clip
        good = tmp_path / "data" / test[0]["video"]
        (tmp_path / "data" / "videos" / "broken.mp4").write_bytes(good.read_bytes()[:600])
        test.append({**test[0], "video": "videos/broken.mp4"})
    if missing:
        test.append({**test[0], "video": "videos/nowhere.mp4"})
        test.append({**test[1], "label": 9})
    write_manifest(test, files["test"])
    preset = {
        "dataset": "synthetic_mp4", "protocol": "closed_set", "num_classes": 4,
        "train_manifest": str(files["train"]), "test_manifest": str(files["test"]),
        "class_names_file": str(files["classnames"]), "image_size": 32, "num_frames": 4,
        "k_shot": 2, "loader_workers": 1, "validate_decode": not corrupt, "fps": 8.0,
    }
    path = tmp_path / "synthetic_mp4.yaml"
    path.write_text(yaml.safe_dump(preset))
    space = {
        "name": "real_files", "title": "real-file table", "dataset": str(path),
        "metrics": {"top1": "Top-1"},
        "fixed": {"trainer.epochs": 1, "trainer.batch_size": 4, "eval.temporal_views": 2},
        "rows": [{"name": "mean", "toggles": {}, "paper": {"top1": 50.0}},
                 {"name": "sgam", "toggles": {"model.sgam": True}}],
    }
    (tmp_path / "real_files.yaml").write_text(yaml.safe_dump(space))
    return tmp_path / "real_files.yaml"


def test_table_on_mp4_manifests_through_ray(ablate_cmd, tmp_path):
    space = _dataset(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = ablate_cmd + [f"space={space}", f"tracking_uri={uri}", "num_cpus=2"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pre-flight: data.train_manifest" in done.stdout
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("real_files")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("vidablate.kind") == "trial"]
    assert sorted(r.data.tags["vidablate.row"] for r in children) == ["mean", "sgam"]
    for run in children:
        assert run.info.status == "FINISHED"
        m = run.data.metrics
        assert 0 <= m["top1"] <= m["top5"] <= 100
        assert m["corrupt_eval"] == 1  # the truncated clip, left out of top-1
        assert run.data.params["data.train_manifest"].endswith("train.parquet")
        local = client.download_artifacts(run.info.run_id, "kshot_split.json", str(tmp_path))
        drawn = json.loads(Path(local).read_text())
        assert len(drawn) == 8 and sorted(e["label"] for e in drawn) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert all(e["video"].endswith(".mp4") for e in drawn)


def test_preflight_reports_every_bad_row_before_starting(ablate_cmd, tmp_path):
    space = _dataset(tmp_path, corrupt=False, missing=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(ablate_cmd + [f"space={space}", f"tracking_uri={uri}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "pre-flight data check failed" in out
    assert "missing video: 1" in out and "nowhere.mp4" in out and "unknown label: 1" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()

"""End to end: `jobs/cache_features.py` builds a table's feature cache as a Ray job over two
workers, then `jobs/ablate.py` on the same table reads it (no part rebuilt) and every child
run records that it trained on cached features."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.e2e


def test_cache_job_then_table_reads_it(ablate_cmd, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["space=motionprompt_key_designs", "rows=[baseline,mmb]", f"tracking_uri={uri}",
              "num_cpus=2", "data.cache_part_rows=16", *TINY]
    build = subprocess.run([sys.executable, str(REPO / "jobs" / "cache_features.py"), *common],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "2 entries" in build.stdout and "on 2 worker(s)" in build.stdout, build.stdout
    parts = sorted((tmp_path / "ray_results" / "feature_cache").glob("*/part-*.done"))
    assert len(parts) == 4 + 2  # train: 32 classes x 2 clips, test: 32 x 1; 16 per part
    assert not (tmp_path / "mlflow.db").exists()  # building trains and logs nothing

    run = subprocess.run(ablate_cmd + common, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 complete, 0 part(s) to build" in run.stdout
    # the trials computed the same keys as the driver: no entry of their own
    assert sorted((tmp_path / "ray_results" / "feature_cache").glob("*/part-*.done")) == parts
    assert "trial mmb-s0: cache on (whole visual tower frozen" in run.stdout
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("motionprompt_key_designs")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("vidablate.kind") == "trial"]
    assert len(children) == 2
    assert all(r.data.metrics["feature_cache"] == 1.0 for r in children)

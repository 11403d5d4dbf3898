"""End to end through Ray's job server: a head started by the test (token auth on, bound to
127.0.0.1), then `ray job submit --working-dir . -- python jobs/ablate.py ...`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.e2e
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    gcs, dash = _free_port(), _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGTERM)
        pytest.fail("the Ray head's job server did not come up")
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)
    head.wait(timeout=60)


def test_ray_job_submit_runs_the_table(ray_head, tmp_path):
    address, env = ray_head
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           sys.executable, "jobs/ablate.py", "space=isclip_sensors", "rows=[no_imu,gyro]",
           f"tracking_uri={uri}", f"storage_path={tmp_path / 'ray_results'}", *TINY]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    assert "IS-CLIP Table III" in out.stdout and "98.3" in out.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("isclip_sensors")
    runs = client.search_runs([exp.experiment_id])
    trials = {r.data.tags["vidablate.row"]: r for r in runs
              if r.data.tags.get("vidablate.kind") == "trial"}
    assert set(trials) == {"no_imu", "gyro"}
    assert trials["gyro"].data.params["model.imu_acc"] == "False"
    assert all(r.info.status == "FINISHED" for r in runs)

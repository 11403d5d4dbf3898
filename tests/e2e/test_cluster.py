"""Past one machine, on one machine: a Ray cluster of a head (no CPUs) and two worker nodes
(``ray.cluster_utils.Cluster``: separate raylets, object stores and worker pools), no shared
folder between them: the sweep's storage and feature cache are in an S3 bucket (moto's server),
MLflow is a tracking server on PostgreSQL with its artifacts in the same store.

Mid-table, one worker node is lost (its raylet and its workers SIGKILLed) and the tracking
server is stopped and started again. The table completes: exactly one MLflow run per row and
seed, one value per epoch, the lost trial continued on the surviving node from its last
checkpoint. The figures are printed (``pytest -s``)."""

from __future__ import annotations

import io
import signal
import statistics
import time

import pyarrow.fs
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.faults_helpers import launch, psutil, wait_until

pytestmark = pytest.mark.e2e

EPOCHS = 5
BUDGET = 600
ROWS = ["baseline", "sirm"]


def _children(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get("vidablate.kind") == "trial"]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture
def cluster(s3_server, monkeypatch):
    """Head without CPUs, two 1-CPU worker nodes; every node has the AWS variables of the
    S3 server (as a cloud node has an instance profile) and nothing else in common."""
    from ray.cluster_utils import Cluster

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("PYTHONPATH", str(REPO / "platform"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"head": 1},
                                                      "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1, resources={f"node{i}": 1}) for i in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def _node_processes(node) -> list[psutil.Process]:
    """A worker node's raylet and every process it started (its workers)."""
    from ray._private import ray_constants

    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    return [raylet, *raylet.children(recursive=True)]


def test_node_loss_and_tracking_outage_on_s3_storage(cluster, mlflow_server, s3_server,
                                                     ablate_cmd, tmp_path):
    c, nodes = cluster
    server = mlflow_server("cluster")
    s3_server.bucket("sweeps")
    cmd = ablate_cmd + [
        "space=isclip_modules", f"rows=[{','.join(ROWS)}]", "seeds=[0]",
        f"trainer.epochs={EPOCHS}", "data.train_per_class=2", "data.test_per_class=1",
        "trainer.batch_size=8", f"ray_address={c.address}", f"tracking_uri={server.uri}",
        "storage_path=s3://sweeps/ablations", "cache_path=s3://sweeps/cache",
    ]
    client = MlflowClient(server.uri)
    by_id = {n.node_id: i for i, n in enumerate(nodes)}
    cli = launch(cmd, tmp_path, BUDGET)
    try:
        def on_a_node():
            """A trial whose epoch 1 is in MLflow, trained on a worker node: (run, node)."""
            for run in _children(client, "isclip_modules"):
                node = run.data.tags.get("vidablate.node")
                if node in by_id and _steps(client, run.info.run_id, "train_loss"):
                    return run, nodes[by_id[node]]
            return None

        run, lost = wait_until("a trial's epoch 1 in MLflow", on_a_node, BUDGET, cli, 0.2)
        procs = _node_processes(lost)
        t_kill = time.time()
        seen = max(e for _, k, e in cli.progress() if k == run.data.tags["vidablate.trial_key"])
        c.remove_node(lost, allow_graceful=False)  # SIGKILL: raylet, object store, agents
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        # the tracking server goes away too, while the surviving node trains
        server.stop()
        t_down = time.time()
        wait_until("the driver to notice the outage",
                   lambda: "does not answer" in cli.stdout, BUDGET, cli, 0.5)
        time.sleep(max(0.0, 20 - (time.time() - t_down)))
        server.start()
        t_up = time.time()
        code = cli.wait(BUDGET)
        assert code == 0, f"exit {code}{cli.tail()}"
    finally:
        cli.kill_session()
        cli.dump("cluster")
    wall = time.time() - cli.started
    out = cli.stdout
    assert "answers again" in out, cli.tail()

    # exactly one run per row and seed, every epoch once, both FINISHED
    runs = {r.data.tags["vidablate.row"]: r for r in _children(client, "isclip_modules")}
    assert sorted(runs) == ROWS and len(_children(client, "isclip_modules")) == len(ROWS)
    for r in runs.values():
        assert client.get_run(r.info.run_id).info.status == "FINISHED"
        for key in ("train_loss", "hm"):
            assert _steps(client, r.info.run_id, key) == list(range(1, EPOCHS + 1)), key
    moved = client.get_run(run.info.run_id).data.tags
    survivor = nodes[1 - by_id[lost.node_id]].node_id
    assert moved["vidablate.nodes"].split(",") == [lost.node_id, survivor], moved
    other = next(r for r in runs.values() if r.info.run_id != run.info.run_id)
    assert client.get_run(other.info.run_id).data.tags["vidablate.node"] in by_id

    # storage and cache only in the bucket; the secret in no param or tag
    assert not (tmp_path / "ray_results").exists()
    keys = s3_server.keys("sweeps")
    assert any(k.startswith("ablations/") and k.endswith("state.pt") for k in keys)
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    for r in runs.values():
        data = client.get_run(r.info.run_id).data
        assert not any(secret in str(v) for v in [*data.params.values(), *data.tags.values()])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert any(k.endswith(".md") for k in s3_server.keys("cluster")), "no table artifact in S3"
    cached = [k for k in keys if k.startswith("cache/") and k.endswith(".done")]

    # epochs repeated: the final checkpoint (in the bucket) keeps when each epoch finished
    where = moved["vidablate.checkpoint"]
    fs, path = pyarrow.fs.FileSystem.from_uri(where)
    with fs.open_input_file(f"{path}/state.pt") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    history = state["history"]
    assert [int(h["epoch"]) for h in history] == list(range(1, EPOCHS + 1))
    finished = [h["finished_at"] for h in history]
    kept = sum(t < t_kill for t in finished)
    assert kept >= 1, "the trial did not resume from a checkpoint"
    assert all(h["node"] == survivor for h in history[kept:])
    repeated = max(seen - kept, 0)
    assert repeated <= 1, f"{repeated} epochs trained again (saw {seen}, kept {kept})"
    gaps = [b - a for a, b in zip(finished, finished[1:], strict=False)]
    normal = statistics.median(gaps[:kept - 1] + gaps[kept:]) if len(gaps) > 1 else 0.0
    print(f"\n[cluster] killed node {lost.node_id[:8]} at epoch {seen} of "
          f"{run.data.tags['vidablate.trial_key']}; resumed on {survivor[:8]} from epoch "
          f"{kept}; epochs trained again: {repeated}; gap {gaps[kept - 1]:.1f} s vs normal "
          f"epoch {normal:.1f} s (the survivor first finished its own trial); tracking "
          f"server down {t_up - t_down:.0f} s; feature-cache parts in S3: {len(cached)}; "
          f"wall {wall:.0f} s")

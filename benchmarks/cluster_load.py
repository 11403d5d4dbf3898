"""Load on a 3-node local cluster: a 64-trial table (IS-CLIP Table II, 4 rows x 16 seeds, one
light epoch each) with its storage in an S3 bucket, against the same trials one at a time on
a plain local Ray. Prints trials per hour of both, their ratio, and whether every (row, seed)
has exactly one FINISHED MLflow run with one value per epoch (no lost, no duplicated run).

    python benchmarks/cluster_load.py                 # 64 trials on the cluster, 8 one at a time
    python benchmarks/cluster_load.py --seeds 4 --serial-seeds 1   # a quick look

The cluster: a head without CPUs and two worker nodes of ``--node-cpus`` CPUs each
(``ray.cluster_utils.Cluster``), default 2 logical CPUs each on this 2-core machine, so four
one-CPU trials share it (packed: their fixed start-up costs overlap). The S3
server is moto's, started here (``tests/services.py``, the one the tests use)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/services.py starts the S3 server the tests use

from tests.services import S3Server  # noqa: E402

TRIAL = ["space=isclip_modules", "trainer.epochs=1", "data.train_per_class=2",
         "data.test_per_class=1", "trainer.batch_size=8"]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    """The ablation command; returns its wall time (fails loudly on a non-zero exit)."""
    started = time.time()
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "ablate.py"), *args], cwd=cwd,
                         env=env, capture_output=True, text=True)
    (cwd / "stdout.log").write_text(out.stdout)
    (cwd / "stderr.log").write_text(out.stderr)
    if out.returncode:
        raise SystemExit(f"exit {out.returncode} in {cwd}:\n{out.stdout[-3000:]}"
                         f"\n{out.stderr[-3000:]}")
    return time.time() - started


def audit(uri: str, rows: int, seeds: int) -> str:
    """Lost or duplicated runs: every (row, seed) once, FINISHED, one train_loss value."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("isclip_modules")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=10_000)
            if r.data.tags.get("vidablate.kind") == "trial"]
    keys = [(r.data.tags["vidablate.row"], r.data.tags["vidablate.seed"]) for r in runs]
    unfinished = [k for r, k in zip(runs, keys, strict=True) if r.info.status != "FINISHED"]
    steps = [len(client.get_metric_history(r.info.run_id, "train_loss")) for r in runs]
    nodes = {r.data.tags.get("vidablate.node") for r in runs}
    return (f"{len(runs)} runs for {rows * seeds} trials, {len(set(keys))} distinct (row, seed), "
            f"{len(unfinished)} not FINISHED, epochs logged per run {sorted(set(steps))}, "
            f"on {len(nodes)} node(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds per row on the cluster")
    parser.add_argument("--serial-seeds", type=int, default=2,
                        help="seeds per row of the one-at-a-time run")
    parser.add_argument("--node-cpus", type=int, default=2,
                        help="logical CPUs per worker node (one trial each)")
    opts = parser.parse_args()
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="vidablate-load-"))
    s3 = S3Server(work).start()
    env = {**os.environ, **s3.env, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)  # the cluster's nodes inherit the AWS variables
    s3.bucket("load")
    results = {}
    try:
        serial = work / "serial"
        serial.mkdir()
        seeds = ",".join(map(str, range(opts.serial_seeds)))
        wall = run([*TRIAL, f"seeds=[{seeds}]", "max_concurrent=1",
                    "num_cpus=2", "storage_path=s3://load/serial",
                    f"tracking_uri=sqlite:///{serial / 'mlflow.db'}"], serial, env)
        results["one at a time (local Ray)"] = (4 * opts.serial_seeds, wall,
                                                audit(f"sqlite:///{serial / 'mlflow.db'}", 4,
                                                      opts.serial_seeds))
        print(f"one at a time: {results['one at a time (local Ray)']}", flush=True)
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=opts.node_cpus)
        cluster.wait_for_nodes()
        try:
            packed = work / "cluster"
            packed.mkdir()
            seeds = ",".join(map(str, range(opts.seeds)))
            wall = run([*TRIAL, f"seeds=[{seeds}]", f"ray_address={cluster.address}",
                        "storage_path=s3://load/cluster",
                        f"tracking_uri=sqlite:///{packed / 'mlflow.db'}"], packed, env)
            results["3-node cluster, packed"] = (4 * opts.seeds, wall,
                                                 audit(f"sqlite:///{packed / 'mlflow.db'}", 4,
                                                       opts.seeds))
        finally:
            cluster.shutdown()
    finally:
        s3.stop()
    print("\n| run | trials | wall (s) | trials/hour | runs |\n|---|---:|---:|---:|---|")
    rate = {}
    for name, (n, wall, runs) in results.items():
        rate[name] = n / wall * 3600
        print(f"| {name} | {n} | {wall:.0f} | {rate[name]:.0f} | {runs} |")
    if len(rate) == 2:
        a, b = rate.values()
        print(f"\ncluster / one at a time: {b / a:.2f}x trials per hour (logs in {work})")


if __name__ == "__main__":
    main()

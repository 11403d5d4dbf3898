"""Trial packing: trials per hour of a cached-feature table with packed trials vs one trial per
device, same table, same epochs, one process, one Ray cluster.

On a GPU machine (``--gpu``): the trials run with ``trainer.use_gpu=true``; unpacked every
trial asks for a whole GPU (``trainer.packed_gpu_fraction=1``), packed for 0.25 of one, so
four share it. Without a GPU the CPU analogue is measured: unpacked, a trial holds both cores
of a 2-core machine (``trainer.cpus_per_worker=2``); packed, two trials hold one core each.
The runner computes concurrency from the cluster's resources in both cases.

    python benchmarks/packing.py [--gpu] [--rows baseline mmb] [--seeds 0 1] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def run(space: str, rows: list[str], seeds: list[int], epochs: int, trainer: dict,
        num_cpus: int | None) -> tuple[float, int]:
    from vidablate.sweep.runner import SweepSettings, run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        settings = SweepSettings(storage_path=f"{tmp}/ray_results",
                                 tracking_uri=f"sqlite:///{tmp}/mlflow.db", rows=rows,
                                 seeds=seeds, num_cpus=num_cpus)
        start = time.perf_counter()
        report = run_sweep(space, None, {"trainer": {"epochs": epochs, **trainer}}, settings)
        wall = time.perf_counter() - start
    assert report is not None
    return wall, sum(o.status == "ok" for o in report.outcomes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="motionprompt_key_designs")
    ap.add_argument("--rows", nargs="*", default=["baseline", "mmb"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.gpu:
        setups = {"one trial per GPU": {"use_gpu": True, "packed_gpu_fraction": 1.0},
                  "packed (0.25 GPU each)": {"use_gpu": True, "packed_gpu_fraction": 0.25}}
        cpus = None
    else:
        setups = {"one trial per device (2 cores each)": {"cpus_per_worker": 2},
                  "packed (1 core each)": {"cpus_per_worker": 1}}
        cpus = 2
    out = {}
    for name, trainer in setups.items():
        wall, ok = run(args.space, args.rows, args.seeds, args.epochs, trainer, cpus)
        out[name] = {"wall_s": wall, "trials_ok": ok, "trials_per_hour": 3600 * ok / wall}
        print(f"{name}: {ok} trials in {wall:.1f} s = {3600 * ok / wall:.1f} trials/hour",
              flush=True)
    (a, ra), (b, rb) = out.items()
    print("\n| setup | trials | wall s | trials/hour |\n|---|---:|---:|---:|")
    for name, r in out.items():
        print(f"| {name} | {r['trials_ok']} | {r['wall_s']:.1f} | {r['trials_per_hour']:.1f} |")
    print(f"packing: {rb['trials_per_hour'] / ra['trials_per_hour']:.2f}x trials/hour")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

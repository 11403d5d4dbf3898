"""Early stopping in HPO: Optuna TPE alone against TPE + ASHA at the same number of samples,
over several search seeds, on the embedded default (tiny CLIP, synthetic clips). Per run: the
trial-epochs trained, the wall time and the best objective; then the medians over seeds and
the ratio of trial-epochs (the issue's target: >= 2x fewer for an equal or better best
objective).

Both arms run in this one process on one local Ray cluster, one after the other per seed, with
fresh storage and tracking each, so they see the same machine.

    python benchmarks/hpo_early_stop.py                        # xclip_hpo, 3 seeds
    python benchmarks/hpo_early_stop.py --num-samples 8 --epochs 6 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

import yaml  # noqa: E402

from vidablate.sweep import space as spaces  # noqa: E402
from vidablate.sweep.runner import SweepSettings, run_sweep  # noqa: E402


def one(space: str, seed: int, scheduler: str, samples: int, epochs: int,
        num_cpus: int) -> dict[str, float]:
    loaded = spaces.load_space(space)
    overrides = {"trainer": {"epochs": epochs}} if epochs else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{loaded.name}.yaml"
        _write_space(loaded.path, path, samples)
        settings = SweepSettings(storage_path=f"{tmp}/ray_results", seeds=[seed],
                                 tracking_uri=f"sqlite:///{tmp}/mlflow.db", num_cpus=num_cpus,
                                 scheduler=scheduler)
        start = time.perf_counter()
        report = run_sweep(str(path), None, overrides, settings)
        wall = time.perf_counter() - start
    assert report is not None
    metric = loaded.objective["metric"]
    done = [o for o in report.outcomes if metric in o.metrics]
    best = (max if loaded.objective["mode"] == "max" else min)(
        o.metrics[metric] for o in done) if done else float("nan")
    trained = sum(int(o.metrics.get("epoch", 0)) for o in report.outcomes)
    stopped = sum(o.status == "stopped" for o in report.outcomes)
    return {"trial_epochs": trained, "wall_s": wall, "best": best, "stopped": stopped}


def _write_space(source: Path, target: Path, samples: int) -> None:
    raw = yaml.safe_load(source.read_text())
    if samples:
        raw["num_samples"] = samples
    raw.setdefault("scheduler", {"type": "asha", "grace_period": 1, "reduction_factor": 3})
    target.write_text(yaml.safe_dump(raw, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="xclip_hpo")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--num-samples", type=int, default=0, help="0 = the space's")
    ap.add_argument("--epochs", type=int, default=0, help="0 = the space's trainer.epochs")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"fifo": [], "asha": []}
    for seed in args.seeds:
        for arm in ("fifo", "asha"):
            r = one(args.space, seed, arm, args.num_samples, args.epochs, args.num_cpus)
            runs[arm].append({"seed": seed, **r})
            print(f"[{arm} seed {seed}] {r['trial_epochs']} trial-epochs, {r['wall_s']:.0f} s, "
                  f"best {r['best']:.2f}, {r['stopped']} stopped", flush=True)
    med = {arm: {k: statistics.median(r[k] for r in rs)
                 for k in ("trial_epochs", "wall_s", "best")} for arm, rs in runs.items()}
    samples = args.num_samples or "the space's"
    print(f"\n{args.space}, {samples} samples, seeds {args.seeds} (medians)")
    print("| arm | trial-epochs | wall (s) | best objective |\n|---|---:|---:|---:|")
    for arm, m in med.items():
        print(f"| TPE{' + ASHA' if arm == 'asha' else ''} | {m['trial_epochs']:.0f} | "
              f"{m['wall_s']:.0f} | {m['best']:.2f} |")
    ratio = med["fifo"]["trial_epochs"] / max(med["asha"]["trial_epochs"], 1)
    print(f"trial-epochs TPE / TPE + ASHA: {ratio:.2f}x; wall "
          f"{med['fifo']['wall_s'] / med['asha']['wall_s']:.2f}x; best objective "
          f"{med['asha']['best'] - med['fifo']['best']:+.2f} with ASHA")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": med, "ratio": ratio},
                                        indent=1))


if __name__ == "__main__":
    main()

"""Early stopping in HPO: Optuna TPE alone against TPE + ASHA at the same number of samples,
over several search seeds, on the embedded default (tiny CLIP, synthetic clips), each run as
users run it (``jobs/ablate.py space=<file> scheduler=fifo|asha seeds=[s]``). Per run: the
trial-epochs trained, the wall time and the best objective (from the MLflow runs); then the
medians over seeds and the ratio of trial-epochs (the target: >= 2x fewer for an equal or
better best objective). For the TPE arm, whose trials all train to the end, it also prints how
well the objective at each of ASHA's rungs (epochs 1, 3, 9) ranks the final one (Spearman's
rho, ``scipy.stats.spearmanr``): early stopping can only keep the best trials when it does.

Both arms run one after the other per seed, each with a fresh local Ray cluster, storage and
tracking store, so they see the same machine. The space keeps its own ``scheduler`` settings;
one that names none gets ASHA with grace period 1 and reduction factor 3 (``Scheduler``'s
defaults, the ASHA paper's eta).

    python benchmarks/hpo_early_stop.py                        # xclip_hpo, 3 seeds
    python benchmarks/hpo_early_stop.py --num-samples 8 --epochs 6 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from ablate_command import REPO, run_ablate

sys.path.insert(0, str(REPO / "platform"))

import yaml  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from vidablate.sweep import space as spaces  # noqa: E402


def one(space: str, seed: int, scheduler: str, samples: int, epochs: int,
        num_cpus: int) -> dict[str, float]:
    loaded = spaces.load_space(space)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{loaded.name}.yaml"
        _write_space(loaded.path, path, samples)
        uri = f"sqlite:///{tmp}/mlflow.db"
        wall, _ = run_ablate([f"space={path}", f"scheduler={scheduler}", f"seeds=[{seed}]",
                              f"num_cpus={num_cpus}", f"storage_path={tmp}/ray_results",
                              f"tracking_uri={uri}",
                              *([f"trainer.epochs={epochs}"] if epochs else [])],
                             tmp, f"{scheduler} seed {seed}")
        return {**_from_mlflow(uri, loaded.name, loaded.objective["metric"]), "wall_s": wall}


def _from_mlflow(uri: str, experiment: str, metric: str) -> dict[str, float]:
    """Trial-epochs (epochs logged per child run), stopped trials (KILLED) and the parent
    run's best objective."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("vidablate.kind") == "sweep"][0]
    children = [r for r in runs if r.data.tags.get("vidablate.kind") == "trial"]
    trained = sum(len(client.get_metric_history(r.info.run_id, "train_loss"))
                  for r in children)
    histories = [sorted(client.get_metric_history(r.info.run_id, metric), key=lambda m: m.step)
                 for r in children]
    return {"trial_epochs": trained, "best": parent.data.metrics.get(f"best_{metric}",
                                                                     float("nan")),
            "stopped": sum(r.info.status == "KILLED" for r in children),
            "trials": len(children),
            "curves": [[m.value for m in h] for h in histories]}


def rung_agreement(curves: list[list[float]], rung: int) -> tuple[float, float, int]:
    """How well a trial's objective after ``rung`` epochs ranks its final one, over the trials
    that trained to the end: Spearman's rho, its p-value and the trials counted."""
    from scipy.stats import spearmanr

    full = max((len(c) for c in curves), default=0)
    done = [c for c in curves if len(c) == full and len(c) >= rung]
    if len(done) < 3:
        return float("nan"), float("nan"), len(done)
    rho, p = spearmanr([c[rung - 1] for c in done], [c[-1] for c in done])
    return float(rho), float(p), len(done)


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
    ap.add_argument("--arms", nargs="*", default=["fifo", "asha"], choices=["fifo", "asha"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            r = one(args.space, seed, arm, args.num_samples, args.epochs, args.num_cpus)
            runs[arm].append({"seed": seed, **r})
            print(f"[{arm} seed {seed}] {r['trial_epochs']} trial-epochs, {r['wall_s']:.0f} s, "
                  f"best {r['best']:.2f}, {r['stopped']} stopped", flush=True)
            if arm == "fifo":  # every trial ran to the end: do the early rungs rank them?
                for rung in (1, 3, 9):
                    rho, p, n = rung_agreement(r["curves"], rung)
                    print(f"  epoch {rung} against the last epoch, {n} trials: Spearman rho "
                          f"{rho:+.2f} (p = {p:.2g})", flush=True)
    med = {arm: {k: statistics.median(r[k] for r in rs)
                 for k in ("trial_epochs", "wall_s", "best")} for arm, rs in runs.items()}
    if len(med) < 2:
        return
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

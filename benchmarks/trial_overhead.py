"""Fixed cost per trial: a table run with its one-worker trials under Ray Train
(``trainer.executor=train``: a TorchTrainer controller, worker group and placement group per
trial) against the same table with each loop in its Tune trial's own process
(``trainer.executor=trial``, what ``auto`` picks for one worker), side by side in one script on
the same machine. For each: the command's wall time, the sweep's wall time against its trials'
time inside the training loop (the ``time:`` line every sweep prints), the fixed cost per trial
and whether both arms logged the same metrics.

    python benchmarks/trial_overhead.py                         # isclip_modules, 3 seeds
    python benchmarks/trial_overhead.py --args seeds=[0] trainer.epochs=3
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from ablate_command import REPO, run_ablate

sys.path.insert(0, str(REPO / "platform"))

TIME_LINE = re.compile(
    r"^time: wall (?P<wall>\d+) s; the trials' training loops (?P<loops>\d+) s in all, "
    r"(?P<ideal>\d+) s at (?P<conc>\d+) at once: wall / loop = (?P<ratio>[0-9.]+)x; fixed cost "
    r"(?P<trial>[0-9.]+) s per trial \(\d+ trials\), (?P<sweep>\d+) s per sweep", re.M)
STARTUP_LINE = re.compile(r"^time: start-up (?P<startup>\d+) s before the sweep", re.M)


def one(space: str, executor: str, extra: list[str], folder: Path) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command_s, out = run_ablate([f"space={space}", f"trainer.executor={executor}",
                                 f"storage_path={folder / 'ray_results'}",
                                 f"tracking_uri={uri}", *extra], folder, executor)
    m = TIME_LINE.search(out)
    s = STARTUP_LINE.search(out)
    assert m, out[-3000:]
    return {"command_s": command_s, "wall": float(m["wall"]), "loops": float(m["loops"]),
            "ideal": float(m["ideal"]), "ratio": float(m["ratio"]),
            "trial_s": float(m["trial"]), "sweep_s": float(m["sweep"]),
            "startup_s": float(s["startup"]) if s else float("nan"),
            "metrics": _metrics(uri, space)}


def _metrics(uri: str, experiment: str) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    return {r.data.tags["vidablate.trial_key"]: {k: v for k, v in r.data.metrics.items()
                                                 if k in RESULTS}
            for r in runs if r.data.tags.get("vidablate.kind") == "trial"}


RESULTS = ("train_loss", "train_ce", "train_kd", "base_acc", "novel_acc", "hm", "top1", "top5")
"""What the two executors must agree on (a trial's times differ, its results may not)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="isclip_modules")
    ap.add_argument("--args", nargs="*", default=[], help="more key=value settings")
    args = ap.parse_args()
    results = {}
    for executor in ("train", "trial"):
        with tempfile.TemporaryDirectory() as tmp:
            results[executor] = one(args.space, executor, args.args, Path(tmp))
        r = results[executor]
        print(f"[{executor}] command {r['command_s']:.0f} s; sweep wall {r['wall']:.0f} s, "
              f"loops {r['loops']:.0f} s ({r['ideal']:.0f} s at once): {r['ratio']:.2f}x; "
              f"fixed {r['trial_s']:.1f} s per trial, {r['sweep_s']:.0f} s per sweep, "
              f"start-up {r['startup_s']:.0f} s", flush=True)
    a, b = results["train"], results["trial"]
    same = a["metrics"] == b["metrics"]
    print(f"\n{args.space} {' '.join(args.args)}".rstrip())
    print("| executor | command (s) | sweep wall (s) | loops, sum (s) | sweep wall / (loops / "
          "concurrency) | fixed per trial (s) | per sweep (s) | start-up (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['command_s']:.0f} | {r['wall']:.0f} | {r['loops']:.0f} | "
              f"{r['ratio']:.2f}x | {r['trial_s']:.1f} | {r['sweep_s']:.0f} | "
              f"{r['startup_s']:.0f} |")
    print(f"command: train / trial = {a['command_s'] / b['command_s']:.2f}x; sweep wall "
          f"{a['wall'] / b['wall']:.2f}x; the same results in MLflow ({', '.join(RESULTS)}): {same}")


if __name__ == "__main__":
    main()

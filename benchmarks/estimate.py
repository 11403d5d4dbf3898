"""Does the dry run's wall estimate hold? For each table, on a fresh storage: a dry run (fixed
costs: the shipped defaults), the table itself (the command's wall time), then two dry runs on
the same storage (fixed costs: what that run measured). Prints each dry run's own duration, the
estimates, their ratio to the measured wall time and the spread between the two later dry
runs. Targets: within 2x of the measured wall time, within 20 % of each other, a dry run
under 20 s.

    python benchmarks/estimate.py                                  # two embedded tables
    python benchmarks/estimate.py --spaces isclip_modules --args seeds=[0]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from ablate_command import run_ablate

ESTIMATE = re.compile(r"^estimate: (\d+) s wall on this machine \((cpu|gpu)\)$", re.M)


def one(space: str, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        args = [f"space={space}", f"storage_path={folder / 'ray_results'}",
                f"tracking_uri=sqlite:///{folder / 'mlflow.db'}", *extra]
        dry = []
        for when in ("before", "run", "after", "after"):
            if when == "run":
                wall, _ = run_ablate(args, folder, space)
                continue
            took, out = run_ablate([*args, "dry_run=true"], folder, f"{space} dry run")
            m = ESTIMATE.search(out)
            assert m, out[-2000:]
            dry.append((took, float(m[1])))
    (d0, e0), (d1, e1), (d2, e2) = dry
    return {"wall": wall, "fresh": e0, "after": e1, "again": e2,
            "dry_s": max(d0, d1, d2), "spread": abs(e1 - e2) / min(e1, e2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="*", default=["isclip_modules", "omniclip_modules"])
    ap.add_argument("--args", nargs="*", default=[], help="more key=value settings")
    args = ap.parse_args()
    rows = {}
    for space in args.spaces:
        rows[space] = r = one(space, args.args)
        print(f"[{space}] measured {r['wall']:.0f} s; estimates {r['fresh']:.0f} (fresh "
              f"storage), {r['after']:.0f} and {r['again']:.0f} s (after the run); slowest dry "
              f"run {r['dry_s']:.1f} s", flush=True)
    print(f"\n{' '.join(args.args)}".rstrip())
    print("| table | measured wall (s) | estimate, fresh storage (s) | ratio | estimate after "
          "the run (s) | ratio | second dry run (s) | spread | slowest dry run (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for space, r in rows.items():
        print(f"| `{space}` | {r['wall']:.0f} | {r['fresh']:.0f} | "
              f"{r['fresh'] / r['wall']:.2f} | {r['after']:.0f} | {r['after'] / r['wall']:.2f} | "
              f"{r['again']:.0f} | {100 * r['spread']:.1f} % | {r['dry_s']:.1f} |")


if __name__ == "__main__":
    main()

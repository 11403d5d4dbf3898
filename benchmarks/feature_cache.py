"""Feature cache: table wall time with and without it, and per-clip costs at ViT-B-16 size.

Part 1 (measured end to end, one process, one Ray cluster): the same table on the embedded
default (tiny CLIP, synthetic clips), same epochs, once with ``cache=off`` and once with
``cache=auto`` (fresh storage each, so the cached run pays for building its entries).

Part 2 (measured per clip, extrapolated per table): each row of the table at the real size
(ViT-B-16, 8 x 224^2, random weights) timed on this machine: a training step from pixels
(frozen tower + modules), a training step from cached tokens, and building one clip's entry.
A table of n trials x E epochs x N clips then costs n E N u without the cache and
V N b + n E N c with it (V fixed draws per clip), so the ratio is n E u / (V b + n E c); decode
time per clip (``--decode-s``, from ``benchmarks/loader.py``) adds to u and to b.

    python benchmarks/feature_cache.py                 # both parts
    python benchmarks/feature_cache.py --skip-table    # part 2 only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

from vidablate.sweep.caching import plan_trials  # noqa: E402
from vidablate.sweep.cost import measure  # noqa: E402
from vidablate.sweep.runner import SweepSettings, run_sweep  # noqa: E402
from vidablate.sweep.space import expand, load_space  # noqa: E402


def run_table(space: str, epochs: int, rows: list[str] | None) -> dict[str, float]:
    times: dict[str, float] = {}
    tops: dict[str, list[float]] = {}
    for mode in ("off", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            settings = SweepSettings(storage_path=f"{tmp}/ray_results",
                                     tracking_uri=f"sqlite:///{tmp}/mlflow.db", cache=mode,
                                     rows=rows, num_cpus=2)
            start = time.perf_counter()
            report = run_sweep(space, None, {"trainer": {"epochs": epochs}}, settings)
            times[mode] = time.perf_counter() - start
            assert report is not None
            tops[mode] = [round(o.metrics.get("top1", float("nan")), 2) for o in report.outcomes]
    print(f"\n{space}, {epochs} epochs, embedded default: without cache {times['off']:.1f} s, "
          f"with cache {times['auto']:.1f} s: {times['off'] / times['auto']:.2f}x")
    print(f"top-1 per row without / with the cache: {tops['off']} / {tops['auto']}")
    return {"table_s_off": times["off"], "table_s_cache": times["auto"]}


def per_clip(space: str, backbone: str, size: int, frames: int, classes: int,
             repeats: int, model: dict | None = None,
             rows: list[str] | None = None) -> list[dict[str, float | str]]:
    sp = load_space(space)
    over = {"model": {"backbone": backbone, "pretrained": None, **(model or {})},
            "data": {"image_size": size, "num_frames": frames, "train_per_class": 1,
                     "test_per_class": 1}}
    trials = expand(sp, None, over, [0])
    with tempfile.TemporaryDirectory() as tmp:
        plans = plan_trials(trials, tmp, "auto")
    out = []
    for t in trials:
        if not t.experiment["trainer"]["epochs"] or (rows and t.row not in rows):
            continue
        tc = plans[t.key]
        c = measure(t.experiment, tc, batch=1, repeats=repeats, classes=classes)
        out.append({"row": t.row, "cache": tc.plan.line(), "train_s": c.train,
                    "train_cached_s": c.train_cached, "build_s": c.build, "eval_s": c.eval,
                    "eval_cached_s": c.eval_cached, "device": c.device})
        print(f"{t.row:<14} step from pixels {c.train:.3f} s/clip, from cache "
              f"{c.train_cached:.4f} s/clip ({c.train / max(c.train_cached, 1e-12):.0f}x), "
              f"build {c.build:.3f} s/clip; {tc.plan.line()}", flush=True)
    return out


def table_ratio(u: float, c: float, b: float, epochs: int, trials: int, draws: int,
                decode: float) -> float:
    return trials * epochs * (u + decode) / (draws * (b + decode) + trials * epochs * c)


def whole_table_ratio(rows: list[dict], seeds: int, epochs: int, draws: int,
                      decode: float) -> float:
    """A table's cost without / with the cache from its rows' per-clip costs (the rows share
    their cached entries, so one build per clip)."""
    u = sum(r["train_s"] + decode for r in rows)
    c = sum(r["train_cached_s"] for r in rows)
    b = max(r["build_s"] for r in rows) + decode
    return seeds * epochs * u / (draws * b + seeds * epochs * c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="motionprompt_key_designs")
    ap.add_argument("--epochs", type=int, default=15, help="part 1 epochs (embedded default)")
    ap.add_argument("--rows", nargs="*", help="part 1: only these rows")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--classes", type=int, default=51, help="HMDB-51 for MotionPrompt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paper-epochs", type=int, default=30,
                    help="epochs per trial in the extrapolated table")
    ap.add_argument("--draws", type=int, default=1,
                    help="fixed training draws cached per clip (data.cache_train_views)")
    ap.add_argument("--decode-s", type=float, default=1 / 7.3,
                    help="decode seconds per clip (loader.py: 7.3 clips/s per process, sparse "
                         "8x224^2 from 340x256 Kinetics-size video)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, object] = {}
    if not args.skip_table:
        results.update(run_table(args.space, args.epochs, args.rows))
    rows = per_clip(args.space, args.backbone, args.size, args.frames, args.classes,
                    args.repeats)
    results["per_clip"] = rows
    counts = [1, 4, 8, 16, 24]
    print(f"\nextrapolated table ratio (without / with cache) at {args.backbone}, "
          f"{args.frames}x{args.size}^2, {args.paper_epochs} epochs, {args.draws} draw(s); "
          f"trials = {counts}")
    print("| row | decode excluded | decode included |\n|---|---|---|")
    for r in rows:
        cells = []
        for decode in (0.0, args.decode_s):
            ratios = [table_ratio(r["train_s"], r["train_cached_s"], r["build_s"],
                                  args.paper_epochs, n, args.draws, decode) for n in counts]
            cells.append(" / ".join(f"{x:.1f}" for x in ratios))
        print(f"| {r['row']} | {cells[0]} | {cells[1]} |")
    for seeds in (1, 3):
        ratio = whole_table_ratio(rows, seeds, args.paper_epochs, args.draws, args.decode_s)
        print(f"whole table ({len(rows)} trained rows x {seeds} seed(s), decode included): "
              f"{ratio:.1f}x cheaper with the cache")
        results[f"table_ratio_{seeds}_seeds"] = ratio
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

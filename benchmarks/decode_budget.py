"""Decode throughput needed vs delivered at the measured step speed, and what the feature cache
delivers instead, in one run.

Needed: training clips/s of one device. ``--step-json`` takes it from a ``gpu_step.py --json``
run on a GPU (clips/s per mode); without it the step is measured here, on this machine's CPU,
for ViT-B-16 8 x 224^2 (full fine-tune and frozen backbone + MMB), with ``vidablate.sweep.cost``.
Delivered: clips/s of one decode process (decord or PyAV, sparse 8 frames, 224 px, from
340x256 H.264 clips written like ``loader.py``'s), and clips/s read from a feature-cache entry
of ViT-B-16 shapes (CLS tokens for a frozen tower; all 197 tokens after a frozen prefix), both
measured now. The table gives decode processes per device = needed / delivered.

    python benchmarks/decode_budget.py [--step-json gpu.json] [--clips 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO / "benchmarks"))


def step_speed(repeats: int) -> dict[str, float]:
    """Training clips/s measured here for the two modes of gpu_step.py."""
    from types import SimpleNamespace

    from vidablate.config import ExperimentConfig
    from vidablate.data.cache import CachePlan
    from vidablate.sweep.cost import measure

    modes = {"full fine-tune": {"trainable_blocks": 12},
             "frozen backbone + MMB": {"trainable_blocks": 0, "train_visual_proj": False,
                                       "mmb": True}}
    out = {}
    for name, model in modes.items():
        exp = ExperimentConfig.from_dict({
            "model": {"backbone": "ViT-B-16", "distill": False, **model},
            "data": {"image_size": 224, "num_frames": 8, "protocol": "closed_set"},
            "trainer": {"epochs": 1}}).to_dict()
        cached = "trainable_blocks" in model and not model["trainable_blocks"]
        c = measure(exp, SimpleNamespace(plan=CachePlan(cached, "")), batch=2,
                    repeats=repeats, classes=51)
        out[name] = 1.0 / c.train
        if cached:
            out[f"{name}, from the cache"] = 1.0 / c.train_cached
    return out


def decode_speed(clips: int) -> dict[str, float]:
    from loader import Clips, one_worker, synthetic_mp4

    from vidablate.data.video import available_backends

    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = [synthetic_mp4(Path(tmp) / f"c{i}.mp4", seed=i) for i in range(3)]
        for backend in available_backends():
            out[backend] = one_worker(Clips(files, backend, "sparse", 1, clips))[0]
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    return out


def cache_speed(rows: int) -> dict[str, float]:
    """clips/s read through CachedClips + DataLoader (batch 32, in-process) from entries of
    ViT-B-16 shapes written to a temporary folder."""
    from torch.utils.data import DataLoader

    from vidablate.data import cache

    out = {}
    for select, tokens in (("cls", 1), ("all", 197)):
        with tempfile.TemporaryDirectory() as tmp:
            entry = cache.Entry("train", f"bench-{select}", f"{tmp}/e", {"select": select},
                                rows, 1, True, 8, tokens, 768, "float32", 256)
            cache.prepare(entry)
            for part in range(entry.parts):
                a, b = entry.part_range(part)
                np.save(entry.path(part, ".npy"),
                        np.random.default_rng(part).standard_normal(
                            (b - a, 1, 8, tokens, 768), dtype=np.float32))
                np.savez(entry.path(part, ".aux.npz"), labels=np.zeros(b - a, np.int64),
                         valid=np.ones((b - a, 1), bool))
                entry.path(part, ".done").write_text("{}")
            loader = DataLoader(cache.CachedClips(entry), batch_size=32, shuffle=True)
            start = time.perf_counter()
            n = sum(len(batch["label"]) for batch in loader)
            out[f"cache ({select} tokens, {entry.bytes / rows / 2**20:.2f} MiB/clip)"] = \
                n / (time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-json", type=Path, help="results of gpu_step.py --json on a GPU")
    ap.add_argument("--clips", type=int, default=48, help="clips decoded per backend")
    ap.add_argument("--cache-rows", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.step_json:
        runs = json.loads(args.step_json.read_text())
        rows = runs if isinstance(runs, list) else runs.get("results", [])
        needed = {r["mode"]: float(r["clips_per_s"]) for r in rows}
        where = f"GPU ({args.step_json.name})"
    else:
        needed = step_speed(args.repeats)
        where = "this machine's CPU (measured now)"
    delivered = {f"decode ({k}, 1 process)": v for k, v in decode_speed(args.clips).items()}
    delivered.update(cache_speed(args.cache_rows))
    print(f"\nneeded: training clips/s on {where}")
    for mode, v in needed.items():
        print(f"  {mode}: {v:.2f} clips/s")
    print("\n| source | delivers clips/s | " + " | ".join(
        f"processes for {m}" for m in needed) + " |")
    print("|---|---:|" + "---:|" * len(needed))
    for source, rate in delivered.items():
        cells = " | ".join(f"{need / rate:.2f}" for need in needed.values())
        print(f"| {source} | {rate:.1f} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps({"needed": needed, "delivered": delivered}, indent=1))


if __name__ == "__main__":
    main()

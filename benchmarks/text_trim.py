"""Text tower run only up to the last end-of-text token (``model.trim_text``), side by side
with the full 77-position run, at the real size (ViT-B-16, 8 x 224^2, 51 classes as HMDB-51,
random weights) on MotionPrompt Fig. 3(a) (``motionprompt_key_designs``).

Per row: seconds per clip of a training step from pixels and from the feature cache, both
ways, and their ratio (MAP's prompts depend on the video, so its rows run the text tower for
every class and clip). Then the whole table's cost without / with the cache
(``feature_cache.py``'s formula, decode included), with the text tower trimmed and not.

    python benchmarks/text_trim.py [--json text_trim.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from feature_cache import per_clip, whole_table_ratio


def table_costs(rows: list[dict], epochs: int, decode: float) -> tuple[float, float]:
    """Seconds per clip of one seed of the table without and with the cache."""
    ratio = whole_table_ratio(rows, 1, epochs, 1, decode)
    without = epochs * sum(r["train_s"] + decode for r in rows)
    return without, without / ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="motionprompt_key_designs")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--classes", type=int, default=51, help="HMDB-51 for MotionPrompt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paper-epochs", type=int, default=30)
    ap.add_argument("--decode-s", type=float, default=1 / 7.3,
                    help="decode seconds per clip (loader.py)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shape = (args.space, args.backbone, args.size, args.frames, args.classes, args.repeats)
    results: dict[str, object] = {}
    for trim in (False, True):
        print(f"\n--- model.trim_text={str(trim).lower()}", flush=True)
        results[f"trim_{str(trim).lower()}"] = per_clip(*shape, model={"trim_text": trim})
    full, trimmed = results["trim_false"], results["trim_true"]
    print(f"\nper clip at {args.backbone}, {args.frames}x{args.size}^2, {args.classes} classes "
          f"(full / trimmed, seconds)")
    print("| row | step from pixels | ratio | step from cache | ratio |\n|---|---:|---:|---:|---:|")
    for a, b in zip(full, trimmed, strict=True):
        print(f"| {a['row']} | {a['train_s']:.3f} / {b['train_s']:.3f} | "
              f"{a['train_s'] / b['train_s']:.2f}x | {a['train_cached_s']:.4f} / "
              f"{b['train_cached_s']:.4f} | {a['train_cached_s'] / b['train_cached_s']:.2f}x |")
    costs = {name: table_costs(rows, args.paper_epochs, args.decode_s)
             for name, rows in (("full", full), ("trimmed", trimmed))}
    for name, (without, with_cache) in costs.items():
        results[f"table_cache_ratio_{name}"] = without / with_cache
        print(f"whole table, text tower {name}: {without / with_cache:.1f}x cheaper with the "
              f"cache than without")
    results["table_trimmed_cache_vs_full_uncached"] = costs["full"][0] / costs["trimmed"][1]
    print(f"whole table, trimmed with the cache against full without it: "
          f"{costs['full'][0] / costs['trimmed'][1]:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

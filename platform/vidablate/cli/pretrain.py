"""``vidablate pretrain``: rebuild the embedded default's tiny CLIP on synthetic pairs.

The seed-0 build ships in the package (``model.pretrained=synthetic``); the checksum printed by
a rebuild equals ``vidablate.pretrain.SHIPPED_CHECKSUM``. Use another file with
``model.pretrained=<out>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..pretrain import BUILD_STEPS, BUILD_THREADS, default_weights_path, pretrain_tiny_clip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidablate pretrain",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="torch and data seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file (default: the cache path used by pretrained=synthetic)")
    parser.add_argument("--max-steps", type=int, default=BUILD_STEPS,
                        help=f"optimizer steps (default {BUILD_STEPS}, the shipped build)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="optional time budget; > 0 makes the weights machine-dependent")
    parser.add_argument("--threads", type=int, default=BUILD_THREADS,
                        help=f"torch CPU threads (default {BUILD_THREADS}: deterministic)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_weights_path(args.seed)
    stats = pretrain_tiny_clip(out, seconds=args.seconds, max_steps=args.max_steps,
                               seed=args.seed, threads=args.threads)
    print(json.dumps({"out": str(out), **stats}, indent=2))
    return 0

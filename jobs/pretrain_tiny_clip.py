"""Pretrain the embedded default's tiny CLIP on synthetic pairs (DESIGN §4) and cache it.

    python jobs/pretrain_tiny_clip.py                      # 150 s, writes the default cache file
    python jobs/pretrain_tiny_clip.py --seconds 60 --threads 1 --out /tmp/tiny.pt

Then use it with ``model.pretrained=synthetic`` (or ``model.pretrained=<out>``).
"""

import argparse
import json
import sys
from pathlib import Path

try:
    import vidablate  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.pretrain import default_weights_path, pretrain_tiny_clip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="torch and data seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file (default: the cache path used by pretrained=synthetic)")
    parser.add_argument("--seconds", type=float, default=150.0, help="training budget")
    parser.add_argument("--max-steps", type=int, default=None, help="optional step limit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_weights_path(args.seed)
    stats = pretrain_tiny_clip(out, seconds=args.seconds, max_steps=args.max_steps,
                               seed=args.seed, threads=args.threads)
    print(json.dumps({"out": str(out), **stats}, indent=2))


if __name__ == "__main__":
    main()

"""Pretrain the embedded default's tiny CLIP on synthetic pairs (DESIGN §4) and cache it; the
same as ``vidablate pretrain``.

    python jobs/pretrain_tiny_clip.py --out /tmp/tiny.pt   # the deterministic build (600 steps)
    python jobs/pretrain_tiny_clip.py --seed 1             # writes the cache file of seed 1
"""

import sys
from pathlib import Path

try:
    import vidablate  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run a paper's ablation table (or an HPO space) on Ray and log it to MLflow; the same as
``vidablate ablate``.

    python jobs/ablate.py space=isclip_modules
    ray job submit --working-dir . -- python jobs/ablate.py space=isclip_modules
"""

import sys
from pathlib import Path

try:
    import vidablate  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from vidablate.cli.ablate import ablate

if __name__ == "__main__":
    sys.exit(ablate(sys.argv[1:]))

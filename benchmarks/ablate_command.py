"""The table command as users run it (``jobs/ablate.py``), timed from outside, for the
benchmarks that compare whole commands (``estimate.py``, ``trial_overhead.py``,
``hpo_early_stop.py``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_ablate(args: list[str], cwd: Path | str, label: str) -> tuple[float, str]:
    """Run ``jobs/ablate.py <args>`` in ``cwd``: its wall seconds and stdout. A failed command
    stops the benchmark with its exit code and the tail of its output."""
    cmd = [sys.executable, str(REPO / "jobs" / "ablate.py"), *args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label}: exit {done.returncode}\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return took, done.stdout

"""Where a sweep's time goes: its wall time against its trials' time inside the training loop,
the fixed cost per trial (everything else a trial takes: Tune (and Train) start-up, MLflow,
model and data builds), per sweep, and the command's start-up before the sweep (interpreter,
checks, Ray, MLflow; feature-cache building is estimated on its own), measured at the end of
every sweep and saved beside its storage so the next dry run on the same storage estimates
with this machine's figures."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from .tracking import trial_times

TIMINGS_FILE = "vidablate-timings.json"
"""Under the storage root: the last measured fixed costs of this cluster."""

TRIAL_START_S = 2.5
"""Fixed seconds per trial when no sweep has run on the storage yet: what a one-worker trial
in its own process (``trainer.executor=auto``) spends outside its training loop on a 2-core
development machine (Tune trial process, MLflow run, model and data build): 2.1 s measured on
``isclip_modules`` (``benchmarks/trial_overhead.py``); a trial under Ray Train adds its
controller, worker group and placement group (26 s there)."""
SWEEP_START_S = 18.0
"""Fixed seconds per sweep after the Tuner starts that no trial covers (Tune's start, the
report, the MLflow artifacts), on the same machine and table."""
STARTUP_S = 30.0
"""Seconds from the command's start to the Tuner's, less feature-cache building: the
interpreter and its imports, the checks, a local Ray cluster, the MLflow store and parent run
(25-33 s on the same machine)."""


@dataclass
class Timings:
    """The fixed costs one sweep measured."""

    trial_start_s: float
    """Seconds per trial outside its training loop (``summarise``)."""
    sweep_start_s: float
    """Wall time of the sweep before its first trial and after its last."""
    trials: int
    host: str
    cpus: int
    sweep: str
    at: float
    startup_s: float = STARTUP_S
    """Seconds from the command's start to the Tuner's, feature-cache building left out (a
    file saved before this field existed reads as the default)."""


def summarise(wall: float, spans: dict[str, tuple[float, float]],
              loop_s: dict[str, float], sweep: str, concurrency: int = 1
              ) -> tuple[Timings, float]:
    """The fixed costs of a finished sweep and its trials' total time in the loop, from each
    trial's (start, end) on the driver, its summed loop seconds and the trials run at once.

    Per sweep: the wall time before the first trial starts and after the last one ends. Per
    trial: the slot time between those two moments (``concurrency`` slots) not spent in a
    loop, shared over the trials: it holds what a trial costs before Tune calls it started
    (a trial process starting, its imports) and between its reports, which its own span on
    the driver does not show."""
    loop_total = sum(loop_s.values())
    if not spans:
        return Timings(TRIAL_START_S, max(wall, 0.0), 0, socket.gethostname(),
                       os.cpu_count() or 1, sweep, time.time()), loop_total
    first = min(start for start, _ in spans.values())
    last = max(end for _, end in spans.values())
    slots = max(min(concurrency, len(spans)), 1)
    per_trial = max((last - first) * slots - loop_total, 0.0) / len(spans)
    timings = Timings(per_trial, max(wall - (last - first), 0.0), len(spans),
                      socket.gethostname(), os.cpu_count() or 1, sweep, time.time())
    return timings, loop_total


def time_line(wall: float, loop_total: float, concurrency: int, t: Timings) -> str:
    """One console line: wall time against the trials' loop time run ``concurrency`` at once."""
    ideal = loop_total / max(concurrency, 1)
    ratio = f"{wall / ideal:.2f}x" if ideal > 0 else "n/a"
    return (f"time: wall {wall:.0f} s; the trials' training loops {loop_total:.0f} s in all, "
            f"{ideal:.0f} s at {concurrency} at once: wall / loop = {ratio}; fixed cost "
            f"{t.trial_start_s:.1f} s per trial ({t.trials} trials), {t.sweep_start_s:.0f} s "
            f"per sweep")


def report(sid: str, storage: str, wall: float, concurrency: int,
           startup_s: float | None = None) -> None:
    """After a sweep: print its wall time against its trials' loop time and save its fixed
    costs (with ``startup_s``, the command's start-up before the sweep) for the next dry run
    on this storage."""
    spans, loop_s = trial_times(sid)
    restart_origin()
    if not spans:  # every trial had finished under an earlier driver
        return
    measured, loop_total = summarise(wall, spans, loop_s, sid, concurrency)
    if startup_s is not None:
        measured.startup_s = startup_s
        print(f"time: start-up {startup_s:.0f} s before the sweep (feature-cache building "
              f"left out)", flush=True)
    print(time_line(wall, loop_total, concurrency, measured), flush=True)
    save(storage, measured)


def process_started() -> float:
    """When this process started (epoch seconds; Linux's /proc), else now."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_ORIGIN = [process_started()]
"""Where the next sweep's start-up is measured from: the process's start, then the end of the
previous sweep of a multirun."""


def origin() -> float:
    return _ORIGIN[0]


def restart_origin() -> None:
    _ORIGIN[0] = time.time()


def _fs(storage: str) -> tuple[Any, str]:
    # pyarrow's filesystems load only where a sweep saves or reads its timings
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)


def save(storage: str, timings: Timings) -> None:
    """Write the timings under the storage root (a failure to write costs only the estimate)."""
    try:
        fs, root = _fs(storage)
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{TIMINGS_FILE}") as f:
            f.write(json.dumps(asdict(timings), indent=1).encode())
    except (OSError, ValueError) as err:
        print(f"time: could not save {TIMINGS_FILE} under {storage} ({err})", flush=True)


def load(storage: str) -> Timings | None:
    """The timings the last sweep on this storage saved; None when none did (or unreadable)."""
    try:
        fs, root = _fs(storage)
        with fs.open_input_stream(f"{root}/{TIMINGS_FILE}") as f:
            return Timings(**json.loads(f.readall()))
    except (OSError, ValueError, TypeError):
        return None

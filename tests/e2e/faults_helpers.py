"""Helpers of the fault-injection tests (tests/e2e/test_faults.py): the CLI as a child process
whose output lines are timestamped as they arrive, its Ray process tree, and waits with
deadlines that fail with the tail of the output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray  # noqa: F401 - puts Ray's bundled psutil on sys.path

import psutil  # noqa: E402  isort: skip

PROGRESS = re.compile(r"\]\s+(?P<key>\S+)\s+epoch (?P<epoch>\d+)/(?P<total>\d+)\s")
"""The driver's progress line, one per result Tune receives (MLflowTrialCallback)."""


class Cli:
    """``jobs/ablate.py`` in its own session (session id = its pid), stdout and stderr read
    by two threads into lists of (arrival time, line)."""

    def __init__(self, cmd: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        self.started = time.time()
        self.cwd = Path(cwd)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     start_new_session=True)
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream: Any, into: list[tuple[float, str]]) -> None:
        for line in stream:
            into.append((time.time(), line.rstrip("\n")))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in list(self.out))

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in list(self.err))

    def tail(self, n: int = 3000) -> str:
        return (f"\n--- stdout (tail) ---\n{self.stdout[-n:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-n:]}")

    def dump(self, name: str) -> None:
        """Keep both streams, with arrival times, beside the test's files."""
        for suffix, lines in (("stdout", self.out), ("stderr", self.err)):
            with open(self.cwd / f"{name}.{suffix}.log", "w") as f:
                f.writelines(f"{t:.3f} {line}\n" for t, line in list(lines))

    def progress(self, before: float | None = None) -> list[tuple[float, str, int]]:
        """(arrival time, trial key, epoch) of every progress line (before a time, if given)."""
        found = []
        for t, line in list(self.out):
            m = PROGRESS.search(line)
            if m and (before is None or t < before):
                found.append((t, m["key"], int(m["epoch"])))
        return found

    def wait(self, timeout: float) -> int:
        """The exit code; fails (after killing the session) when it runs past ``timeout``."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_session()
            raise AssertionError(f"the CLI ran past {timeout:.0f} s{self.tail()}") from None
        for r in self._readers:
            r.join(timeout=10)
        return code

    def session(self) -> list[psutil.Process]:
        """Every live process of the session this CLI leads (``start_new_session``: session id
        = its pid), its own included. Ray's worker processes put themselves in their own
        process groups, and outlive their parents as orphans, but keep the session id, so
        this finds what ``descendants`` of a dead driver cannot."""
        found = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.pid and p.create_time() >= self.started - 1:
                    found.append(p)
            except (OSError, psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in found if alive(p)]

    def kill_session(self) -> None:
        """SIGKILL this CLI and every process of its session (only processes this test
        started: the CLI, the Ray cluster it started and that cluster's workers)."""
        for p in [self.proc_handle(), *descendants(self.pid), *self.session()]:
            if p is not None:
                _kill(p)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def proc_handle(self) -> psutil.Process | None:
        try:
            return psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return None


def _kill(p: psutil.Process) -> None:
    try:
        p.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def describe(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())[:80]
        return f"{p.pid} {p.name()} [{cmd}]"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"{p.pid} (gone)"


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def train_workers(root: int, title: str = "RayTrainWorker") -> list[psutil.Process]:
    """The Ray Train worker actors (``ray::RayTrainWorker``, process title set by Ray) of the
    cluster that the CLI with pid ``root`` started: gcs_server and raylet are children of the
    driver, the worker processes children of the raylet. Other Ray clusters on the machine
    (other test sessions) are not descendants and are never touched. ``title``: another
    actor's class (``ImplicitFunc``: a Tune trial's own process)."""
    found = []
    for p in descendants(root):
        try:
            name = p.name() + " " + " ".join(p.cmdline()[:1])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title in name and alive(p):
            found.append(p)
    return sorted(found, key=lambda p: p.pid)


TRIAL_PROCESS = "ImplicitFunc"
"""The actor class of a Tune function trainable: a trial whose loop runs in its own process
(``trainer.executor=trial``) is a ``ray::ImplicitFunc.train`` process."""


def wait_until(what: str, check: Callable[[], Any], timeout: float, cli: Cli,
               poll: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds or when
    the CLI exits first, with the tail of its output."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if cli.proc.poll() is not None:
            time.sleep(0.5)  # let the readers drain
            raise AssertionError(f"the CLI exited ({cli.proc.returncode}) before {what}"
                                 f"{cli.tail()}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{cli.tail()}")


RAY_START_FAILED = "The current node timed out during startup"
"""Ray gives a new local node 30 s (hard-coded) to register; on 2 cores shared with other test
sessions it sometimes needs more. Nothing of the sweep exists yet then, so it is started again."""


def launch(cmd: list[str], cwd: Path, timeout: float, attempts: int = 3) -> Cli:
    """Start the CLI and wait for its ``sweep <id>: N trials`` line (Ray is up, the MLflow runs
    exist); a Ray node that did not start in time is retried."""
    for attempt in range(attempts):
        cli = Cli(cmd, cwd)
        try:
            wait_until("the 'sweep <id>: N trials' line",
                       lambda c=cli: SWEEP_LINE.search(c.stdout), timeout, cli, 0.1)
            return cli
        except AssertionError:
            cli.kill_session()
            if RAY_START_FAILED in cli.stderr and attempt + 1 < attempts:
                print(f"[faults] Ray did not start in time (attempt {attempt + 1}); again")
                continue
            raise
    raise AssertionError("unreachable")


def run_to_end(cmd: list[str], cwd: Path, timeout: float, name: str) -> tuple[Cli, int]:
    """Launch the CLI and wait for its exit code; its session is killed and its output kept
    (``<name>.stdout.log``) whatever happens."""
    cli = launch(cmd, cwd, timeout)
    try:
        code = cli.wait(timeout)
    finally:
        cli.kill_session()
        cli.dump(name)
    return cli, code


SWEEP_LINE = re.compile(r"^sweep (\S+): \d+ trials", re.M)


def sweep_id(stdout: str) -> str:
    m = SWEEP_LINE.search(stdout)
    assert m, f"no 'sweep <id>: N trials' line in stdout:\n{stdout[-2000:]}"
    return m.group(1)


def tune_results(storage: Path, sid: str, trial: str) -> list[dict[str, Any]]:
    """Every result Tune received for a trial, in order (its result.json, one line each)."""
    path = storage / sid / trial / "result.json"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_checkpoint(storage: Path, sid: str, trial: str) -> dict[str, Any]:
    """The trial's latest checkpoint state: the one Ray Train's checkpoint manager registered,
    or for a loop run in the trial's process the newest in its Tune trial folder."""
    import pyarrow.fs
    import torch

    from vidablate.train.session import newest_checkpoint

    folder = storage / f"{sid}-train" / trial
    if (folder / "checkpoint_manager_snapshot.json").exists():
        snapshot = json.loads((folder / "checkpoint_manager_snapshot.json").read_text())
        path = folder / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    else:
        path = Path(newest_checkpoint(pyarrow.fs.LocalFileSystem(), str(storage / sid / trial)))
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def checkpoint_root(storage: Path | str, sid: str, trial: str) -> str:
    """The folder (path or URI) that holds a trial's checkpoint folders: Ray Train's run
    folder under ``<sid>-train``, or the Tune trial folder under ``<sid>`` for a loop run in
    the trial's own process (whichever has checkpoints; Tune's when neither has yet)."""
    train, tune = f"{storage}/{sid}-train/{trial}", f"{storage}/{sid}/{trial}"
    return train if _checkpoints(train) else tune


def _checkpoints(uri: str) -> set[str]:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return {f.base_name for f in found
            if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith("checkpoint_")}


def checkpoint_dirs(storage: Path | str, sid: str, trial: str) -> set[str]:
    """The names of a trial's checkpoint folders, on a local or an object-store storage."""
    return _checkpoints(checkpoint_root(storage, sid, trial))



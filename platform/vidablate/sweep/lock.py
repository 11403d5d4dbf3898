"""One launch of a sweep at a time per storage path, and a tracking store created once.

Two copies of the same command would train every trial twice into the same checkpoint
folders. The first launch holds ``<storage>/<sweep id>.lock`` (JSON with its host, pid, start
time and command, written aside and hard-linked into place, which fails when the lock exists
and shows a second launch the record whole) and refreshes the file's time while it runs; a second
launch fails at once naming the holder. A lock whose holder is gone is taken over: same host and
the pid is not alive, or (another host) not refreshed for ``STALE_AFTER_S``.

MLflow creates a new sqlite store's schema on first use; two processes doing it at once crash
inside the migration, so ``store_created`` serialises that first use with a file lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import ConfigError

HEARTBEAT_S = 30.0
"""How often the holder refreshes its lock file's time."""
STALE_AFTER_S = 600.0
"""A lock held from another host and not refreshed for this long is taken over (its holder
was lost with its machine)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class SweepLock:
    """Hold ``path`` while a sweep runs (a context manager); ``path`` is in a local or shared
    folder. ``stale_after`` seconds without a refresh make another host's lock stale."""

    def __init__(self, path: str | Path, command: str = "",
                 stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S) -> None:
        self.path = Path(path)
        self.command = command
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created: list[Path] = []

    def holder(self) -> dict[str, Any] | None:
        """The record of the launch holding the lock, None when it is free."""
        try:
            record = json.loads(self.path.read_text() or "{}")
            record["age_s"] = time.time() - self.path.stat().st_mtime
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # written half by a crashed holder
            return {"age_s": time.time() - self.path.stat().st_mtime}

    def stale(self, record: dict[str, Any]) -> bool:
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            return not _alive(record["pid"])
        return record["age_s"] > self.stale_after

    def acquire(self) -> None:
        missing = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self._created = missing  # folders made for the lock alone go with it when empty
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "command": self.command}
        # The record is written under a private name and hard-linked into place: the lock
        # appears with its content, so a second launch never reads it half written.
        draft = self.path.with_name(f".{self.path.name}.{socket.gethostname()}.{os.getpid()}")
        fd = os.open(draft, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            self._take(draft)
        finally:
            with contextlib.suppress(FileNotFoundError):
                draft.unlink()

    def _take(self, draft: Path) -> None:
        for _ in range(3):
            try:
                os.link(draft, self.path)
            except FileExistsError:
                record = self.holder()
                if record is None:
                    continue  # released meanwhile
                if not self.stale(record):
                    raise ConfigError(self._busy(record)) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # a crashed holder's lock
                continue
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name="vidablate-sweep-lock")
            self._thread.start()
            return
        raise ConfigError(f"{self.path}: could not take the sweep's lock (it changed hands "
                          f"three times meanwhile)")

    def _busy(self, record: dict[str, Any]) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"])) \
            if isinstance(record.get("started"), (int, float)) else "?"
        return (f"this sweep is already running: pid {record.get('pid', '?')} on host "
                f"{record.get('host', '?')}, since {since} ({record.get('command') or '?'}); "
                f"lock {self.path}. Wait for it, stop it (Ctrl-C), or remove the lock if that "
                f"launch is gone")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        record = self.holder()
        if record and record.get("pid") == os.getpid() and \
                record.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for folder in self._created:  # innermost first; a folder the sweep filled stays
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def sweep_lock(storage: str, sweep_id: str, command: str) -> contextlib.AbstractContextManager:
    """The lock of one sweep in its storage; a cloud storage has no lock files (no O_EXCL
    there): nothing is held."""
    if "://" in storage:
        return contextlib.nullcontext()
    return SweepLock(Path(storage) / f"{sweep_id}.lock", command)


@contextlib.contextmanager
def store_created(tracking_uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite tracking store (MLflow creates its schema then);
    other stores (a server, PostgreSQL behind it) handle concurrent clients themselves."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri[len("sqlite:///"):])
    with FileLock(str(db) + ".init.lock", timeout=120):
        yield

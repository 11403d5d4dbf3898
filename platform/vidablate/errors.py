"""Error types shared by every layer of the package; this module imports nothing of it.

Each error's message names what to fix: the config field, the file and line, or the toggle.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or combination is invalid; the message names the field."""


class BackboneError(RuntimeError):
    """The backbone or its weights could not be loaded; the message says which and why."""


class SweepInterrupted(Exception):
    """A signal stopped the sweep (``vidablate.sweep.interrupt``); ``code`` is the process exit
    code, 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum


INTERRUPTED_CODES = (130, 143)
"""Exit codes of an interrupted sweep (SIGINT, SIGTERM): a multirun stops at them."""


class NoSpaceError(OSError):
    """A folder has too little free space for what is about to be written (or ran out of it
    while writing): ``no space left on <path>: need N MiB, M free``. ``path`` is the folder,
    ``need`` and ``free`` are bytes (the message rounds ``need`` up and ``free`` down)."""

    def __init__(self, path: object, need: int, free: int) -> None:
        import errno
        import os

        self.path, self.need, self.free = os.fspath(path), int(need), int(free)
        super().__init__(f"no space left on {self.path}: need {-(-self.need // 2**20)} MiB, "
                         f"{self.free // 2**20} free")
        self.errno = errno.ENOSPC

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.need, self.free)


def free_space(path: object) -> int:
    """Bytes free (to this user) on the filesystem of ``path``, or of its nearest existing
    parent when ``path`` does not exist yet."""
    import os
    import shutil
    from pathlib import Path

    folder = Path(os.fspath(path)).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_space(path: object, need: int) -> None:
    """Raise NoSpaceError before writing ``need`` bytes under ``path`` when they do not fit."""
    free = free_space(path)
    if need > free:
        raise NoSpaceError(path, need, free)


def out_of_space(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from or during, is ENOSPC or EDQUOT (torch
    and numpy wrap the OSError of the failed write in errors of their own)."""
    import errno

    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def no_space_error(exc: BaseException, path: object, need: int) -> NoSpaceError | None:
    """The NoSpaceError for a write under ``path`` of ``need`` bytes that failed with ``exc``
    (its free space measured now), ``exc`` itself when it is one, or None when ``exc`` is not
    about space."""
    if isinstance(exc, NoSpaceError):
        return exc
    if not out_of_space(exc):
        return None
    return NoSpaceError(path, need, free_space(path))


class TrackingUnreachable(RuntimeError):
    """The tracking store stopped answering during a sweep and did not come back in time:
    the trials' results and checkpoints are in the sweep's storage, the writes MLflow lacks
    are listed (and saved to a file); the same command, once the store answers, resumes."""

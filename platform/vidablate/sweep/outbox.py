"""Writes to the tracking store that survive an outage of the tracking server: the driver keeps
them in order while the server does not answer, so trials keep training, and delivers them
when it answers again. What is never delivered is named and saved, not dropped.

MLflow's client retries a request for minutes by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
7, backoff factor 2), which would stall Tune's event loop on the driver. While the server is
up a write here retries briefly (``RETRIES_UP``); once one has failed, later attempts try once
(``RETRIES_DOWN``), at most every ``RETRY_EVERY_S`` seconds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

RETRIES_UP = 2
"""Retries of a write while the server is thought up: 2 + 4 s of backoff (MLflow's
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 2), enough for a restart of a proxy, not a stall."""
RETRIES_DOWN = 0
TIMEOUT_S = 10
"""Per-request timeout of these writes (MLflow's default is 120 s)."""
RETRY_EVERY_S = 5.0
WAIT_AT_END_S = 300.0
"""How long the end of a sweep waits for the server before it saves what is undelivered."""

_UNREACHABLE = re.compile(
    r"Max retries exceeded|Connection refused|ConnectionError|NewConnectionError|timed out|"
    r"too many \d+ error responses|RemoteDisconnected|OperationalError|could not connect|"
    r"server closed the connection|Connection reset", re.IGNORECASE)


def unreachable(err: BaseException) -> bool:
    """Whether an exception from the MLflow client means the store did not answer (a
    connection refused, a timeout, 5xx after retries, a database that is down), rather than
    a rejected request, which is a bug to raise."""
    seen: BaseException | None = err
    while seen is not None:
        if _UNREACHABLE.search(f"{type(seen).__name__}: {seen}"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _requests(retries: int) -> Iterator[None]:
    """MLflow reads these variables at every request; set them around one write."""
    keep = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                           "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(TIMEOUT_S)
    try:
        yield
    finally:
        for k, v in keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Outbox:
    """Ordered writes to one tracking store. ``send(what, op)`` runs ``op`` now, or after the
    writes held before it; ``what`` names it for the console and for the file of
    undelivered writes ("trial baseline-s0: epoch 3 metrics")."""

    def __init__(self, store: str, printer: bool = True) -> None:
        self.store = store
        self.printer = printer
        self.held: list[tuple[str, Callable[[], None]]] = []
        self.down_since: float | None = None
        self._tried = 0.0
        self.delivered_late = 0

    def send(self, what: str, op: Callable[[], None]) -> None:
        self.held.append((what, op))
        self.deliver()

    def deliver(self, force: bool = False) -> bool:
        """Run the held writes in order; stop at the first the store does not answer.
        Returns whether none is left."""
        if self.down_since is not None and not force and \
                time.monotonic() - self._tried < RETRY_EVERY_S:
            return False
        while self.held:
            what, op = self.held[0]
            self._tried = time.monotonic()
            try:
                with _requests(RETRIES_DOWN if self.down_since is not None else RETRIES_UP):
                    op()
            except Exception as err:
                if not unreachable(err):
                    raise
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self._say(f"note: the tracking store {self.store} does not answer "
                              f"({_short(err)}); training goes on, its writes are held and "
                              f"retried every {RETRY_EVERY_S:g} s")
                return False
            self.held.pop(0)
            if self.down_since is not None:
                self.delivered_late += 1
        if self.down_since is not None:
            self._say(f"note: the tracking store {self.store} answers again after "
                      f"{time.monotonic() - self.down_since:.0f} s; {self.delivered_late} "
                      f"held writes delivered")
            self.down_since, self.delivered_late = None, 0
        return True

    def drain(self, wait_s: float = WAIT_AT_END_S, save_to: Path | None = None) -> list[str]:
        """At the end of a sweep: retry for up to ``wait_s`` seconds; what is still held is
        returned by name, and written to ``save_to`` (JSON) when given."""
        end = time.monotonic() + wait_s
        while not self.deliver(force=True) and time.monotonic() < end:
            time.sleep(min(RETRY_EVERY_S, max(end - time.monotonic(), 0)))
        missing = [what for what, _ in self.held]
        if missing and save_to is not None:
            save_to.parent.mkdir(parents=True, exist_ok=True)
            save_to.write_text(json.dumps({"store": self.store, "undelivered": missing},
                                          indent=1))
        return missing

    def _say(self, line: str) -> None:
        if self.printer:
            print(line, flush=True)


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:160]

"""Expected library messages dropped where they are logged (a filter on the one logger and
message each), so the console shows the sweep; everything else still gets through."""

from __future__ import annotations

import logging
import re

SLOW_CALLBACK_S = 5.0
"""Tune warns when a callback takes over 0.5 s; logging an epoch's metrics to MLflow (sqlite)
takes 0.5-2 s on 2 cores, so only slower calls are shown."""


class _SlowCallback(logging.Filter):
    """Tune's "The `X` operation took N s, which may be a performance bottleneck" below
    ``SLOW_CALLBACK_S``."""

    pattern = re.compile(r"operation took ([0-9.]+) s, which may be a performance bottleneck")

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.pattern.search(record.getMessage())
        return not match or float(match.group(1)) >= SLOW_CALLBACK_S


class _TokenNotice(logging.Filter):
    """Ray's notice that token authentication is on (the default we keep) on every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


class _SnapshotNotice(logging.Filter):
    """Tune's "Experiment state snapshotting has been triggered multiple times": it saves its
    state after every second checkpoint of a trial, as it must before deleting an older one
    (``CheckpointConfig(num_to_keep)``); with second-long epochs (the embedded default) that
    is every few seconds, and a snapshot of a sweep's state takes milliseconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Experiment state snapshotting has been triggered" not in record.getMessage()


FILTERS = {"ray.tune.utils.util": _SlowCallback(),
           "ray._private.authentication.authentication_token_setup": _TokenNotice(),
           "ray.tune.execution.experiment_state": _SnapshotNotice()}


def install() -> None:
    """Add the filters (once) to their loggers."""
    for name, filt in FILTERS.items():
        logger = logging.getLogger(name)
        if filt not in logger.filters:
            logger.addFilter(filt)

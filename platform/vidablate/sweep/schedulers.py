"""Early stopping of HPO trials: Ray Tune's trial schedulers (ASHA, HyperBand) beside Optuna's
TPE sampler, on the epochs a trial has trained. A space names one under ``scheduler:``;
``scheduler=<type>`` on the command line picks another type with the space's settings."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError

TYPES = ("fifo", "asha", "hyperband")
"""``fifo``: every trial trains all its epochs (Tune's default). ``asha``: asynchronous
successive halving (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020),
Tune's ``ASHAScheduler``. ``hyperband``: synchronous HyperBand brackets (Li et al., JMLR 2018),
Tune's ``HyperBandScheduler``."""

STOPPED = "stopped"
"""The status of a trial its scheduler stopped early (no error): a result, not a failure."""

TIME_ATTR = "epoch"
"""The budget a rung is measured in: the training loop reports one result per epoch, and a
restored trial's replayed history keeps its epoch numbers (``training_iteration`` restarts)."""


@dataclass(frozen=True)
class Scheduler:
    """How an HPO space stops trials early."""

    type: str = "fifo"
    """One of ``TYPES``; ``fifo`` (no early stopping) is Tune's default."""
    grace_period: int = 1
    """ASHA: epochs every trial trains before it can be stopped (Tune's default, 1)."""
    reduction_factor: float = 3.0
    """eta: a rung keeps the best 1/eta of the trials that reach it; 3 is the value of the
    ASHA and HyperBand papers' experiments and Tune's HyperBand default (Tune's ASHA default is
    4)."""
    max_t: int = 0
    """The most epochs a trial trains; 0 = the trial's ``trainer.epochs``."""

    def build(self, metric: str, mode: str, epochs: int) -> Any:
        """Tune's scheduler object, or None for ``fifo``."""
        # Tune's schedulers load only for HPO spaces (as OptunaSearch in hpo.py)
        from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

        max_t = self.max_t or epochs
        if self.type == "asha":
            return ASHAScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=max_t,
                                 grace_period=self.grace_period,
                                 reduction_factor=self.reduction_factor)
        if self.type == "hyperband":
            return HyperBandScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode,
                                      max_t=max_t, reduction_factor=self.reduction_factor)
        return None

    def describe(self, epochs: int) -> str:
        if self.type == "fifo":
            return "no early stopping"
        grace = f", grace period {self.grace_period}" if self.type == "asha" else ""
        return (f"{self.type} early stopping (max {self.max_t or epochs} epochs{grace}, "
                f"reduction factor {self.reduction_factor:g})")

    def check(self, where: str, epochs: int) -> None:
        """The settings fit the trial's epochs; errors name ``where`` (file or option)."""
        if self.type == "fifo":
            return
        max_t = self.max_t or epochs
        if max_t > epochs:
            raise ConfigError(f"{where}: scheduler.max_t={self.max_t} exceeds trainer.epochs="
                              f"{epochs}: no trial trains that long")
        if self.type == "asha" and self.grace_period > max_t:
            raise ConfigError(f"{where}: scheduler.grace_period={self.grace_period} exceeds "
                              f"max_t={max_t}: no trial could be stopped")


def parse_scheduler(where: str, raw: Any) -> Scheduler:
    """A space's ``scheduler:`` mapping (or a type name) as a ``Scheduler``; errors name
    ``where`` and the field."""
    if raw is None:
        return Scheduler()
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: scheduler must be a mapping or one of {TYPES}, got {raw!r}")
    known = {f.name for f in fields(Scheduler)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: scheduler has unknown field(s) {unknown}; known: "
                          f"{sorted(known)}")
    kind = raw.get("type", "fifo")
    if kind not in TYPES:
        raise ConfigError(f"{where}: scheduler.type must be one of {TYPES}, got {kind!r}")
    for name in ("grace_period", "max_t"):
        value = raw.get(name, 1 if name == "grace_period" else 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < (
                1 if name == "grace_period" else 0):
            raise ConfigError(f"{where}: scheduler.{name} must be an integer "
                              f"{'>= 1' if name == 'grace_period' else '>= 0'}, got {value!r}")
    eta = raw.get("reduction_factor", 3.0)
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or eta <= 1:
        raise ConfigError(f"{where}: scheduler.reduction_factor must be a number > 1, "
                          f"got {eta!r}")
    return Scheduler(type=kind, grace_period=int(raw.get("grace_period", 1)),
                     reduction_factor=float(eta), max_t=int(raw.get("max_t", 0)))

"""``vidablate ablate`` / ``vidablate cache``: the Hydra entry of a sweep.

Hydra parses the command line (``space=NAME``, ``data.k_shot=4``, ``-m`` for multirun); every
job of a multirun runs, and the process exits with the worst job's code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..errors import INTERRUPTED_CODES, ConfigError
from ..sweep.cli import CONFIG_DIR, check_overrides, main

if TYPE_CHECKING:  # annotations only
    from ..sweep.runner import SweepReport

_codes: list[int] = []
_cache_only: list[bool] = [False]
_command: list[str] = []
"""The command line as the user typed it (the resume command and the runs' tag)."""


@hydra.main(config_path=CONFIG_DIR, config_name="ablate", version_base="1.3")
def _job(cfg: DictConfig) -> None:
    # no sys.exit here: it would end a multirun after its first job (unless interrupted)
    code = main(cfg, list(HydraConfig.get().overrides.task), cache_only=_cache_only[0],
                after=_publish, command=list(_command))
    _codes.append(code)
    if code in INTERRUPTED_CODES:
        sys.exit(code)


def _publish(report: SweepReport) -> None:
    # the dashboard (matplotlib, MLflow) loads only for a sweep that ran: errors come sooner
    from ..dashboard.site import publish

    publish(report)


def run(argv: list[str], *, cache_only: bool = False, prog: str = "vidablate ablate") -> int:
    """Run Hydra on ``argv`` (without the program name); returns the worst job's exit code."""
    try:
        check_overrides(argv)
    except ConfigError as err:
        print(f"error: {err}", flush=True)
        return 2
    _codes.clear()
    _cache_only[0] = cache_only
    saved = sys.argv
    typed = saved[-len(argv):] == list(argv) if argv else len(saved) <= 2
    _command[:] = (([sys.executable] if saved[0].endswith(".py") else []) + list(saved)
                   if typed else [*prog.split(), *argv])  # called in-process (tests, notebooks)
    sys.argv = [prog, *argv]
    try:
        _job()
    finally:
        sys.argv = saved
    return max(_codes, default=0)


def ablate(argv: list[str]) -> int:
    return run(argv)


def cache(argv: list[str]) -> int:
    return run(argv, cache_only=True, prog="vidablate cache")

"""Hydra config -> run_sweep. jobs/ablate.py only parses and calls ``main``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ..config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from ..errors import ConfigError
from .runner import SweepSettings, run_sweep

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
SECTIONS = ("data", "model", "trainer", "eval")
SCHEMA = "vidablate_defaults"
"""Every field of the typed configs with its default, first in ``conf/ablate.yaml``'s defaults
list, so that any field can be set on the command line (``data.k_shot=4``) without ``+``."""


def register_schema() -> None:
    """Store the dataclass defaults in Hydra's ConfigStore under ``SCHEMA``."""
    kinds = {"data": DataConfig, "model": ModelConfig, "trainer": TrainConfig,
             "eval": EvalConfig}
    ConfigStore.instance().store(
        name=SCHEMA, node={k: dataclasses.asdict(kind()) for k, kind in kinds.items()})


register_schema()


def explicit_overrides(cfg: dict[str, Any], task_overrides: list[str]) -> dict[str, Any]:
    """Values the user set on the command line (``trainer.epochs=2``); they beat the space's
    ``fixed`` block, while group defaults (``model=vitb16``) do not."""
    out: dict[str, Any] = {}
    for item in task_overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if len(parts) == 2 and parts[0] in SECTIONS:
            out.setdefault(parts[0], {})[parts[1]] = cfg[parts[0]][parts[1]]
    return out


def main(cfg: DictConfig, task_overrides: list[str], cache_only: bool = False) -> int:
    """Run the sweep described by a composed Hydra config (or, ``cache_only``, only build its
    feature cache); returns a process exit code."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    base = {k: raw[k] for k in SECTIONS}
    settings = SweepSettings(
        storage_path=raw["storage_path"], tracking_uri=raw["tracking_uri"],
        resume=bool(raw["resume"]), seeds=list(raw["seeds"]) if raw["seeds"] else None,
        rows=[str(r) for r in raw["rows"]] if raw["rows"] else None,
        max_concurrent=int(raw["max_concurrent"]),
        max_trial_failures=int(raw["max_trial_failures"]), ray_address=raw["ray_address"],
        retry_errored=bool(raw["retry_errored"]),
        num_cpus=raw["num_cpus"], experiment_name=raw["experiment_name"],
        verbose_workers=bool(raw["verbose_workers"]), dry_run=bool(raw["dry_run"]),
        cache="off" if raw["cache"] in (False, "off") else str(raw["cache"]),
        cache_path=raw["cache_path"], cache_only=cache_only,
        recipe=str(raw.get("recipe_name", "auto")),
    )
    try:
        report = run_sweep(str(raw["space"]), base, explicit_overrides(raw, task_overrides),
                           settings)
    except ConfigError as err:
        print(f"error: {err}")
        return 2
    if report is None:
        return 0
    return 0 if all(o.status == "ok" for o in report.outcomes) else 1

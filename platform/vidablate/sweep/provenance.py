"""What a sweep's "ours" ran on, for the report's header and the parent run's tags: data,
backbone and weights, training budget, seeds, recipe and the code's commit."""

from __future__ import annotations

import getpass
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ..pretrain import BUILD_STEPS, MODEL_NAME, SHIPPED, SHIPPED_CHECKSUM
from .preflight import _redact
from .space import TrialSpec

SOURCE_ROOT = Path(__file__).resolve().parents[3]
"""The repository (or installed tree) the package runs from."""


def _values(trials: list[TrialSpec], section: str, key: str) -> list[Any]:
    """Distinct values of a config field over the trials, in first-seen order."""
    seen: dict[str, Any] = {}
    for t in trials:
        value = t.experiment[section].get(key)
        seen.setdefault(repr(value), value)
    return list(seen.values())


def _join(values: list[Any], by_row: str = " / ") -> str:
    text = by_row.join(str(v) for v in values)
    return f"{text} (by row)" if len(values) > 1 else text


def _data(trials: list[TrialSpec]) -> str:
    datasets = _values(trials, "data", "dataset")
    frames = _join(_values(trials, "data", "num_frames"))
    size = _join(_values(trials, "data", "image_size"))
    parts = []
    for name in datasets:
        if name == "synthetic":
            d = next(t.experiment["data"] for t in trials
                     if t.experiment["data"]["dataset"] == "synthetic")
            parts.append(
                f"synthetic video+IMU (generated; data seed = {_data_seed(trials)}), "
                f"{d['num_classes']} classes, {d['train_per_class']} train / "
                f"{d['test_per_class']} test clips per class, {d['num_distractors']} "
                f"distractor(s)")
        else:
            parts.append(f"{name} (manifests)")
    protocol = _join(_values(trials, "data", "protocol"))
    return f"{'; '.join(parts)}; protocol {protocol}; {frames} frames at {size} px"


def _data_seed(trials: list[TrialSpec]) -> str:
    pairs = {(t.seed, t.experiment["data"]["seed"]) for t in trials}
    if all(s == d for s, d in pairs):
        return "trial seed"
    return _join(sorted({d for _, d in pairs}))


def weights_line(backbone: str, pretrained: str | None) -> str:
    """A backbone and its weights in words."""
    if not pretrained:
        return f"{backbone}, random initialisation (no pretrained weights)"
    if pretrained == "synthetic" and backbone == MODEL_NAME:
        return (f"{backbone} pretrained on synthetic pairs ({BUILD_STEPS}-step build "
                f"{SHIPPED.name}, checksum {SHIPPED_CHECKSUM[:12]})")
    return f"{backbone}, weights {pretrained}"


def _model(trials: list[TrialSpec]) -> str:
    combos: dict[tuple[str, str | None], None] = {}
    for t in trials:
        combos[(t.experiment["model"]["backbone"], t.experiment["model"]["pretrained"])] = None
    return "; ".join(weights_line(b, p) for b, p in combos)


def _training(trials: list[TrialSpec]) -> str:
    epochs = _join(_values(trials, "trainer", "epochs"))
    batch = _join(_values(trials, "trainer", "batch_size"))
    recipes = sorted({t.recipe for t in trials if t.recipe})
    recipe = f"recipe {', '.join(recipes)}" if recipes else "no recipe (trainer defaults)"
    return f"{epochs} epochs, batch {batch}, {recipe}"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def commit() -> str:
    """The git commit of the running code ("+ local changes" when the tree differs), else the
    installed package's version."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"vidablate {metadata.version('vidablate')} (no git checkout)"
        except metadata.PackageNotFoundError:
            return "unknown (no git checkout, package not installed)"
    return head + (" + local changes" if dirty else "")


VERSIONED = ("vidablate", "torch", "torchvision", "open_clip_torch", "ray", "mlflow", "optuna",
             "numpy", "scipy", "hydra-core", "decord", "av")
"""Packages whose versions are tagged on every run (``vidablate.version.<package>``)."""


def source_tags() -> dict[str, str]:
    """MLflow's source tags (``mlflow.source.git.commit``, ``.branch``, ``.repoURL``): the
    full commit of the running code and ``vidablate.git.dirty`` when the tree differs;
    empty outside a git checkout."""
    try:
        tags = {"mlflow.source.git.commit": _git("rev-parse", "HEAD")}
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {}
    tags["vidablate.git.dirty"] = "true" if dirty else "false"
    for tag, args in (("mlflow.source.git.branch", ("rev-parse", "--abbrev-ref", "HEAD")),
                      ("mlflow.source.git.repoURL", ("config", "--get", "remote.origin.url"))):
        try:
            value = _git(*args)
        except (OSError, subprocess.SubprocessError):
            continue
        if value:
            tags[tag] = value
    return tags


def version_tags() -> dict[str, str]:
    """``vidablate.version.<package>`` for the packages a result depends on, and Python's."""
    tags = {"vidablate.version.python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            tags[f"vidablate.version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tags


COMMAND_TAG = "vidablate.command"
"""The command line that launched (or resumed) a sweep, on every run."""


def run_tags(command: list[str]) -> dict[str, str]:
    """Every run's tags: source (git), package versions, the command line
    (``vidablate.command``), ``mlflow.source.name``/``.type`` and ``mlflow.user``."""
    tags = {**source_tags(), **version_tags()}
    tags[COMMAND_TAG] = shlex.join(_redact(arg) for arg in command)  # no password in a tag
    tags["mlflow.source.name"] = command[0] if command else "vidablate"
    tags["mlflow.source.type"] = "LOCAL"
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    return tags


def provenance(trials: list[TrialSpec]) -> list[tuple[str, str]]:
    """(label, text) lines: data, model, training, seeds, commit."""
    seeds = sorted({t.seed for t in trials})
    return [("data", _data(trials)), ("model", _model(trials)), ("training", _training(trials)),
            ("seeds", f"{len(seeds)} ({', '.join(map(str, seeds))})"), ("commit", commit())]

"""Search-space files: one YAML per paper table (rows of toggles + the paper's numbers).

Loading validates every row against the typed config before any trial starts, so an unknown
toggle or an impossible combination fails with the file, the row and the field named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, ExperimentConfig, dotted_to_nested, merge

_TOP_KEYS = {"name", "paper", "title", "source", "metrics", "fixed", "seeds", "rows", "notes"}
_ROW_KEYS = {"name", "label", "toggles", "paper"}


class SpaceError(ConfigError):
    """A search-space file is malformed; the message names the file, row and field."""


@dataclass
class Row:
    """One line of a paper table: toggles (dotted config keys) and the paper's numbers."""

    name: str
    label: str
    toggles: dict[str, Any]
    paper: dict[str, float]


@dataclass
class Space:
    name: str
    paper: str
    title: str
    source: str
    metrics: dict[str, str]
    """Metric key -> column label, e.g. ``{"base_acc": "Base"}``."""
    fixed: dict[str, Any]
    seeds: list[int]
    rows: list[Row]
    path: Path
    notes: str = ""


@dataclass
class TrialSpec:
    """One Tune trial: a row of the table under one seed, with its resolved config."""

    key: str
    row: str
    seed: int
    experiment: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


def spaces_dirs() -> list[Path]:
    """Where ``space=NAME`` is looked up: $VIDABLATE_SPACES, ./search_spaces, the repo's."""
    dirs = []
    if os.environ.get("VIDABLATE_SPACES"):
        dirs.append(Path(os.environ["VIDABLATE_SPACES"]))
    dirs.append(Path.cwd() / "search_spaces")
    dirs.append(Path(__file__).resolve().parents[3] / "search_spaces")
    return dirs


def find_space(name: str) -> Path:
    """Resolve a space name (or a path to a YAML file) to a file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    for d in spaces_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in spaces_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise SpaceError(f"space={name!r}: no such search space; known: {known}")


def load_space(name_or_path: str | Path) -> Space:
    """Parse and structurally check a space file (values are checked by ``expand``)."""
    path = find_space(str(name_or_path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SpaceError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    for key in ("name", "rows", "metrics"):
        if key not in raw:
            raise SpaceError(f"{path}: missing required key {key!r}")
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise SpaceError(f"{path}: 'metrics' must map metric keys to column labels")
    rows = []
    for i, r in enumerate(raw["rows"] or []):
        where = f"{path}: rows[{i}]"
        if not isinstance(r, dict) or "name" not in r:
            raise SpaceError(f"{where}: each row needs a 'name'")
        bad = set(r) - _ROW_KEYS
        if bad:
            raise SpaceError(f"{where} ({r['name']}): unknown key(s) {sorted(bad)}")
        paper = r.get("paper") or {}
        stray = set(paper) - set(metrics)
        if stray:
            raise SpaceError(f"{where} ({r['name']}): paper values for unknown metric(s) "
                             f"{sorted(stray)}; metrics are {sorted(metrics)}")
        rows.append(Row(str(r["name"]), str(r.get("label", r["name"])),
                        dict(r.get("toggles") or {}),
                        {k: float(v) for k, v in paper.items()}))
    if not rows:
        raise SpaceError(f"{path}: 'rows' is empty")
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise SpaceError(f"{path}: row names must be unique, got {names}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpaceError(f"{path}: 'seeds' must be a non-empty list of integers")
    return Space(
        name=str(raw["name"]), paper=str(raw.get("paper", "")), title=str(raw.get("title", "")),
        source=str(raw.get("source", "")), metrics={str(k): str(v) for k, v in metrics.items()},
        fixed=dict(raw.get("fixed") or {}), seeds=list(seeds), rows=rows, path=path,
        notes=str(raw.get("notes", "")),
    )


def select_rows(space: Space, names: list[str]) -> Space:
    """A copy of ``space`` with only the named rows (in the space's order)."""
    known = [r.name for r in space.rows]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SpaceError(f"{space.path}: rows={unknown} not in the space; rows are {known}")
    return dataclasses.replace(space, rows=[r for r in space.rows if r.name in names])


def expand(
    space: Space,
    base: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
) -> list[TrialSpec]:
    """Rows × seeds -> validated trials.

    Precedence (later wins): ``base`` (Hydra groups) < the space's ``fixed`` < ``overrides``
    (explicit command-line settings) < the row's toggles < the seed.
    """
    trials = []
    common = merge(merge(base or {}, dotted_to_nested(space.fixed)), overrides or {})
    for row in space.rows:
        for seed in seeds or space.seeds:
            exp = merge(merge(common, dotted_to_nested(row.toggles)), {"trainer": {"seed": seed}})
            where = f"{space.path}: row {row.name!r}"
            try:
                cfg = ExperimentConfig.from_dict(exp, where=where).validate()
            except ConfigError as err:
                msg = str(err)
                raise SpaceError(msg if msg.startswith(str(space.path)) else f"{where}: {msg}") \
                    from err
            key = f"{row.name}-s{seed}"
            params = {**{k: v for k, v in row.toggles.items()}, "seed": seed, "row": row.name}
            trials.append(TrialSpec(key, row.name, seed, cfg.to_dict(), params))
    return trials


def sweep_id(space: Space, trials: list[TrialSpec]) -> str:
    """Deterministic identity of a sweep: the space name and a hash of every trial's config.

    The same command gives the same id (so a re-run resumes); any change of config gives a new
    one (so results of different settings never mix).
    """
    blob = json.dumps([[t.key, t.experiment] for t in trials], sort_keys=True, default=str)
    return f"{space.name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

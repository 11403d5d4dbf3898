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
from omegaconf import OmegaConf

from ..config import DATA_PATH_FIELDS, ConfigError, ExperimentConfig, dotted_to_nested, merge
from ..report.claims import Claim, parse_claim
from .schedulers import Scheduler, parse_scheduler

_TOP_KEYS = {"name", "paper", "title", "source", "metrics", "fixed", "seeds", "rows", "notes",
             "kind", "objective", "num_samples", "sampler", "search", "dataset", "recipe",
             "embedded", "reference", "claims", "claims_note", "scheduler"}
RECIPE_DIR = Path(__file__).resolve().parents[1] / "conf" / "recipe"
"""The papers' recipes (``recipe=<name>``, a Hydra group): their training and evaluation
settings, with the paper sentence or official-code fact of each value."""
_ROW_KEYS = {"name", "label", "toggles", "paper", "paper_all", "dataset", "recipe"}
KINDS = ("table", "hpo")
DISTRIBUTIONS = {"loguniform": ("low", "high"), "uniform": ("low", "high"),
                 "int": ("low", "high"), "categorical": ("values",)}
"""Search dimensions of an HPO space: type -> required keys."""


class SpaceError(ConfigError):
    """A search-space file is malformed; the message names the file, row and field."""


@dataclass
class Row:
    """One line of a paper table: toggles (dotted config keys) and the paper's numbers."""

    name: str
    label: str
    toggles: dict[str, Any]
    paper: dict[str, float]
    paper_all: dict[str, Any] = field(default_factory=dict)
    """Every number the paper gives for this row (dataset -> metric -> value), for the record."""
    dataset: str = ""
    """A dataset preset (``conf/data/<name>.yaml``) this row runs on; empty = the sweep's."""
    recipe: str = ""
    """The paper's recipe for this row on real data, when it differs from the space's."""


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
    kind: str = "table"
    """``table``: a grid of rows x seeds. ``hpo``: Optuna (TPE) samples ``search``."""
    objective: dict[str, str] = field(default_factory=dict)
    """HPO: ``{"metric": "hm", "mode": "max"}``."""
    num_samples: int = 0
    """HPO: trials to sample."""
    sampler: str = "tpe"
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    """HPO: dotted config key -> distribution (see ``DISTRIBUTIONS``)."""
    dataset: str = ""
    """A dataset preset for every row (a row's own ``dataset`` wins); empty = the command's."""
    recipe: str = ""
    """The paper's recipe (``conf/recipe/<name>.yaml``) applied to the trials on real data
    (``recipe=auto``); the embedded synthetic default keeps its CPU budget."""
    embedded: dict[str, Any] = field(default_factory=dict)
    """Settings (dotted keys) for trials on the embedded synthetic default only, e.g. what the
    tiny CLIP's 16-token text context allows."""
    reference: str = ""
    """The row every other row's effect is measured against (the paper's baseline)."""
    claims: list[Claim] = field(default_factory=list)
    """What the paper says about the table, judged after the sweep (``report.claims``)."""
    claims_note: str = ""
    """Why a table lists no claims (the paper draws none from it, or it is a record only)."""
    scheduler: Scheduler = field(default_factory=Scheduler)
    """HPO: early stopping of sampled trials (``sweep.schedulers``); fifo = none."""


@dataclass
class TrialSpec:
    """One Tune trial: a row of the table under one seed, with its resolved config."""

    key: str
    row: str
    seed: int
    experiment: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""
    """The recipe applied to this trial (empty: none)."""


SHIPPED_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
"""The papers' tables and HPO spaces shipped with the package."""


def shipped_spaces() -> list[str]:
    """Names of the shipped spaces, sorted."""
    return sorted(p.stem for p in SHIPPED_SPACES.glob("*.yaml"))


def spaces_dirs() -> list[Path]:
    """Where ``space=NAME`` is looked up: $VIDABLATE_SPACES, ./search_spaces, the shipped ones
    (package data, so a non-editable install has every table)."""
    dirs = []
    if os.environ.get("VIDABLATE_SPACES"):
        dirs.append(Path(os.environ["VIDABLATE_SPACES"]))
    dirs.append(Path.cwd() / "search_spaces")
    dirs.append(SHIPPED_SPACES)
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
    for key in ("name", "metrics"):
        if key not in raw:
            raise SpaceError(f"{path}: missing required key {key!r}")
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise SpaceError(f"{path}: 'metrics' must map metric keys to column labels")
    kind = str(raw.get("kind", "table"))
    if kind not in KINDS:
        raise SpaceError(f"{path}: kind must be one of {KINDS}, got {kind!r}")
    required = ("rows",) if kind == "table" else ("objective", "num_samples", "search")
    for key in required:
        if key not in raw:
            raise SpaceError(f"{path}: a {kind} space needs {key!r}")
    rows = []
    for i, r in enumerate(raw.get("rows") or []):
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
        if not isinstance(r.get("paper_all") or {}, dict):
            raise SpaceError(f"{where} ({r['name']}): paper_all must be a mapping")
        rows.append(Row(str(r["name"]), str(r.get("label", r["name"])),
                        dict(r.get("toggles") or {}),
                        {k: float(v) for k, v in paper.items()},
                        dict(r.get("paper_all") or {}), str(r.get("dataset") or ""),
                        str(r.get("recipe") or "")))
    if kind == "table" and not rows:
        raise SpaceError(f"{path}: 'rows' is empty")
    if kind == "hpo" and rows:
        raise SpaceError(f"{path}: an hpo space samples 'search' and has no 'rows'")
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise SpaceError(f"{path}: row names must be unique, got {names}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpaceError(f"{path}: 'seeds' must be a non-empty list of integers")
    reference, claims, claims_note = _claims(path, raw, kind, names, list(metrics))
    objective, search, num_samples = {}, {}, 0
    if kind == "hpo":
        objective = dict(raw["objective"] or {})
        if objective.get("metric") not in metrics or objective.get("mode") not in ("min", "max"):
            raise SpaceError(f"{path}: objective needs metric (one of {sorted(metrics)}) and "
                             f"mode (min|max), got {objective}")
        num_samples = raw["num_samples"]
        if not isinstance(num_samples, int) or num_samples < 1:
            raise SpaceError(f"{path}: num_samples must be a positive integer")
        if raw.get("sampler", "tpe") != "tpe":
            raise SpaceError(f"{path}: sampler must be 'tpe' (Optuna TPE via Ray Tune)")
        search = dict(raw["search"] or {})
        if not search:
            raise SpaceError(f"{path}: 'search' is empty")
        for key, dim in search.items():
            _check_dimension(path, key, dim)
    elif raw.get("scheduler") is not None:
        raise SpaceError(f"{path}: scheduler stops HPO trials early; a table runs every row "
                         f"to the end")
    try:
        scheduler = parse_scheduler(str(path), raw.get("scheduler"))
    except ConfigError as err:
        raise SpaceError(str(err)) from None
    return Space(
        name=str(raw["name"]), paper=str(raw.get("paper", "")), title=str(raw.get("title", "")),
        source=str(raw.get("source", "")), metrics={str(k): str(v) for k, v in metrics.items()},
        fixed=dict(raw.get("fixed") or {}), seeds=list(seeds), rows=rows, path=path,
        notes=str(raw.get("notes", "")), kind=kind, objective=objective,
        num_samples=num_samples, search=search, dataset=str(raw.get("dataset") or ""),
        recipe=str(raw.get("recipe") or ""), embedded=dict(raw.get("embedded") or {}),
        reference=reference, claims=claims, claims_note=claims_note, scheduler=scheduler,
    )


def _claims(path: Path, raw: dict[str, Any], kind: str, rows: list[str], metrics: list[str]
            ) -> tuple[str, list[Claim], str]:
    """The space's reference row, claims and claims note, checked against its rows/metrics."""
    keys = [k for k in ("reference", "claims", "claims_note") if k in raw]
    if kind == "hpo":
        if keys:
            raise SpaceError(f"{path}: an hpo space has no rows, so no {keys}")
        return "", [], ""
    reference = str(raw.get("reference") or "")
    if reference and reference not in rows:
        raise SpaceError(f"{path}: reference={reference!r} is not a row; rows are {rows}")
    items = raw.get("claims") or []
    if not isinstance(items, list):
        raise SpaceError(f"{path}: claims must be a list")
    claims = [parse_claim(c, rows, metrics, f"{path}: claims[{i}]") for i, c in enumerate(items)]
    return reference, claims, str(raw.get("claims_note") or "").strip()


def _check_dimension(path: Path, key: str, dim: Any) -> None:
    where = f"{path}: search[{key!r}]"
    if not isinstance(dim, dict) or dim.get("type") not in DISTRIBUTIONS:
        raise SpaceError(f"{where} must be a mapping with type one of {sorted(DISTRIBUTIONS)}")
    need = DISTRIBUTIONS[dim["type"]]
    extra = set(dim) - {"type", *need}
    missing = [k for k in need if k not in dim]
    if missing or extra:
        raise SpaceError(f"{where}: type {dim['type']} takes {list(need)}; "
                         f"missing {missing}, unknown {sorted(extra)}")
    if dim["type"] == "categorical":
        if not isinstance(dim["values"], list) or not dim["values"]:
            raise SpaceError(f"{where}: values must be a non-empty list")
    else:
        low, high = dim["low"], dim["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
                or low >= high:
            raise SpaceError(f"{where}: need numbers low < high, got {low!r}, {high!r}")
        if dim["type"] == "loguniform" and low <= 0:
            raise SpaceError(f"{where}: loguniform needs low > 0")
        if dim["type"] == "int" and not (isinstance(low, int) and isinstance(high, int)):
            raise SpaceError(f"{where}: int bounds must be integers")


def dimension_values(dim: dict[str, Any]) -> list[Any]:
    """The values of a search dimension that pre-flight validation tries (bounds or choices)."""
    if dim["type"] == "categorical":
        return list(dim["values"])
    if dim["type"] == "int":
        return [int(dim["low"]), int(dim["high"])]
    return [float(dim["low"]), float(dim["high"])]


def select_rows(space: Space, names: list[str]) -> Space:
    """A copy of ``space`` with only the named rows (in the space's order); its claims stay,
    and one over a row that is not run is judged "inconclusive (not run: ...)"."""
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
    recipe: str = "auto",
) -> list[TrialSpec]:
    """Rows × seeds -> validated trials.

    Precedence (later wins): ``base`` (Hydra groups) < the space's dataset preset < the row's
    dataset preset < the recipe < the space's ``fixed`` < the space's ``embedded`` settings (on
    synthetic data only) < ``overrides`` (explicit command-line settings) < the row's toggles <
    the seed. ``recipe``: ``auto`` = the space's recipe on real data, ``none``, or a recipe name
    for every trial (``recipe=<name>`` on the command line).
    """
    for name in {space.recipe, *(r.recipe for r in space.rows)} - {""}:
        recipe_preset(name, f"{space.path}: recipe")  # a bad name fails before launch
    if space.kind == "hpo":
        common, used = _layers(space, base, overrides, {}, recipe)
        return _probe_hpo(space, common, seeds, used)
    trials = []
    for row in space.rows:
        where = f"{space.path}: row {row.name!r}"
        row_data = dataset_preset(row.dataset, f"{where}: dataset") if row.dataset else {}
        row_base, used = _layers(space, base, overrides, row_data, recipe, row.recipe)
        for seed in seeds or space.seeds:
            exp = merge(merge(row_base, dotted_to_nested(row.toggles)), {"trainer": {"seed": seed}})
            cfg = _validated(space, exp, where)
            key = f"{row.name}-s{seed}"
            params = {**{k: v for k, v in row.toggles.items()}, "seed": seed, "row": row.name}
            trials.append(TrialSpec(key, row.name, seed, cfg.to_dict(), params, used))
    return trials


def _layers(space: Space, base: dict[str, Any] | None, overrides: dict[str, Any] | None,
            row_data: dict[str, Any], recipe: str, row_recipe: str = ""
            ) -> tuple[dict[str, Any], str]:
    """The merged settings of a row below its toggles, and the recipe they include."""
    space_data = dataset_preset(space.dataset, f"{space.path}: dataset")

    def stack(recipe_layer: dict[str, Any], embedded: dict[str, Any]) -> dict[str, Any]:
        out = merge(merge(merge(base or {}, space_data), row_data), recipe_layer)
        out = merge(merge(out, dotted_to_nested(space.fixed)), embedded)
        return merge(out, overrides or {})

    plain = stack({}, {})
    synthetic = (plain.get("data") or {}).get("dataset", "synthetic") == "synthetic"
    own = row_recipe or space.recipe
    name = {"none": "", "auto": "" if synthetic else own}.get(recipe, recipe)
    layer = recipe_preset(name, "recipe") if name else {}
    embedded = dotted_to_nested(space.embedded) if synthetic else {}
    return stack(layer, embedded), name


def recipe_preset(name: str, where: str) -> dict[str, Any]:
    """A recipe's settings (``conf/recipe/<name>.yaml``, including the recipes its
    ``defaults`` list names) as nested sections."""
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file() or name in ("auto", "none"):
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if p.stem not in ("auto", "none"))
        raise SpaceError(f"{where}={name!r}: no such recipe; known: {known}")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    out: dict[str, Any] = {}
    for parent in raw.pop("defaults", None) or []:
        out = merge(out, recipe_preset(str(parent), f"{path}: defaults"))
    raw.pop("recipe_name", None)
    return merge(out, raw)


def _validated(space: Space, exp: dict[str, Any], where: str) -> ExperimentConfig:
    try:
        cfg = ExperimentConfig.from_dict(exp, where=where).validate()
    except ConfigError as err:
        msg = str(err)
        raise SpaceError(msg if msg.startswith(str(space.path)) else f"{where}: {msg}") from err
    return absolute_data_paths(cfg)


def absolute_data_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Make dataset paths absolute on the driver: Tune runs trials in their own directories."""
    d = cfg.data
    for name in DATA_PATH_FIELDS:
        if getattr(d, name):
            setattr(d, name, str(Path(getattr(d, name)).resolve()))
    d.cross_manifests = [str(Path(p).resolve()) for p in d.cross_manifests]
    return cfg


def dataset_dirs() -> list[Path]:
    """Where a dataset preset ``NAME`` is looked up: $VIDABLATE_DATASETS, the package's
    ``conf/data`` (the same files as the Hydra ``data=NAME`` group)."""
    dirs = [Path(os.environ["VIDABLATE_DATASETS"])] if os.environ.get("VIDABLATE_DATASETS") else []
    return dirs + [Path(__file__).resolve().parents[1] / "conf" / "data"]


def dataset_preset(name: str, where: str) -> dict[str, Any]:
    """``{"data": {...}}`` from a preset name or YAML path (``${oc.env:...}`` resolved);
    ``{}`` for an empty name."""
    if not name:
        return {}
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    candidates += [d / f"{name}.yaml" for d in dataset_dirs()]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        known = sorted({p.stem for d in dataset_dirs() if d.is_dir() for p in d.glob("*.yaml")})
        raise SpaceError(f"{where}={name!r}: no such dataset preset; known: {known}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:  # noqa: BLE001 - YAML or interpolation errors, reported by file
        raise SpaceError(f"{where}={name!r}: {path}: {err}") from err
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}={name!r}: {path} must be a mapping of data.* keys")
    return {"data": raw}


def _probe_hpo(space: Space, common: dict[str, Any], seeds: list[int] | None,
               recipe: str = "") -> list[TrialSpec]:
    """HPO spaces: validate every bound / choice of every dimension (others at their first
    value) before launch; returns one template trial per seed holding the common config."""
    first = {k: dimension_values(d)[0] for k, d in space.search.items()}
    for key, dim in space.search.items():
        for value in dimension_values(dim):
            exp = merge(common, dotted_to_nested({**first, key: value}))
            _validated(space, exp, f"{space.path}: search[{key!r}]={value!r}")
    trials = []
    for seed in seeds or space.seeds:
        exp = merge(merge(common, dotted_to_nested(first)), {"trainer": {"seed": seed}})
        cfg = _validated(space, exp, f"{space.path}")  # sampled keys are overwritten per trial
        trials.append(TrialSpec(f"hpo-s{seed}", "hpo", seed, cfg.to_dict(), {"seed": seed},
                                recipe))
    return trials


def sweep_id(space: Space, trials: list[TrialSpec]) -> str:
    """Deterministic identity of a sweep: the space name and a hash of every trial's config.

    The same command gives the same id (so a re-run resumes); any change of config gives a new
    one (so results of different settings never mix).
    """
    blob = json.dumps([[t.key, t.experiment] for t in trials]
                      + ([space.search, space.objective, space.num_samples]
                         if space.kind == "hpo" else [])
                      + ([dataclasses.asdict(space.scheduler)]
                         if space.scheduler.type != "fifo" else []),
                      sort_keys=True, default=str)
    return f"{space.name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def overridden_toggles(space: Space, overrides: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Command-line settings (``{"model": {"sirm": True}}``) that rows of the table set
    themselves (a row's toggles win, so the value would be silently dropped): (key, rows)."""
    flat = {f"{section}.{key}" for section, values in overrides.items()
            for key in (values if isinstance(values, dict) else {})}
    found = []
    for key in sorted(flat):
        rows = [r.name for r in space.rows if key in r.toggles]
        if rows:
            found.append((key, rows))
    if space.kind == "hpo":
        found += [(key, ["the search"]) for key in sorted(flat & set(space.search))]
    return found


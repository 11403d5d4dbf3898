"""Hydra config -> run_sweep. jobs/ablate.py only parses and calls ``main``."""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from ..config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from ..errors import ConfigError, NoSpaceError, SweepInterrupted, TrackingUnreachable
from .schedulers import STOPPED
from .schedulers import TYPES as SCHEDULER_TYPES
from .space import SHIPPED_SPACES, expand, load_space, overridden_toggles, select_rows

if TYPE_CHECKING:  # annotations only; main imports the runner when a sweep runs
    from .runner import SweepReport

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


def _settings_help() -> str:
    """The top-level settings of ``conf/ablate.yaml`` with their comments."""
    lines = []
    for line in (Path(CONFIG_DIR) / "ablate.yaml").read_text().splitlines():
        if line.startswith("hydra:"):
            break
        m = re.match(r"^([a-z_]+): *(\S+)? *(?:# *(.*))?$", line)
        if m and m.group(1) != "defaults":
            lines.append(f"  {m.group(1) + '=' + (m.group(2) or ''):<28} {m.group(3) or ''}")
    return "\n".join(lines)


def _spaces_help() -> str:
    """Each shipped space with its title (read from the file's ``title:`` line)."""
    lines = []
    for path in sorted(SHIPPED_SPACES.glob("*.yaml")):
        m = re.search(r'^title: *"?(.*?)"?$', path.read_text(), re.MULTILINE)
        lines.append(f"  {path.stem:<28} {m.group(1) if m else ''}")
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Hydra fills the help template with string.Template, where ``$`` starts a field."""
    return text.replace("$", "$$")


def register_help() -> None:
    """``vidablate ablate --help``: the spaces, the main settings and the groups."""
    template = "\n".join([
        "usage: vidablate ablate [space=NAME] [key=value ...]   (-m: multirun, e.g. "
        "-m space=a,b)", "",
        "Runs a paper's ablation table (or an HPO space) on Ray, logs it to MLflow and prints",
        "the table with the paper's numbers, the effects against the reference row and the",
        "claims' verdicts.", "",
        "== Spaces (space=NAME, or a path to a YAML file) ==", _escape(_spaces_help()), "",
        "== Main settings ==", _escape(_settings_help()), "",
        "== Groups (group=option) ==", "$APP_CONFIG_GROUPS", "",
        "Any field of the typed configs can be set: data.k_shot=4 trainer.epochs=2 "
        "model.sgam=true.",
        "show_row=ROW prints a row's merged config; --cfg job prints Hydra's composed config.",
        "$FLAGS_HELP",
    ])
    ConfigStore.instance().store(group="hydra/help", name="vidablate", node={
        "app_name": "vidablate ablate", "header": "", "footer": "", "template": template})


register_schema()
register_help()


def row_config(space: str, row: str, base: dict[str, Any], overrides: dict[str, Any],
               seeds: list[int] | None, recipe: str) -> str:
    """A row's fully merged config (defaults, recipe, space's fixed block, the row's toggles and
    the command line) as YAML, for its first seed."""
    trials = expand(select_rows(load_space(space), [row]), base, overrides, seeds, recipe)
    t = trials[0]
    return yaml.safe_dump({"row": t.row, "seed": t.seed, "recipe": t.recipe or None,
                           **t.experiment}, sort_keys=False)


def _settings() -> list[str]:
    """The top-level settings of ``conf/ablate.yaml`` (``space``, ``seeds``, ...)."""
    raw = yaml.safe_load((Path(CONFIG_DIR) / "ablate.yaml").read_text())
    return [k for k in raw if k not in ("defaults", "hydra")]


def _groups() -> dict[str, list[str]]:
    """Config groups (``model=vitb16``) and their options."""
    return {d.name: sorted(f.stem for f in d.glob("*.yaml"))
            for d in sorted(Path(CONFIG_DIR).iterdir()) if d.is_dir()}


def _fields() -> dict[str, list[str]]:
    kinds = {"data": DataConfig, "model": ModelConfig, "trainer": TrainConfig,
             "eval": EvalConfig}
    return {k: [f.name for f in dataclasses.fields(kind)] for k, kind in kinds.items()}


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _values(o: Any) -> list[Any]:
    """An override's value, or each value of a multirun sweep (``space=a,b``)."""
    return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]


def check_overrides(argv: list[str]) -> None:
    """Reject, in the ``error:`` form and before Hydra composes anything, what Hydra would
    reject with its own message (a malformed item, a key not in the config) or keep without
    effect (``+foo.bar=1``): every item must name a setting, a group option or a field."""
    items = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(items)
    except OverrideParseException as err:
        raise ConfigError(f"command line: {' '.join(str(err).split())}") from None
    settings, groups, fields = _settings(), _groups(), _fields()
    for o in parsed:
        key, line = o.key_or_group, o.input_line or o.key_or_group
        parts = key.split(".")
        if key.startswith("hydra"):
            continue
        if key == "space":  # every space of a multirun exists before the first one runs
            for option in _values(o):
                load_space(str(option))
        if len(parts) == 1 and key in groups:
            for option in _values(o):
                if isinstance(option, str) and option not in groups[key]:
                    raise ConfigError(f"{line} on the command line: no {key} option "
                                      f"{option!r}; options: {', '.join(groups[key])}")
        elif len(parts) == 1:
            if key not in settings:
                raise ConfigError(
                    f"{line} on the command line: no setting {key!r}{_suggest(key, settings)}; "
                    f"settings: {', '.join(settings)}; config fields are section.field "
                    f"({', '.join(SECTIONS)}), e.g. data.k_shot=4")
        elif len(parts) == 2 and parts[0] in fields:
            if parts[1] not in fields[parts[0]]:
                raise ConfigError(f"{line} on the command line: {parts[0]} has no field "
                                  f"{parts[1]!r}{_suggest(parts[1], fields[parts[0]])}")
        else:
            raise ConfigError(f"{line} on the command line: unknown key {key!r}; config fields "
                              f"are section.field ({', '.join(SECTIONS)}), e.g. data.k_shot=4")


def blame(message: str, task_overrides: list[str]) -> str:
    """A config error about a value the command line set names the command line, not the
    space file's row that the value was merged into."""
    for item in task_overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        at = message.find(key)
        if "." in key and at >= 0:
            return f"{item} on the command line: {message[at:]}"
    return message


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


def main(cfg: DictConfig, task_overrides: list[str], cache_only: bool = False,
         after: Callable[[SweepReport], None] | None = None,
         command: list[str] | None = None) -> int:
    """Run the sweep described by a composed Hydra config (or, ``cache_only``, only build its
    feature cache); ``after`` gets the report of a sweep that ran (the dashboard); returns a
    process exit code."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    base = {k: raw[k] for k in SECTIONS}
    seeds = list(raw["seeds"]) if raw["seeds"] else None
    rows = [str(r) for r in raw["rows"]] if raw["rows"] else None
    recipe = str(raw.get("recipe_name", "auto"))
    try:
        if raw["seeds"] is not None and len(raw["seeds"]) == 0:
            raise ConfigError("seeds=[] on the command line: give at least one seed "
                              "(seeds=[0,1,2]), or leave seeds out for the space's own")
        overrides = explicit_overrides(raw, task_overrides)
        if raw.get("show_row"):
            try:
                text = row_config(str(raw["space"]), str(raw["show_row"]), base, overrides,
                                  seeds, recipe)
            except ConfigError as err:
                raise ConfigError(blame(str(err), task_overrides)) from None
            print(text, end="")
            return 0
        space = load_space(str(raw["space"]))
        chosen = select_rows(space, rows) if rows else space
        for key, varied in overridden_toggles(chosen, overrides):
            if len(varied) < len(chosen.rows) and varied != ["the search"]:
                print(f"note: {key} from the command line does not apply to row(s) "
                      f"{', '.join(varied)}: they set it themselves", flush=True)
                continue
            raise ConfigError(blame(
                f"{key} is what the table varies (set by {', '.join(varied)}), so it would be "
                f"ignored; choose rows with rows=[...] or copy the space file and edit its rows",
                task_overrides))
        scheduler = raw.get("scheduler") or ""
        if scheduler and scheduler not in SCHEDULER_TYPES:
            raise ConfigError(f"scheduler={scheduler}: must be one of {SCHEDULER_TYPES}")
        if scheduler and space.kind != "hpo":
            raise ConfigError(f"scheduler={scheduler}: space={raw['space']} is a table; "
                              f"early stopping applies to HPO spaces (kind: hpo)")
        # every trial's config, checked before Ray, Tune and MLflow load (seconds sooner)
        try:
            expand(chosen, base, overrides, seeds, recipe)
        except ConfigError as err:
            raise ConfigError(blame(str(err), task_overrides)) from None
        from .runner import SweepSettings, run_sweep  # the heavy imports, once all is checked

        settings = SweepSettings(
            storage_path=raw["storage_path"], tracking_uri=raw["tracking_uri"],
            resume=bool(raw["resume"]), seeds=seeds, rows=rows,
            max_concurrent=int(raw["max_concurrent"]),
            max_trial_failures=int(raw["max_trial_failures"]), ray_address=raw["ray_address"],
            retry_errored=bool(raw["retry_errored"]),
            num_cpus=raw["num_cpus"], experiment_name=raw["experiment_name"],
            verbose_workers=bool(raw["verbose_workers"]), dry_run=bool(raw["dry_run"]),
            cache="off" if raw["cache"] in (False, "off") else str(raw["cache"]),
            cache_path=raw["cache_path"], cache_only=cache_only, recipe=recipe,
            scheduler=scheduler,
            command=list(command or []),
        )
        report = run_sweep(str(raw["space"]), base, overrides, settings)
    except ConfigError as err:
        print(f"error: {err}")
        return 2
    except NoSpaceError as err:  # the driver's own writes (the feature cache) before trials
        print(f"error: {err}; nothing was trained: free space there (or pass cache_path= / "
              f"storage_path= on a larger disk) and run the same command again")
        return 1
    except SweepInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr, flush=True)
        return err.code
    except TrackingUnreachable as err:
        print(f"error: {err}", flush=True)
        return 1
    except KeyboardInterrupt:
        # the runner has loaded it when a signal can come mid-launch; the checks never need it
        from .interrupt import signal_received

        signum = signal_received()
        print(f"interrupted: {'SIGTERM' if signum == 15 else 'Ctrl-C'} before any trial "
              f"started; run the same command again", file=sys.stderr, flush=True)
        return 128 + signum
    if report is None:
        return 0
    if after is not None:
        after(report)
    return 0 if all(o.status in ("ok", STOPPED) for o in report.outcomes) else 1

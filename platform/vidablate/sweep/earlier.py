"""A changed setting starts a new sweep (its id is a hash of the trials); say so when an earlier
sweep of the same space exists in the experiment, what differs between the two, and the
command that continues the earlier one."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from .provenance import COMMAND_TAG
from .tracking import SWEEP_TAG, flatten

SHOWN = 6
"""Differences listed before "and N more"."""


def differences(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between two sweeps' resolved trials (``config/trials.yaml``: trial key ->
    config): trials in one only, then each setting whose value differs in a shared trial."""
    lines = []
    gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
    if gone:
        lines.append(f"trials only in the earlier sweep: {', '.join(gone[:SHOWN])}"
                     + (f" and {len(gone) - SHOWN} more" if len(gone) > SHOWN else ""))
    if added:
        lines.append(f"trials only in this one: {', '.join(added[:SHOWN])}"
                     + (f" and {len(added) - SHOWN} more" if len(added) > SHOWN else ""))
    changed: dict[str, tuple[Any, Any, int]] = {}
    for key in sorted(set(old) & set(new)):
        a, b = flatten(old[key]), flatten(new[key])
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                first = changed.get(name, (a.get(name), b.get(name), 0))
                changed[name] = (first[0], first[1], first[2] + 1)
    for name, (was, now, count) in list(changed.items())[:SHOWN]:
        lines.append(f"{name}: {was!r} -> {now!r} ({count} trial{'s' if count > 1 else ''})")
    if len(changed) > SHOWN:
        lines.append(f"and {len(changed) - SHOWN} more setting(s)")
    return lines


def earlier_sweep_note(client: MlflowClient, experiment_id: str, space: str, sweep_id: str,
                       trials: dict[str, dict[str, Any]]) -> str | None:
    """The note for a new sweep of ``space`` when the experiment holds an earlier one."""
    runs = client.search_runs(
        [experiment_id], f"tags.`vidablate.kind` = 'sweep' and params.space = '{space}' and "
        f"tags.`{SWEEP_TAG}` != '{sweep_id}'", order_by=["attributes.start_time DESC"],
        max_results=1)
    if not runs:
        return None
    run = runs[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "config/trials.yaml", tmp)
            old = yaml.safe_load(Path(path).read_text()) or {}
        except Exception:  # noqa: BLE001 - a run from an older version has no trials file
            old = None
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
    what = "; ".join(differences(old, trials)) if old is not None else \
        "(its resolved trials were not logged)"
    command = run.data.tags.get(COMMAND_TAG)
    return (f"note: a new sweep of {space} ({sweep_id}); an earlier one exists: "
            f"{run.data.tags.get(SWEEP_TAG)} (parent run {run.info.run_id}, {run.info.status}, "
            f"started {started}). It differs in: {what}."
            + (f" Its command, to continue it: {command}" if command else ""))

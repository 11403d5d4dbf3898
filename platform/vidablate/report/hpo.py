"""A finished HPO sweep as a table: one line per trial with its sampled values and metrics,
as Markdown and CSV."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class HPOSpace(Protocol):
    """What the HPO report reads of a search space (e.g. ``vidablate.sweep.space.Space``)."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def metrics(self) -> Mapping[str, str]:
        """Metric key -> column label, in column order."""
    @property
    def objective(self) -> Mapping[str, str]:
        """``{"metric": ..., "mode": "max" | "min"}``."""
    @property
    def search(self) -> Mapping[str, Any]:
        """Dotted config key -> distribution; the keys are the sampled columns."""


def hpo_table(space: HPOSpace, rows: list[tuple[str, dict[str, Any], dict[str, float], str]],
              stopping: str = "") -> tuple[str, str]:
    """Markdown and CSV of an HPO sweep: one line per trial, its sampled values, metrics, the
    epochs it trained and its status (``stopped`` by early stopping, described in
    ``stopping``); the last line sums the trial-epochs."""
    keys = list(space.search)
    metrics = list(space.metrics)
    head = ["trial", *keys, *[space.metrics[m] for m in metrics], "epochs", "status"]
    md = [f"**{space.title or space.name}**: Optuna TPE{', ' + stopping if stopping else ''}, "
          f"objective {space.objective['metric']} ({space.objective['mode']})", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join(["trial", *keys, *metrics, "epochs", "status"])]
    total = 0
    for key, values, result, status in rows:
        vals = [_fmt_value(values.get(k)) for k in keys]
        mets = [f"{result[m]:.1f}" if m in result else "" for m in metrics]
        epochs = int(result.get("epoch", 0))
        total += epochs
        md.append("| " + " | ".join([key, *vals, *mets, str(epochs), status]) + " |")
        csv.append(",".join([key, *vals, *mets, str(epochs), status]))
    md += ["", f"{len(rows)} trials, {total} trial-epochs trained"]
    return "\n".join(md), "\n".join(csv) + "\n"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)

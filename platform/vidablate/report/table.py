"""A finished table sweep, aggregated: one ``Cell`` per row and metric.

Trial outcomes (one per row x seed) become the paper's number, ours (mean and sample std over
the successful seeds, and each seed's value), and, when the space names a reference row (the
paper's baseline), the *effect* of each row: the paper's change against the reference and ours,
the paired change over the seeds both rows finished (same seed = same data draw and
initialisation), with whether the two go the same way. Every output format
(``vidablate.report.render``) shows these same numbers, and a partly or fully failed row is
visible instead of silently dropped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DISPLAY_DIGITS = 1
"""Decimals shown for accuracies; a direction is read from the displayed (rounded) change."""


class SpaceRow(Protocol):
    """What the report reads of one row of a paper table (e.g. ``vidablate.sweep.space.Row``)."""

    @property
    def name(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def toggles(self) -> Mapping[str, Any]:
        """Dotted config key -> value of the row's ablation switches."""
    @property
    def paper(self) -> Mapping[str, float]:
        """Metric key -> the paper's number."""


class TableSpace(Protocol):
    """What the report reads of a search space (e.g. ``vidablate.sweep.space.Space``): plain
    data, so the report does not depend on how spaces are loaded or run."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def metrics(self) -> Mapping[str, str]:
        """Metric key -> column label, in column order."""
    @property
    def rows(self) -> Sequence[SpaceRow]: ...
    @property
    def reference(self) -> str:
        """The row every effect is measured against (the paper's baseline); "" = none."""


@dataclass
class TrialOutcome:
    """The end state of one trial (one row under one seed) as the sweep runner saw it."""

    row: str
    seed: int
    metrics: dict[str, float]
    status: str = "ok"
    error: str = ""


@dataclass
class Effect:
    """Ours: a row minus the reference row, paired by seed, over the seeds both finished."""

    mean: float | None
    std: float | None
    """Sample std of the paired differences (None below 2 pairs)."""
    n: int


@dataclass
class Cell:
    """One row x metric entry: the paper's number next to ours aggregated over seeds."""

    paper: float | None
    mean: float | None
    std: float | None
    n: int
    values: dict[int, float] = field(default_factory=dict)
    """Seed -> our value, for the successful seeds with a finite value."""
    paper_effect: float | None = None
    """The paper's change against the reference row (None: no reference, or a number missing)."""
    effect: Effect | None = None
    """Our change against the reference row (None on the reference row itself or without one)."""

    @property
    def delta(self) -> float | None:
        """Ours minus the paper's, when both exist."""
        if self.mean is None or self.paper is None:
            return None
        return self.mean - self.paper

    @property
    def direction(self) -> str:
        """``agree`` / ``disagree`` when the paper's and our displayed changes against the
        reference are both non-zero; ``flat`` when ours rounds to zero; "" when the paper's
        is zero or either is missing."""
        if self.paper_effect is None or self.effect is None or self.effect.mean is None:
            return ""
        paper = _sign(self.paper_effect)
        ours = _sign(self.effect.mean)
        if paper == 0:
            return ""
        if ours == 0:
            return "flat"
        return "agree" if paper == ours else "disagree"


def _sign(value: float) -> int:
    rounded = round(value, DISPLAY_DIGITS)
    return (rounded > 0) - (rounded < 0)


@dataclass
class TableRow:
    """One row of the report: the space row's identity, its toggles and a cell per metric."""

    name: str
    label: str
    toggles: dict[str, Any]
    cells: dict[str, Cell]
    seeds_ok: int
    seeds_total: int
    errors: list[str] = field(default_factory=list)
    """Error messages of the row's unsuccessful seeds (shown as a tooltip in the HTML)."""
    reference: bool = False
    """This is the table's reference row."""


def _finite(value: Any) -> float | None:
    """A metric value as a float, or None when absent or not a finite number (e.g. NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dedupe(outcomes: list[TrialOutcome]) -> list[TrialOutcome]:
    """One outcome per (row, seed): a resumed sweep may report a seed twice; "ok" wins, else
    the later report."""
    chosen: dict[tuple[str, int], TrialOutcome] = {}
    for out in outcomes:
        key = (out.row, out.seed)
        prev = chosen.get(key)
        if prev is None or out.status == "ok" or prev.status != "ok":
            chosen[key] = out
    return list(chosen.values())


def build_table(space: TableSpace, outcomes: list[TrialOutcome]) -> list[TableRow]:
    """Aggregate trial outcomes into one ``TableRow`` per space row, in the space's order.

    Only seeds with status "ok" and a finite value of the metric enter mean/std; ``seeds_total``
    counts the (row, seed) outcomes reported for the row. Outcomes of unknown rows are ignored.
    With a reference row, every other row's cells get the paper's and our effect.
    """
    by_row: dict[str, list[TrialOutcome]] = {row.name: [] for row in space.rows}
    for out in _dedupe(outcomes):
        if out.row in by_row:
            by_row[out.row].append(out)
    table = []
    for row in space.rows:
        outs = by_row[row.name]
        ok = sorted((o for o in outs if o.status == "ok"), key=lambda o: o.seed)
        cells = {}
        for metric in space.metrics:
            values = {o.seed: v for o in ok
                      if (v := _finite(o.metrics.get(metric))) is not None}
            series = list(values.values())
            cells[metric] = Cell(
                paper=_finite(row.paper.get(metric)),
                mean=statistics.fmean(series) if series else None,
                std=statistics.stdev(series) if len(series) >= 2 else None,
                n=len(series),
                values=values,
            )
        errors = [f"seed {o.seed}: {o.status}" + (f": {o.error}" if o.error else "")
                  for o in outs if o.status != "ok"]
        table.append(TableRow(row.name, row.label, dict(row.toggles), cells, len(ok), len(outs),
                              errors))
    reference = getattr(space, "reference", "") or ""
    ref = next((r for r in table if r.name == reference), None)
    if ref is not None:
        ref.reference = True
        for row in table:
            if row is not ref:
                for metric, cell in row.cells.items():
                    _add_effect(cell, ref.cells[metric])
    return table


def _add_effect(cell: Cell, ref: Cell) -> None:
    """Fill the paper's and our change of ``cell`` against the reference row's cell."""
    if cell.paper is not None and ref.paper is not None:
        cell.paper_effect = cell.paper - ref.paper
    seeds = sorted(set(cell.values) & set(ref.values))
    diffs = [cell.values[s] - ref.values[s] for s in seeds]
    cell.effect = Effect(statistics.fmean(diffs) if diffs else None,
                         statistics.stdev(diffs) if len(diffs) >= 2 else None, len(diffs))


def per_seed(table: list[TableRow], metric: str) -> dict[str, dict[int, float]]:
    """Row -> seed -> our value of ``metric`` (the input of the claims' paired tests)."""
    return {row.name: dict(row.cells[metric].values) for row in table if metric in row.cells}


def paper_values(table: list[TableRow], metric: str) -> dict[str, float | None]:
    """Row -> the paper's value of ``metric``."""
    return {row.name: row.cells[metric].paper for row in table if metric in row.cells}


def seeds_of(table: list[TableRow]) -> list[int]:
    """Every seed that produced a value, ascending."""
    return sorted({s for row in table for cell in row.cells.values() for s in cell.values})


def direction_counts(table: list[TableRow]) -> dict[str, int]:
    """How many (row, metric) effects agree / disagree / are flat against the paper's."""
    out = {"agree": 0, "disagree": 0, "flat": 0}
    for row in table:
        for cell in row.cells.values():
            if cell.direction:
                out[cell.direction] += 1
    return out

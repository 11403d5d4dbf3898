"""A finished sweep as a "reproduced vs paper" table: Markdown, CSV, HTML and a bar plot.

Trial outcomes (one per row x seed) are reduced to one ``Cell`` per row and metric (paper value,
mean and sample std over the successful seeds, delta to the paper), so every output format shows
the same numbers and a partly or fully failed row is visible instead of silently dropped.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Protocol

MISSING = "—"
MINUS = "−"
CHECK = "✓"

HTML_TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em;
         color: #222; }
  h1 { font-size: 1.3em; margin-bottom: 0.2em; }
  p.source { color: #666; margin-top: 0; }
  table { border-collapse: collapse; font-size: 0.92em; }
  th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
  th { background: #f3f3f3; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.toggle { text-align: center; }
  td.pos { color: #1a7f37; font-weight: 600; }
  td.neg { color: #cf222e; font-weight: 600; }
  tr.failed td { color: #999; }
  span.marker { color: #9a6700; font-size: 0.9em; }
  tr.failed span.marker { color: #cf222e; }
  img { display: block; margin-top: 1.5em; max-width: 100%; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="source">$source</p>
<table>
<thead>
<tr>$header</tr>
</thead>
<tbody>
$body
</tbody>
</table>
$image
</body>
</html>
""")


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


@dataclass
class TrialOutcome:
    """The end state of one trial (one row under one seed) as the sweep runner saw it."""

    row: str
    seed: int
    metrics: dict[str, float]
    status: str = "ok"
    error: str = ""


@dataclass
class Cell:
    """One row x metric entry: the paper's number next to ours aggregated over seeds."""

    paper: float | None
    mean: float | None
    std: float | None
    n: int

    @property
    def delta(self) -> float | None:
        """Ours minus the paper's, when both exist."""
        if self.mean is None or self.paper is None:
            return None
        return self.mean - self.paper


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
    """
    by_row: dict[str, list[TrialOutcome]] = {row.name: [] for row in space.rows}
    for out in _dedupe(outcomes):
        if out.row in by_row:
            by_row[out.row].append(out)
    table = []
    for row in space.rows:
        outs = by_row[row.name]
        ok = [o for o in outs if o.status == "ok"]
        cells = {}
        for metric in space.metrics:
            values = [v for v in (_finite(o.metrics.get(metric)) for o in ok) if v is not None]
            cells[metric] = Cell(
                paper=_finite(row.paper.get(metric)),
                mean=statistics.fmean(values) if values else None,
                std=statistics.stdev(values) if len(values) >= 2 else None,
                n=len(values),
            )
        errors = [f"seed {o.seed}: {o.status}" + (f": {o.error}" if o.error else "")
                  for o in outs if o.status != "ok"]
        table.append(TableRow(row.name, row.label, dict(row.toggles), cells, len(ok), len(outs),
                              errors))
    return table


# ---------------------------------------------------------------------------------------------
# Shared formatting


def _toggle_keys(table: list[TableRow]) -> list[str]:
    """Every toggle key, in order of first appearance."""
    keys: dict[str, None] = {}
    for row in table:
        keys.update(dict.fromkeys(row.toggles))
    return list(keys)


def _varying_toggles(table: list[TableRow]) -> list[str]:
    """Toggle keys whose value differs between rows (a row lacking the key counts as a value);
    constant toggles say nothing about the ablation, so they get no column."""
    varying = []
    for key in _toggle_keys(table):
        seen = {json.dumps(r.toggles.get(key, "<absent>"), sort_keys=True, default=str)
                for r in table}
        if len(seen) > 1:
            varying.append(key)
    return varying


def _toggle_headers(keys: list[str]) -> list[str]:
    """Short column headers: the last dotted part, or the full key when that would collide."""
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)]


def _fmt_toggle(value: Any) -> str:
    if value is True:
        return CHECK
    if value is False or value is None:
        return ""
    return str(value)


def _fmt_ours(cell: Cell) -> str:
    if cell.mean is None:
        return MISSING
    text = f"{cell.mean:.1f}"
    if cell.n >= 2 and cell.std is not None:
        text += f" ± {cell.std:.1f}"
    return text


def _fmt_paper(cell: Cell) -> str:
    return MISSING if cell.paper is None else f"{cell.paper:.1f}"


def _delta_sign(cell: Cell) -> int:
    """Sign of the delta as displayed (rounded to one decimal), 0 when absent or zero."""
    if cell.delta is None:
        return 0
    rounded = round(cell.delta, 1)
    return (rounded > 0) - (rounded < 0)


def _fmt_delta(cell: Cell) -> str:
    if cell.delta is None:
        return MISSING
    text = f"{abs(cell.delta):.1f}"
    return (MINUS if _delta_sign(cell) < 0 else "+") + text


def _marker(row: TableRow) -> str:
    """Seed-status note after the label: "", "(2/3 seeds)", "(failed)" or "(not run)"."""
    if row.seeds_total == 0:
        return "(not run)"
    if row.seeds_ok == 0:
        return "(failed)"
    if row.seeds_ok < row.seeds_total:
        return f"({row.seeds_ok}/{row.seeds_total} seeds)"
    return ""


def _title_line(space: TableSpace) -> str:
    title = space.title or space.name
    return f"{title} — {space.source}" if space.source else title


def _header(space: TableSpace, toggles: list[str]) -> list[str]:
    cols = ["Row", *_toggle_headers(toggles)]
    for label in space.metrics.values():
        cols += [f"{label} paper", f"{label} ours", "Δ"]
    return cols


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(space: TableSpace, table: list[TableRow]) -> str:
    """A title line and one GitHub-flavoured table, padded so it also reads well in a terminal."""
    toggles = _varying_toggles(table)
    header = _header(space, toggles)
    aligns = ["left"] + ["center"] * len(toggles) + ["right"] * (3 * len(space.metrics))
    lines = []
    for row in table:
        label = f"{row.label} {_marker(row)}".strip()
        cells = [label, *(_fmt_toggle(row.toggles.get(k)) for k in toggles)]
        for metric in space.metrics:
            cell = row.cells[metric]
            cells += [_fmt_paper(cell), _fmt_ours(cell), _fmt_delta(cell)]
        lines.append([_md_escape(c) for c in cells])
    header = [_md_escape(h) for h in header]
    widths = [max(3, len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def render(cells: list[str]) -> str:
        padded = []
        for text, width, align in zip(cells, widths, aligns, strict=True):
            if align == "left":
                padded.append(text.ljust(width))
            elif align == "center":
                padded.append(text.center(width))
            else:
                padded.append(text.rjust(width))
        return "| " + " | ".join(padded) + " |"

    rule = {"left": lambda w: ":" + "-" * (w - 1), "center": lambda w: ":" + "-" * (w - 2) + ":",
            "right": lambda w: "-" * (w - 1) + ":"}
    sep = "| " + " | ".join(rule[a](w) for a, w in zip(aligns, widths, strict=True)) + " |"
    out = [f"### {_md_escape(_title_line(space))}", "", render(header), sep]
    out += [render(line) for line in lines]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _csv_toggle(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def to_csv(space: TableSpace, table: list[TableRow]) -> str:
    """One line per row with every toggle (full dotted key) and full-precision numbers; empty
    fields mean "no value" so it parses back without the display formatting."""
    toggles = _toggle_keys(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["row", "label", *toggles]
    for metric in space.metrics:
        header += [f"{metric}_{s}" for s in ("paper", "mean", "std", "n", "delta")]
    writer.writerow([*header, "seeds_ok", "seeds_total"])
    for row in table:
        line = [row.name, row.label, *(_csv_toggle(row.toggles.get(k)) for k in toggles)]
        for metric in space.metrics:
            cell = row.cells[metric]
            line += [_csv_num(cell.paper), _csv_num(cell.mean), _csv_num(cell.std), str(cell.n),
                     _csv_num(cell.delta)]
        writer.writerow([*line, row.seeds_ok, row.seeds_total])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML


def to_html(space: TableSpace, table: list[TableRow], plot_png: str | None = None) -> str:
    """A standalone page (inline CSS, no external assets) with the same table; Δ is coloured
    green/red and ``plot_png`` (a file name relative to the page) is shown below it."""
    esc = html.escape
    toggles = _varying_toggles(table)
    header = "".join(f"<th>{esc(h)}</th>" for h in _header(space, toggles))
    body = []
    for row in table:
        marker = _marker(row)
        failed = row.seeds_total > 0 and row.seeds_ok == 0
        tip = f' title="{esc(chr(10).join(row.errors))}"' if row.errors else ""
        label = esc(row.label)
        if marker:
            label += f' <span class="marker"{tip}>{esc(marker)}</span>'
        tds = [f"<td>{label}</td>"]
        tds += [f'<td class="toggle">{esc(_fmt_toggle(row.toggles.get(k)))}</td>'
                for k in toggles]
        for metric in space.metrics:
            cell = row.cells[metric]
            sign = {1: " pos", -1: " neg", 0: ""}[_delta_sign(cell)]
            tds += [f'<td class="num">{esc(_fmt_paper(cell))}</td>',
                    f'<td class="num">{esc(_fmt_ours(cell))}</td>',
                    f'<td class="num{sign}">{esc(_fmt_delta(cell))}</td>']
        cls = ' class="failed"' if failed else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    image = ""
    if plot_png:
        image = f'<img src="{esc(plot_png)}" alt="{esc(space.title or space.name)}: paper vs ours">'
    return HTML_TEMPLATE.substitute(
        title=esc(space.title or space.name), source=esc(space.source), header=header,
        body="\n".join(body), image=image,
    )


# ---------------------------------------------------------------------------------------------
# Plot


def plot(space: TableSpace, table: list[TableRow], path: str | Path) -> Path:
    """Grouped bars (paper vs ours, std as error bars), one subplot per metric, saved as PNG.

    Uses the Agg canvas on a bare ``Figure`` rather than pyplot, so it works headless and never
    switches the backend or touches pyplot's global figure state of the calling process.
    """
    # matplotlib takes ~0.5 s to import and only the plot needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    metrics = list(space.metrics.items())
    labels = [r.label for r in table]
    width_in = max(4.0, 0.6 * len(table) + 1.5)
    fig = Figure(figsize=(width_in * len(metrics), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rotate = len(table) > 4 or any(len(s) > 10 for s in labels)
    xs = list(range(len(table)))
    bar = 0.38
    for ax, (metric, column) in zip(axes, metrics, strict=True):
        cells = [r.cells[metric] for r in table]
        paper = [(x, c.paper) for x, c in zip(xs, cells, strict=True) if c.paper is not None]
        ours = [(x, c.mean, c.std or 0.0) for x, c in zip(xs, cells, strict=True)
                if c.mean is not None]
        if paper:
            ax.bar([x - bar / 2 for x, _ in paper], [v for _, v in paper], bar,
                   label="paper", color="#9e9e9e")
        if ours:
            ax.bar([x + bar / 2 for x, _, _ in ours], [v for _, v, _ in ours], bar,
                   label="ours", color="#1f77b4")
            spread = [(x, v, s) for x, v, s in ours if s > 0]
            if spread:
                ax.errorbar([x + bar / 2 for x, _, _ in spread], [v for _, v, _ in spread],
                            yerr=[s for _, _, s in spread], fmt="none", ecolor="black", capsize=3)
        values = [v for _, v in paper] + [v + d for _, v, s in ours for d in (-s, s)]
        if values:
            low, high = min(values), max(values)
            pad = max(1.0, 0.08 * (high - min(low, 0.0)))
            # bars start at zero so that their heights compare honestly
            ax.set_ylim(min(0.0, low - pad), high + pad)
        ax.set_title(column)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=30 if rotate else 0,
                           ha="right" if rotate else "center", rotation_mode="anchor")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(space.title or space.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


# ---------------------------------------------------------------------------------------------


def write_report(space: TableSpace, table: list[TableRow], directory: str | Path
                 ) -> dict[str, Path]:
    """Write table.md, table.csv, table.html and table.png into ``directory`` (e.g. to log as
    MLflow artifacts); returns the paths keyed by "md", "csv", "html" and "png"."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"md": directory / "table.md", "csv": directory / "table.csv",
             "html": directory / "table.html", "png": directory / "table.png"}
    plot(space, table, paths["png"])
    paths["md"].write_text(to_markdown(space, table), encoding="utf-8")
    paths["csv"].write_text(to_csv(space, table), encoding="utf-8", newline="")
    paths["html"].write_text(to_html(space, table, plot_png=paths["png"].name), encoding="utf-8")
    return paths

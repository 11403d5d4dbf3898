"""The aggregated table (``vidablate.report.table``) as Markdown, CSV, LaTeX and HTML, with what the
run was (``provenance``: data, backbone and weights, epochs, seeds, commit) above it and the
claims' verdicts (``vidablate.report.claims``) below it."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

from .claims import Verdict
from .claims import counts as verdict_counts
from .claims import to_markdown as claims_markdown
from .plot import plot
from .table import Cell, TableRow, TableSpace, direction_counts, seeds_of

MISSING = "—"
MINUS = "−"
CHECK = "✓"
MARKS = {"agree": "✓", "disagree": "✗", "flat": "=", "": ""}
"""Direction of our effect against the paper's: same way, opposite, ours rounds to zero."""
REF = "ref"

Provenance = Sequence[tuple[str, str]]
"""(label, text) lines saying what "ours" ran on, e.g. ("data", "synthetic video+IMU ...")."""

HTML_TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em;
         color: #222; }
  h1 { font-size: 1.3em; margin-bottom: 0.2em; }
  h2 { font-size: 1.1em; margin-top: 1.6em; }
  p.source { color: #666; margin-top: 0; }
  dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em;
                  font-size: 0.92em; }
  dl.provenance dt { font-weight: 600; }
  dl.provenance dd { margin: 0; }
  table { border-collapse: collapse; font-size: 0.92em; }
  th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
  th { background: #f3f3f3; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.toggle { text-align: center; }
  td.pos, td.agree, td.reproduced { color: #1a7f37; font-weight: 600; }
  td.neg, td.disagree, td.contradicted { color: #cf222e; font-weight: 600; }
  td.inconclusive, td.flat { color: #9a6700; }
  tr.failed td { color: #999; }
  tr.reference td { background: #fafafa; }
  span.marker { color: #9a6700; font-size: 0.9em; }
  tr.failed span.marker { color: #cf222e; }
  img { display: block; margin-top: 1.5em; max-width: 100%; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="source">$source</p>
$provenance
<table>
<thead>
<tr>$header</tr>
</thead>
<tbody>
$body
</tbody>
</table>
$claims
$seeds
$image
</body>
</html>
""")


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


def _signed(value: float) -> str:
    """"+1.3", "−0.5" or "0.0" (one decimal, a real minus sign)."""
    rounded = round(value, 1)
    if rounded == 0:
        return "0.0"
    return (MINUS if rounded < 0 else "+") + f"{abs(value):.1f}"


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
    """Sign of ours minus the paper's as displayed (rounded to one decimal), 0 when absent."""
    if cell.delta is None:
        return 0
    rounded = round(cell.delta, 1)
    return (rounded > 0) - (rounded < 0)


def _fmt_delta(cell: Cell) -> str:
    return MISSING if cell.delta is None else _signed(cell.delta)


def _fmt_paper_effect(row: TableRow, cell: Cell) -> str:
    if row.reference:
        return REF
    return MISSING if cell.paper_effect is None else _signed(cell.paper_effect)


def _fmt_effect(row: TableRow, cell: Cell, marks: bool = True) -> str:
    """Our paired change against the reference: "+1.3 ± 0.8 ✓" (std over seed pairs)."""
    if row.reference:
        return REF
    e = cell.effect
    if e is None or e.mean is None:
        return MISSING
    text = _signed(e.mean)
    if e.n >= 2 and e.std is not None:
        text += f" ± {e.std:.1f}"
    mark = MARKS[cell.direction] if marks else ""
    return f"{text} {mark}".strip()


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


def _has_reference(table: list[TableRow]) -> bool:
    return any(r.reference for r in table)


def _metric_headers(label: str, effects: bool) -> list[str]:
    if effects:
        return [f"{label} paper", f"{label} ours", f"{label} Δref paper", f"{label} Δref ours"]
    return [f"{label} paper", f"{label} ours", "Δ"]


def _metric_cells(row: TableRow, cell: Cell, effects: bool) -> list[str]:
    if effects:
        return [_fmt_paper(cell), _fmt_ours(cell), _fmt_paper_effect(row, cell),
                _fmt_effect(row, cell)]
    return [_fmt_paper(cell), _fmt_ours(cell), _fmt_delta(cell)]


def _header(space: TableSpace, toggles: list[str], effects: bool) -> list[str]:
    cols = ["Row", *_toggle_headers(toggles)]
    for label in space.metrics.values():
        cols += _metric_headers(label, effects)
    return cols


def summary_line(table: list[TableRow], verdicts: Sequence[Verdict] = ()) -> str:
    """"Effects vs the paper's: 4 same direction, 5 opposite, 0 flat. Claims: ..."""
    parts = []
    if _has_reference(table):
        d = direction_counts(table)
        parts.append(f"effects vs the paper's (row - reference): {d['agree']} same direction "
                     f"{MARKS['agree']}, {d['disagree']} opposite {MARKS['disagree']}, "
                     f"{d['flat']} flat {MARKS['flat']}")
    if verdicts:
        c = verdict_counts(list(verdicts))
        parts.append(f"claims: {c['reproduced']} reproduced, {c['contradicted']} contradicted, "
                     f"{c['inconclusive']} inconclusive")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], lines: list[list[str]], aligns: list[str]) -> list[str]:
    """A GitHub-flavoured table, padded so it also reads well in a terminal."""
    header = [_md_escape(h) for h in header]
    lines = [[_md_escape(c) for c in line] for line in lines]
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
    return [render(header), sep, *(render(line) for line in lines)]


def _seed_lines(space: TableSpace, table: list[TableRow]) -> tuple[list[int], list[list[str]]]:
    seeds = seeds_of(table)
    lines = []
    for row in table:
        line = [row.label]
        for metric in space.metrics:
            values = row.cells[metric].values
            line.append(", ".join(f"{values[s]:.1f}" if s in values else MISSING
                                  for s in seeds))
        lines.append(line)
    return seeds, lines


def to_markdown(space: TableSpace, table: list[TableRow], provenance: Provenance = (),
                verdicts: Sequence[Verdict] = ()) -> str:
    """Title, what ours ran on, the table (with the effects against the reference row when the
    space has one), a summary line, the claims' verdicts and each seed's values."""
    effects = _has_reference(table)
    toggles = _varying_toggles(table)
    per_metric = 4 if effects else 3
    aligns = ["left"] + ["center"] * len(toggles) + ["right"] * (per_metric * len(space.metrics))
    lines = []
    for row in table:
        label = f"{row.label} {_marker(row)}".strip()
        cells = [label, *(_fmt_toggle(row.toggles.get(k)) for k in toggles)]
        for metric in space.metrics:
            cells += _metric_cells(row, row.cells[metric], effects)
        lines.append(cells)
    out = [f"### {_md_escape(_title_line(space))}", ""]
    if provenance:
        out += [f"- **{label}**: {text}" for label, text in provenance] + [""]
    out += _md_table(_header(space, toggles, effects), lines, aligns)
    if effects:
        out += ["", f"Δref: change against the reference row, ours paired by seed (mean ± std "
                    f"over seeds); {MARKS['agree']} same direction as the paper's, "
                    f"{MARKS['disagree']} opposite, {MARKS['flat']} ours rounds to zero."]
    summary = summary_line(table, verdicts)
    if summary:
        out += ["", summary[0].upper() + summary[1:] + "."]
    if verdicts:
        out += ["", "#### Claims", "", claims_markdown(list(verdicts)).rstrip("\n")]
    seeds, seed_rows = _seed_lines(space, table)
    if len(seeds) > 1:
        out += ["", f"#### Each seed ({', '.join(map(str, seeds))})", ""]
        out += _md_table(["Row", *space.metrics.values()], seed_rows,
                         ["left"] + ["right"] * len(space.metrics))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", MINUS: r"$-$", "→": r"$\to$",
                  "Δ": r"$\Delta$", MISSING: "--", MARKS["agree"]: r"\checkmark",
                  MARKS["disagree"]: r"$\times$", "†": r"$^\dagger$", "‡": r"$^\ddagger$"}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(space: TableSpace, table: list[TableRow]) -> str:
    """The table as a booktabs ``tabular`` (needs the booktabs and amssymb packages) in a
    ``table`` float: one column group per metric (paper, ours and, with a reference row, the
    paper's and our change against it), the reference row in italics."""
    effects = _has_reference(table)
    toggles = _varying_toggles(table)
    per = 4 if effects else 3
    lead = 1 + len(toggles)
    sub = ["paper", "ours", r"$\Delta$ref paper", r"$\Delta$ref ours"] if effects \
        else ["paper", "ours", r"$\Delta$"]
    top = ["Row", *(_tex(h) for h in _toggle_headers(toggles))]
    rules = []
    for i, label in enumerate(space.metrics.values()):
        top.append(rf"\multicolumn{{{per}}}{{c}}{{{_tex(label)}}}")
        first = lead + 1 + i * per
        rules.append(rf"\cmidrule(lr){{{first}-{first + per - 1}}}")
    name = space.name.replace("_", "-")
    out = [r"\begin{table}[t]", r"\centering",
           rf"\caption{{{_tex(_title_line(space))}}}", rf"\label{{tab:{name}}}",
           rf"\begin{{tabular}}{{l{'c' * len(toggles)}{'r' * per * len(space.metrics)}}}",
           r"\toprule", " & ".join(top) + r" \\", "".join(rules),
           " & ".join([""] * lead + sub * len(space.metrics)) + r" \\", r"\midrule"]
    for row in table:
        label = _tex(f"{row.label} {_marker(row)}".strip())
        cells = [rf"\textit{{{label}}}" if row.reference else label,
                 *(_tex(_fmt_toggle(row.toggles.get(k))) for k in toggles)]
        for metric in space.metrics:
            cells += [_tex(c) for c in _metric_cells(row, row.cells[metric], effects)]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
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
    """One line per row with every toggle (full dotted key) and full-precision numbers: per
    metric the paper's value, our mean/std/n, ours minus the paper's, the paper's and our
    change against the reference row, its direction, and each seed's value; empty fields mean
    "no value" so it parses back without the display formatting."""
    toggles = _toggle_keys(table)
    seeds = seeds_of(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["row", "label", "reference", *toggles]
    for metric in space.metrics:
        header += [f"{metric}_{s}" for s in ("paper", "mean", "std", "n", "delta",
                                             "paper_effect", "effect_mean", "effect_std",
                                             "effect_n", "direction")]
        header += [f"{metric}_seed{s}" for s in seeds]
    writer.writerow([*header, "seeds_ok", "seeds_total"])
    for row in table:
        line = [row.name, row.label, "true" if row.reference else "false",
                *(_csv_toggle(row.toggles.get(k)) for k in toggles)]
        for metric in space.metrics:
            cell = row.cells[metric]
            e = cell.effect
            line += [_csv_num(cell.paper), _csv_num(cell.mean), _csv_num(cell.std), str(cell.n),
                     _csv_num(cell.delta), _csv_num(cell.paper_effect),
                     _csv_num(e.mean if e else None), _csv_num(e.std if e else None),
                     str(e.n) if e else "", cell.direction]
            line += [_csv_num(cell.values.get(s)) for s in seeds]
        writer.writerow([*line, row.seeds_ok, row.seeds_total])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML


def _html_claims(verdicts: Sequence[Verdict]) -> str:
    if not verdicts:
        return ""
    esc = html.escape
    c = verdict_counts(list(verdicts))
    rows = []
    for v in verdicts:
        effects = []
        for comp in v.comparisons:
            if comp.mean is None:
                effects.append(f"{comp.better} − {comp.worse}: {MISSING}")
                continue
            text = f"{comp.better} − {comp.worse}: {_signed(comp.mean)}"
            if comp.ci is not None:
                text += f" [{_signed(comp.ci[0])}, {_signed(comp.ci[1])}]"
            effects.append(text)
        paper = "; ".join(_signed(comp.paper) for comp in v.comparisons if comp.paper is not None)
        rows.append(f'<tr><td class="{esc(v.verdict)}">{esc(v.verdict)}</td>'
                    f"<td>{esc(v.detail)}</td><td>{esc(v.claim.text)}</td>"
                    f"<td>{esc(v.claim.metric)}</td><td>{esc('; '.join(effects))}</td>"
                    f"<td>{esc(paper)}</td><td>{esc(v.claim.source)}</td></tr>")
    return (f"<h2>Claims: {c['reproduced']} reproduced, {c['contradicted']} contradicted, "
            f"{c['inconclusive']} inconclusive</h2>\n<table>\n<thead><tr><th>Verdict</th>"
            "<th>Test</th><th>Claim</th><th>Metric</th><th>Ours: difference [95 % CI]</th>"
            "<th>Paper</th><th>Source</th></tr></thead>\n<tbody>\n" + "\n".join(rows)
            + "\n</tbody>\n</table>")


def _html_seeds(space: TableSpace, table: list[TableRow]) -> str:
    seeds, lines = _seed_lines(space, table)
    if len(seeds) <= 1:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["Row", *space.metrics.values()])
    body = "\n".join("<tr>" + f"<td>{esc(line[0])}</td>"
                     + "".join(f'<td class="num">{esc(c)}</td>' for c in line[1:]) + "</tr>"
                     for line in lines)
    return (f"<h2>Each seed ({esc(', '.join(map(str, seeds)))})</h2>\n<table>\n<thead><tr>"
            f"{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")


def to_html(space: TableSpace, table: list[TableRow], plot_png: str | Path | None = None,
            provenance: Provenance = (), verdicts: Sequence[Verdict] = ()) -> str:
    """A standalone page (inline CSS, no external assets) with the same table, the claims and
    each seed's values; Δ is coloured green/red by its sign, or by its direction against the
    paper's when the space has a reference row; the PNG at ``plot_png`` is embedded below as a
    data URI, so the page shows it wherever it is opened (MLflow's artifact viewer too)."""
    esc = html.escape
    effects = _has_reference(table)
    toggles = _varying_toggles(table)
    header = "".join(f"<th>{esc(h)}</th>" for h in _header(space, toggles, effects))
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
            seeds = ", ".join(f"seed {s}: {v:.2f}" for s, v in cell.values.items())
            ours_tip = f' title="{esc(seeds)}"' if seeds else ""
            tds += [f'<td class="num">{esc(_fmt_paper(cell))}</td>',
                    f'<td class="num"{ours_tip}>{esc(_fmt_ours(cell))}</td>']
            if effects:
                cls = f" {cell.direction}" if cell.direction else ""
                tds += [f'<td class="num">{esc(_fmt_paper_effect(row, cell))}</td>',
                        f'<td class="num{cls}">{esc(_fmt_effect(row, cell))}</td>']
            else:
                sign = {1: " pos", -1: " neg", 0: ""}[_delta_sign(cell)]
                tds.append(f'<td class="num{sign}">{esc(_fmt_delta(cell))}</td>')
        classes = [c for c, on in (("failed", failed), ("reference", row.reference)) if on]
        cls = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    image = ""
    if plot_png:
        data = base64.b64encode(Path(plot_png).read_bytes()).decode("ascii")
        image = (f'<img src="data:image/png;base64,{data}" alt="'
                 f'{esc(space.title or space.name)}: paper vs ours">')
    prov = ""
    if provenance:
        prov = ('<dl class="provenance">' + "".join(
            f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in provenance) + "</dl>")
    summary = summary_line(table, ())
    if summary:
        prov += f'\n<p class="summary">{esc(summary[0].upper() + summary[1:])}.</p>'
    return HTML_TEMPLATE.substitute(
        title=esc(space.title or space.name), source=esc(space.source), provenance=prov,
        header=header, body="\n".join(body), claims=_html_claims(verdicts),
        seeds=_html_seeds(space, table), image=image,
    )


# ---------------------------------------------------------------------------------------------


def write_report(space: TableSpace, table: list[TableRow], directory: str | Path,
                 provenance: Provenance = (), verdicts: Sequence[Verdict] = ()
                 ) -> dict[str, Path]:
    """Write table.md, table.csv, table.tex, table.html and table.png (and claims.json when
    there are verdicts) into ``directory`` (e.g. to log as MLflow artifacts); returns the paths
    keyed by "md", "csv", "tex", "html", "png" (and "claims")."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"md": directory / "table.md", "csv": directory / "table.csv",
             "html": directory / "table.html", "png": directory / "table.png"}
    plot(space, table, paths["png"])
    paths["md"].write_text(to_markdown(space, table, provenance, verdicts), encoding="utf-8")
    paths["csv"].write_text(to_csv(space, table), encoding="utf-8", newline="")
    paths["tex"] = directory / "table.tex"
    paths["tex"].write_text(to_latex(space, table), encoding="utf-8")
    paths["html"].write_text(to_html(space, table, plot_png=paths["png"],
                                     provenance=provenance, verdicts=verdicts), encoding="utf-8")
    if verdicts:
        paths["claims"] = directory / "claims.json"
        paths["claims"].write_text(json.dumps(
            {"provenance": dict(provenance), "counts": verdict_counts(list(verdicts)),
             "claims": [v.to_dict() for v in verdicts]}, indent=2), encoding="utf-8")
    return paths

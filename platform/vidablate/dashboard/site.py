"""Write the dashboard: ``index.html`` (every space: run or not, last run, seeds, failed
trials, stale, effects and claims as bars) and ``tables/<space>.html`` (the report, the claims,
per-epoch curves per row and links to the MLflow runs). Inline CSS and data-URI images only,
so it works offline and from MLflow's artifact viewer."""

from __future__ import annotations

import base64
import html
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow.tracking import MlflowClient

from ..sweep.runner import SweepReport
from ..sweep.space import SHIPPED_SPACES, load_space
from .collect import SpaceStatus, collect
from .curves import curves_png

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: flex; width: 160px; height: 0.9em; background: #eee; }
.bar span { display: block; height: 100%; }
.reproduced, .agree { background: #4caf50; } .contradicted, .disagree { background: #e53935; }
.inconclusive, .flat { background: #bdbdbd; }
.verdict-reproduced { color: #2e7d32; font-weight: 600; }
.verdict-contradicted { color: #c62828; font-weight: 600; }
.verdict-inconclusive { color: #616161; }
.stale { color: #b26a00; } .never { color: #888; } .failed { color: #c62828; }
section.report { border-top: 1px solid #ddd; }
td.agree, td.pos { color: #2e7d32; background: none; } td.disagree, td.neg { color: #c62828; background: none; }
td.flat { background: none; }
img { max-width: 100%; }
"""
KINDS = ("reproduced", "contradicted", "inconclusive")
DIRECTIONS = ("agree", "disagree", "flat")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _bar(counts: dict[str, int], kinds: tuple[str, ...]) -> str:
    total = sum(counts.values())
    if not total:
        return ""
    parts = "".join(f'<span class="{k}" style="width:{100 * counts[k] / total:.1f}%" '
                    f'title="{counts[k]} {k}"></span>' for k in kinds if counts[k])
    text = ", ".join(f"{counts[k]} {k}" for k in kinds)
    return f'<div class="bar" role="img" aria-label="{text}">{parts}</div><small>{text}</small>'


def runs_url(ui: str, status: SpaceStatus, run_id: str = "") -> str:
    """The MLflow UI page of the experiment's runs (or of one run)."""
    base = f"{ui.rstrip('/')}/#/experiments/{status.experiment_id}"
    return f"{base}/runs/{run_id}" if run_id else f"{base}/runs"


def status_page(statuses: list[SpaceStatus], ui: str, built: str) -> str:
    esc = html.escape
    rows = []
    for s in statuses:
        title = esc(s.space.title if s.space else s.error)
        link = f'<a href="tables/{esc(s.name)}.html">{esc(s.name)}</a>'
        if s.run is None:
            rows.append(f'<tr data-space="{esc(s.name)}"><td>{link}</td><td>{title}</td>'
                        f'<td class="never" colspan="7">not run</td></tr>')
            continue
        stale = (f'<span class="stale">{esc("; ".join(s.stale))}</span>' if s.stale
                 else "no")
        failed = f'<span class="failed">{s.failed}</span>' if s.failed else "0"
        effects = {k: s.effects(k) or 0 for k in DIRECTIONS}
        claims = {k: s.count(k) for k in KINDS}
        rows.append(
            f'<tr data-space="{esc(s.name)}"><td>{link}</td><td>{title}</td>'
            f'<td><a href="{esc(runs_url(ui, s))}">{esc(s.started)}</a></td>'
            f"<td><code>{esc(s.commit)}</code></td><td>{esc(s.seeds)}</td>"
            f'<td class="num">{failed}</td><td>{stale}</td>'
            f"<td>{_bar(effects, DIRECTIONS)}</td><td>{_bar(claims, KINDS)}</td></tr>")
    ran = sum(s.run is not None for s in statuses)
    body = (f"<h1>vidablate: reproduction status</h1>\n<p>{ran} of {len(statuses)} spaces "
            f"run; built {esc(built)}; MLflow <a href=\"{esc(ui)}\">{esc(ui)}</a>.</p>\n"
            "<table><thead><tr><th>Space</th><th>Title</th><th>Last run</th><th>Commit</th>"
            "<th>Seeds</th><th>Failed</th><th>Stale</th><th>Effects vs paper</th>"
            "<th>Claims</th></tr></thead>\n<tbody>\n" + "\n".join(rows) +
            "\n</tbody></table>")
    return _page("vidablate: reproduction status", body)


def table_page(s: SpaceStatus, ui: str) -> str:
    esc = html.escape
    title = s.space.title if s.space else s.name
    parts = [f'<p><a href="../index.html">All spaces</a></p><h1>{esc(title)}</h1>']
    if s.space is not None:
        parts.append(f"<p>{esc(s.space.source)}</p>")
    if s.error:
        parts.append(f'<p class="failed">{esc(s.error)}</p>')
    if s.run is None:
        parts.append('<p class="never">Not run in this tracking store. Run it with '
                     f"<code>vidablate ablate space={esc(s.name)}</code>.</p>")
        return _page(title, "\n".join(parts))
    parts.append(
        f"<p>Last run {esc(s.started)}, commit <code>{esc(s.commit)}</code>, seeds "
        f"{esc(s.seeds)}, {s.failed} failed trial(s); "
        f'<a href="{esc(runs_url(ui, s, s.run.info.run_id))}">parent run in MLflow</a>.</p>')
    if s.stale:
        parts.append(f'<p class="stale">Stale: {esc("; ".join(s.stale))}.</p>')
    ran_on = [(k.split(".", 2)[2], v) for k, v in sorted(s.tags.items())
              if k.startswith("vidablate.ran_on.")]
    if ran_on:
        parts.append("<dl>" + "".join(f"<dt><b>{esc(k)}</b></dt><dd>{esc(v)}</dd>"
                                      for k, v in ran_on) + "</dl>")
    if s.claims:
        items = "".join(
            f'<tr><td class="verdict-{esc(c["verdict"])}">{esc(c["verdict"])}</td>'
            f'<td>{esc(c["claim"]["text"])}</td><td>{esc(c["detail"])}</td>'
            f'<td>{esc(c["claim"].get("source", ""))}</td></tr>' for c in s.claims)
        parts.append("<h2>Claims</h2><table class=\"claims\"><thead><tr><th>Verdict</th>"
                     "<th>Claim</th><th>Evidence</th><th>Source</th></tr></thead><tbody>"
                     f"{items}</tbody></table>")
    if s.space is not None and s.trials:
        metrics = {**s.space.metrics, "train_loss": "train loss"}
        png = curves_png(s.trials, metrics, [r.name for r in s.space.rows])
        if png:
            data = base64.b64encode(png).decode("ascii")
            parts.append("<h2>Per-epoch curves (mean over seeds, band: min to max)</h2>"
                         f'<img class="curves" alt="per-epoch curves of {esc(s.name)}" '
                         f'src="data:image/png;base64,{data}">')
        runs = "".join(
            f'<tr><td>{esc(t.row)}</td><td class="num">{t.seed}</td><td>{esc(t.status)}</td>'
            f'<td class="num">{_minutes(t)}</td>'
            f'<td><a href="{esc(runs_url(ui, s, t.run_id))}">{esc(t.run_id[:12])}</a></td></tr>'
            for t in s.trials)
        parts.append("<h2>Trials</h2><table class=\"trials\"><thead><tr><th>Row</th>"
                     "<th>Seed</th><th>Status</th><th>Minutes</th><th>MLflow run</th></tr>"
                     f"</thead><tbody>{runs}</tbody></table>")
    if s.table_html:
        name = f"{s.name}.report.html"
        parts.append(f'<h2>Report</h2><p>As the sweep wrote it (<a href="{esc(name)}">open on '
                     f'its own</a>).</p><section class="report">{_report_body(s.table_html)}'
                     "</section>")
    return _page(title, "\n".join(parts))


def _report_body(page: str) -> str:
    """The body of the sweep's ``table.html`` (its title dropped: the page has one)."""
    match = re.search(r"<body[^>]*>(.*)</body>", page, re.DOTALL)
    body = match.group(1) if match else ""
    return re.sub(r"<h1>.*?</h1>", "", body, count=1, flags=re.DOTALL)


def _minutes(t) -> str:
    return f"{(t.end - t.start) / 60000:.1f}" if t.end else ""


def default_ui(tracking_uri: str) -> str:
    """Where the MLflow UI of a store is: the server itself, else ``mlflow ui``'s default."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def build_site(tracking_uri: str, out: str | Path, spaces_dir: Path | None = None,
               ui: str | None = None, only: list[str] | None = None) -> list[Path]:
    """Write the dashboard into ``out``; returns the files written. ``only``: the table pages
    of these spaces (the status page lists every space)."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    ui = ui or default_ui(tracking_uri)
    statuses = collect(tracking_uri, spaces_dir, details=only)
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    files = [out / "index.html"]
    files[0].write_text(status_page(statuses, ui, built), encoding="utf-8")
    for s in statuses:
        if only and s.name not in only:
            continue
        page = out / "tables" / f"{s.name}.html"
        page.write_text(table_page(s, ui), encoding="utf-8")
        files.append(page)
        if s.table_html:
            report = out / "tables" / f"{s.name}.report.html"
            report.write_text(s.table_html, encoding="utf-8")
            files.append(report)
    return files


def publish(report: SweepReport) -> None:
    """Log the dashboard (status page and this table's page) to a finished sweep's parent run
    as ``dashboard/``; a failure is printed, never raised: the sweep's results are kept."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            extra = None
            if report.space_file and report.space_file.parent.resolve() != SHIPPED_SPACES:
                extra = report.space_file
            name = load_space(report.space_file).name if report.space_file else ""
            build_site(report.tracking_uri, tmp, extra, only=[name])
            MlflowClient(report.tracking_uri).log_artifacts(report.parent_run_id, tmp,
                                                            artifact_path="dashboard")
    except Exception as err:  # noqa: BLE001 - the dashboard is a view; the sweep is done
        print(f"warning: the dashboard was not logged: {type(err).__name__}: {err}")
        return
    print("dashboard: logged to the parent run (artifacts dashboard/index.html); "
          "rebuild any time with `vidablate dashboard --out site/`", flush=True)

"""Behaviour tests for the "reproduced vs paper" report (Markdown, CSV, HTML, PNG)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pylatexenc.latex2text import LatexNodes2Text

# isort: split
from vidablate.report.claims import judge_table, parse_claim
from vidablate.report.render import _varying_toggles as _varying
from vidablate.report.render import to_csv, to_html, to_latex, to_markdown, write_report
from vidablate.report.table import Cell, Effect, TableRow, TrialOutcome, build_table
from vidablate.sweep.space import Row, Space

SIRM = "model.isclip.sirm"
SGAM = "model.isclip.sgam"
FRAMES = "data.frames"


def _toggles(sirm: bool, sgam: bool) -> dict:
    return {SIRM: sirm, SGAM: sgam, FRAMES: 8}


@pytest.fixture()
def space() -> Space:
    rows = [
        Row("baseline", "Baseline", _toggles(False, False),
            {"base_acc": 60.0, "novel_acc": 51.0, "hm": 55.0}),
        Row("sirm", "+ SIRM", _toggles(True, False),
            {"base_acc": 63.0, "novel_acc": 53.0, "hm": 57.6}),
        Row("sgam", "+ <b>SGAM</b>", _toggles(False, True),
            {"base_acc": 62.0, "novel_acc": 50.0}),  # no paper HM
        Row("full", "Full", _toggles(True, True),
            {"base_acc": 66.0, "novel_acc": 55.0, "hm": 60.1}),
    ]
    return Space(
        name="isclip_ablation", paper="ISCLIP", title="Table 3: ISCLIP components",
        source="Smith et al. 2024, Tab. 3",
        metrics={"base_acc": "Base", "novel_acc": "Novel", "hm": "HM"},
        fixed={}, seeds=[0, 1, 2], rows=rows, path=Path("x.yaml"),
    )


def _m(base: float, novel: float, hm: float | None = None) -> dict[str, float]:
    out = {"base_acc": base, "novel_acc": novel}
    if hm is not None:
        out["hm"] = hm
    return out


@pytest.fixture()
def outcomes() -> list[TrialOutcome]:
    return [
        # baseline: 2 ok seeds
        TrialOutcome("baseline", 0, _m(60.0, 50.0, 55.0)),
        TrialOutcome("baseline", 1, _m(62.0, 51.0, 56.0)),
        # sirm: 2 ok of 3 (one failed)
        TrialOutcome("sirm", 0, _m(63.0, 52.0, 57.0)),
        TrialOutcome("sirm", 1, {}, status="failed", error="CUDA OOM"),
        TrialOutcome("sirm", 2, _m(65.0, 54.0, 59.0)),
        # sgam: a single seed, without an HM value
        TrialOutcome("sgam", 0, _m(61.5, 49.25)),
        # full: nothing ok
        TrialOutcome("full", 0, {}, status="failed", error="NaN loss"),
        TrialOutcome("full", 1, {}, status="missing"),
        # an outcome of a row the space does not have is ignored
        TrialOutcome("stale_row", 0, _m(1.0, 1.0, 1.0)),
    ]


@pytest.fixture()
def table(space: Space, outcomes: list[TrialOutcome]) -> list[TableRow]:
    return build_table(space, outcomes)


def _md_rows(md: str) -> dict[str, list[str]]:
    """The first Markdown table's body keyed by the first cell (label with marker)."""
    text = md.splitlines()
    start = next(i for i, ln in enumerate(text) if ln.startswith("|"))
    end = next((i for i in range(start, len(text)) if not text[i].startswith("|")), len(text))
    lines = text[start:end]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        assert len(cells) == len(header)
        body[cells[0]] = cells
    return {"__header__": header, **body}


# ------------------------------------------------------------------------------- aggregation


def test_build_table_order_and_seed_counts(table: list[TableRow]) -> None:
    assert [r.name for r in table] == ["baseline", "sirm", "sgam", "full"]
    counts = {r.name: (r.seeds_ok, r.seeds_total) for r in table}
    assert counts == {"baseline": (2, 2), "sirm": (2, 3), "sgam": (1, 1), "full": (0, 2)}
    assert table[0].toggles == _toggles(False, False)


def test_mean_std_delta_arithmetic(table: list[TableRow]) -> None:
    base = table[0].cells["base_acc"]
    assert base.paper == 60.0
    assert base.mean == 61.0
    assert base.std == pytest.approx(math.sqrt(2), abs=1e-12)
    assert base.n == 2
    assert base.delta == pytest.approx(1.0)
    novel = table[0].cells["novel_acc"]
    assert novel.mean == 50.5 and novel.delta == pytest.approx(-0.5)
    # the failed seed of "sirm" is excluded from the statistics
    sirm = table[1].cells["base_acc"]
    assert (sirm.mean, sirm.n) == (64.0, 2)
    assert sirm.std == pytest.approx(math.sqrt(2))
    assert sirm.delta == pytest.approx(1.0)


def test_single_seed_and_missing_values(table: list[TableRow]) -> None:
    sgam = table[2].cells
    assert sgam["base_acc"].mean == 61.5 and sgam["base_acc"].n == 1
    assert sgam["base_acc"].std is None
    assert sgam["base_acc"].delta == pytest.approx(-0.5)
    assert sgam["hm"] == Cell(paper=None, mean=None, std=None, n=0)
    assert sgam["hm"].delta is None
    full = table[3].cells["base_acc"]
    assert (full.paper, full.mean, full.std, full.n, full.delta) == (66.0, None, None, 0, None)


def test_cell_delta_needs_both() -> None:
    assert Cell(paper=70.0, mean=72.5, std=None, n=1).delta == pytest.approx(2.5)
    assert Cell(paper=None, mean=72.5, std=None, n=1).delta is None
    assert Cell(paper=70.0, mean=None, std=None, n=0).delta is None


def test_non_finite_metrics_and_duplicate_seeds(space: Space) -> None:
    outs = [
        TrialOutcome("baseline", 0, _m(60.0, 50.0, float("nan"))),
        TrialOutcome("baseline", 1, {}, status="failed"),
        TrialOutcome("baseline", 1, _m(62.0, 52.0, 56.0)),  # resumed: ok replaces the failure
        TrialOutcome("baseline", 0, {}, status="failed"),  # a late failure does not undo an ok
    ]
    row = build_table(space, outs)[0]
    assert (row.seeds_ok, row.seeds_total) == (2, 2)
    assert row.cells["base_acc"].mean == 61.0
    assert row.cells["hm"].n == 1 and row.cells["hm"].mean == 56.0


# ------------------------------------------------------------------------------- markdown


def test_markdown_content(space: Space, table: list[TableRow]) -> None:
    md = to_markdown(space, table)
    first = md.splitlines()[0]
    assert "Table 3: ISCLIP components" in first and "Smith et al. 2024, Tab. 3" in first
    rows = _md_rows(md)
    header = rows["__header__"]
    # only varying toggles get a column, headed by the last dotted part
    assert header[:3] == ["Row", "sirm", "sgam"]
    assert "frames" not in header and FRAMES not in header
    assert header[3:] == ["Base paper", "Base ours", "Δ", "Novel paper", "Novel ours", "Δ",
                          "HM paper", "HM ours", "Δ"]
    assert rows["Baseline"] == ["Baseline", "", "", "60.0", "61.0 ± 1.4", "+1.0",
                                "51.0", "50.5 ± 0.7", "−0.5", "55.0", "55.5 ± 0.7", "+0.5"]
    assert rows["+ SIRM (2/3 seeds)"][1:3] == ["✓", ""]
    assert rows["+ SIRM (2/3 seeds)"][3:6] == ["63.0", "64.0 ± 1.4", "+1.0"]
    # single seed: no ± ; missing paper/ours: —
    assert rows["+ <b>SGAM</b>"][1:] == ["", "✓", "62.0", "61.5", "−0.5", "50.0", "49.2",
                                         "−0.8", "—", "—", "—"]
    full = rows["Full (failed)"]
    assert full[1:3] == ["✓", "✓"]
    assert full[3:] == ["66.0", "—", "—", "55.0", "—", "—", "60.1", "—", "—"]


def test_markdown_not_run_and_constant_columns_hidden(space: Space) -> None:
    table = build_table(space, [TrialOutcome("baseline", 0, _m(60.0, 50.0, 55.0))])
    rows = _md_rows(to_markdown(space, table))
    assert "Full (not run)" in rows
    assert "Baseline" in rows  # 1/1 seeds: no marker


def test_markdown_non_bool_toggle_values(space: Space) -> None:
    space.rows[0].toggles[FRAMES] = 16
    rows = _md_rows(to_markdown(space, build_table(space, [])))
    assert rows["__header__"][:4] == ["Row", "sirm", "sgam", "frames"]
    assert rows["Baseline (not run)"][3] == "16"
    assert rows["Full (not run)"][3] == "8"


# ------------------------------------------------------------------------------- CSV


def test_csv_parses_back(space: Space, table: list[TableRow]) -> None:
    text = to_csv(space, table)
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames is not None
    assert reader.fieldnames[:6] == ["row", "label", "reference", SIRM, SGAM, FRAMES]
    assert reader.fieldnames[-2:] == ["seeds_ok", "seeds_total"]
    for metric in ("base_acc", "novel_acc", "hm"):
        for suffix in ("paper", "mean", "std", "n", "delta", "paper_effect", "effect_mean",
                       "effect_std", "effect_n", "direction", "seed0", "seed1", "seed2"):
            assert f"{metric}_{suffix}" in reader.fieldnames
    rows = {r["row"]: r for r in reader}
    assert list(rows) == ["baseline", "sirm", "sgam", "full"]
    b = rows["baseline"]
    assert b["label"] == "Baseline"
    assert float(b["base_acc_paper"]) == 60.0
    assert float(b["base_acc_mean"]) == 61.0
    assert float(b["base_acc_std"]) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert int(b["base_acc_n"]) == 2
    assert float(b["base_acc_delta"]) == pytest.approx(1.0)
    assert float(b["novel_acc_delta"]) == pytest.approx(-0.5)
    assert (b[SIRM], b[SGAM], b[FRAMES]) == ("false", "false", "8")
    assert (int(b["seeds_ok"]), int(b["seeds_total"])) == (2, 2)
    s = rows["sgam"]
    assert s["label"] == "+ <b>SGAM</b>"
    assert float(s["novel_acc_mean"]) == 49.25  # full precision, not the rounded display
    assert s["base_acc_std"] == "" and s["hm_paper"] == "" and s["hm_delta"] == ""
    f = rows["full"]
    assert f["base_acc_mean"] == "" and f["base_acc_n"] == "0"
    assert (f["seeds_ok"], f["seeds_total"]) == ("0", "2")
    assert rows["sirm"]["seeds_ok"] == "2" and rows["sirm"]["seeds_total"] == "3"


# ------------------------------------------------------------------------------- HTML


def test_html_escapes_and_colours(space: Space, table: list[TableRow]) -> None:
    page = to_html(space, table)
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "&lt;b&gt;SGAM&lt;/b&gt;" in page
    assert "<b>SGAM</b>" not in page
    assert "<style>" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "<img" not in page
    assert '<td class="num pos">+1.0</td>' in page
    assert '<td class="num neg">−0.5</td>' in page
    assert "(2/3 seeds)" in page and "(failed)" in page
    assert 'class="failed"' in page
    assert "CUDA OOM" in page  # failure reason available as a tooltip
    main = page[:page.index("</table>")]
    assert main.count("<tr") == 1 + len(table)
    assert "<th>sirm</th>" in page and "<th>frames</th>" not in page


def test_html_embeds_plot(space: Space, table: list[TableRow], tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot-a-real-image")
    page = to_html(space, table, plot_png=png)
    src = page[page.index('<img src="') + 10:]
    src = src[:src.index('"')]
    assert src.startswith("data:image/png;base64,")  # no relative link to break in MLflow
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert page.index("<img") > page.index("</table>")


# ------------------------------------------------------------------------------- files


def test_write_report(space: Space, table: list[TableRow], tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report"
    paths = write_report(space, table, out)
    assert set(paths) == {"md", "csv", "tex", "html", "png"}
    assert {p.name for p in paths.values()} == {"table.md", "table.csv", "table.tex",
                                                "table.html", "table.png"}
    for p in paths.values():
        assert p.parent == out and p.is_file() and p.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["md"].read_text(encoding="utf-8") == to_markdown(space, table)
    assert paths["csv"].read_text(encoding="utf-8") == to_csv(space, table)
    assert '<img src="data:image/png;base64,' in paths["html"].read_text(encoding="utf-8")
    assert paths["tex"].read_text(encoding="utf-8") == to_latex(space, table)


# ------------------------------------------------------------------------------- effects


@pytest.fixture()
def referenced(space: Space) -> Space:
    return dataclasses.replace(space, reference="baseline")


def _paired_outcomes() -> list[TrialOutcome]:
    base = [(60.0, 50.0, 55.0), (62.0, 51.0, 56.0), (61.0, 52.0, 57.0)]
    sirm = [(63.0, 49.0, 55.5), (63.0, 50.5, 56.5), (64.0, 50.0, 57.4)]
    return ([TrialOutcome("baseline", s, _m(*v)) for s, v in enumerate(base)]
            + [TrialOutcome("sirm", s, _m(*v)) for s, v in enumerate(sirm)]
            + [TrialOutcome("sgam", 0, _m(62.0, 51.0))])


def test_effects_are_paired_by_seed(referenced: Space) -> None:
    table = build_table(referenced, _paired_outcomes())
    ref, sirm, sgam, full = table
    assert ref.reference and not sirm.reference
    assert ref.cells["base_acc"].effect is None  # the reference has no effect of its own
    cell = sirm.cells["base_acc"]
    assert cell.values == {0: 63.0, 1: 63.0, 2: 64.0}
    assert cell.paper_effect == pytest.approx(3.0)  # 63.0 - 60.0 in the paper
    assert cell.effect is not None
    assert cell.effect.mean == pytest.approx(np.mean([3.0, 1.0, 3.0]))
    assert cell.effect.std == pytest.approx(np.std([3.0, 1.0, 3.0], ddof=1))
    assert cell.effect.n == 3 and cell.direction == "agree"
    novel = sirm.cells["novel_acc"]  # paper +2.0, ours -1.17: the other way
    assert novel.direction == "disagree"
    hm = sirm.cells["hm"]  # paper +2.6, ours +0.13 -> rounds to +0.1: agrees
    assert hm.effect.mean == pytest.approx(np.mean([0.5, 0.5, 0.4]) - 0.0) and \
        hm.direction == "agree"
    assert sgam.cells["base_acc"].effect.n == 1 and sgam.cells["base_acc"].effect.std is None
    assert sgam.cells["hm"].paper_effect is None and sgam.cells["hm"].direction == ""
    assert full.cells["base_acc"].effect.mean is None and full.cells["base_acc"].direction == ""


def test_flat_effect_and_no_paper_change() -> None:
    assert Cell(1.0, 1.0, None, 1, paper_effect=2.0,
                effect=Effect(0.04, None, 1)).direction == "flat"
    assert Cell(1.0, 1.0, None, 1, paper_effect=0.02,
                effect=Effect(1.0, None, 1)).direction == ""


def test_markdown_with_reference_provenance_and_claims(referenced: Space) -> None:
    table = build_table(referenced, _paired_outcomes())
    claim = parse_claim({"text": "SIRM helps", "better": ["sirm", "baseline"],
                         "metric": "base_acc", "source": "Tab. 3"},
                        [r.name for r in referenced.rows], list(referenced.metrics), "x")
    verdicts = judge_table([claim], table)
    prov = [("data", "synthetic video+IMU"), ("seeds", "3 (0, 1, 2)")]
    md = to_markdown(referenced, table, prov, verdicts)
    assert "- **data**: synthetic video+IMU" in md and md.index("**data**") < md.index("| Row")
    rows = _md_rows(md)
    assert rows["__header__"][3:7] == ["Base paper", "Base ours", "Base Δref paper",
                                       "Base Δref ours"]
    assert rows["Baseline"][5:7] == ["ref", "ref"]
    assert rows["+ SIRM"][3:7] == ["63.0", "63.3 ± 0.6", "+3.0", "+2.3 ± 1.2 ✓"]
    assert rows["+ SIRM"][7:11] == ["53.0", "49.8 ± 0.8", "+2.0", "−1.2 ± 0.8 ✗"]
    assert "3 same direction ✓, 2 opposite ✗, 0 flat" in md  # sirm 2 + 1, sgam 1 + 1
    assert "#### Claims" in md and "SIRM helps (base_acc)" in md
    assert verdicts[0].verdict == "reproduced"  # +3, +1, +3: one-sided p = 0.036
    assert "claims: 1 reproduced, 0 contradicted, 0 inconclusive" in md
    seeds = md[md.index("#### Each seed (0, 1, 2)"):]
    assert "63.0, 63.0, 64.0" in seeds and "62.0, —, —" in seeds


def test_html_and_files_carry_claims_and_provenance(referenced: Space, tmp_path: Path) -> None:
    table = build_table(referenced, _paired_outcomes())
    claim = parse_claim({"text": "SIRM helps", "better": ["sirm", "baseline"],
                         "metric": "base_acc"}, [r.name for r in referenced.rows],
                        list(referenced.metrics), "x")
    verdicts = judge_table([claim], table)
    prov = [("commit", "abc123")]
    page = to_html(referenced, table, provenance=prov, verdicts=verdicts)
    assert "<dt>commit</dt><dd>abc123</dd>" in page
    assert '<td class="num agree">+2.3 ± 1.2 ✓</td>' in page
    assert '<td class="num disagree">' in page
    assert 'title="seed 0: 63.00, seed 1: 63.00, seed 2: 64.00"' in page
    assert f'<td class="{verdicts[0].verdict}">{verdicts[0].verdict}</td>' in page
    paths = write_report(referenced, table, tmp_path, prov, verdicts)
    saved = json.loads(paths["claims"].read_text())
    assert saved["provenance"] == {"commit": "abc123"}
    assert saved["claims"][0]["claim"]["rows"] == ["sirm", "baseline"]
    assert saved["claims"][0]["verdict"] == verdicts[0].verdict
    assert sum(saved["counts"].values()) == 1
    reader = csv.DictReader(io.StringIO(paths["csv"].read_text()))
    sirm = next(r for r in reader if r["row"] == "sirm")
    assert float(sirm["base_acc_effect_mean"]) == pytest.approx(7 / 3)
    assert sirm["base_acc_direction"] == "agree" and sirm["reference"] == "false"
    assert float(sirm["base_acc_seed2"]) == 64.0


# ------------------------------------------------------------------------------- LaTeX


def test_latex_booktabs_reads_back_as_the_table(referenced: Space) -> None:
    table = build_table(referenced, _paired_outcomes())
    tex = to_latex(referenced, table)
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "\\label{tab:" + referenced.name.replace("_", "-") + "}" in tex
    body = tex[tex.index("\\midrule") + len("\\midrule"):tex.index("\\bottomrule")]
    lines = [line for line in body.strip().splitlines()]
    columns = 1 + 4 * len(referenced.metrics) + len(_varying(table))
    assert len(lines) == len(table)
    assert all(line.count(" & ") == columns - 1 and line.endswith("\\\\") for line in lines)
    text = LatexNodes2Text().latex_to_text(lines[1])  # the SIRM row, back to plain text
    cell = table[1].cells["base_acc"]
    assert f"{cell.paper:.1f}" in text and "+3.0" in text  # the paper's change vs baseline
    assert "±" in text and "✓" in tex.replace("\\checkmark", "✓")
    assert "\\textit{" in lines[0]  # the reference row


def test_latex_escapes_special_characters(space: Space) -> None:
    odd = dataclasses.replace(space, name="a_b", title="50% of R&D_x #1 {ok}")
    tex = to_latex(odd, build_table(odd, []))
    caption = tex[tex.index("\\caption{") + 9:tex.index("}\n\\label")]
    assert LatexNodes2Text().latex_to_text(caption).startswith("50% of R&D_x #1 {ok}")
    assert "\\label{tab:a-b}" in tex

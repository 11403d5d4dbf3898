"""A paper's claims about a table, as data, and their verdicts on our runs.

A claim names rows of the table and one metric: ``better`` (row A beats row B), ``best`` (the
first row beats each of the others) or ``chain`` (each row beats the one before it: "every
component adds"). Each comparison is a paired t-test over seeds (rows run under the same seed
share its data draw and initialisation), one-sided in both directions, with scipy.stats: the
mean difference, its 95 % confidence interval and the effect size d_z = mean / sd of the
differences (the "for" side tests a win by more than the claim's margin, the "against" side a
loss). A claim is *reproduced* when every comparison it makes is significant in its
direction, *contradicted* when one is significant against it, and *inconclusive* otherwise;
the p-values of a claim's comparisons are adjusted together (Benjamini-Hochberg,
``scipy.stats.false_discovery_control``). Fewer than 3 paired seeds cannot be judged:
"inconclusive (n seeds)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ..errors import ConfigError
from .table import TableRow, paper_values, per_seed

KINDS = ("better", "best", "chain")
ALPHA = 0.05
"""Significance level of every comparison (after the adjustment within a claim)."""
MIN_SEEDS = 3
"""Paired seeds needed before a claim is judged."""


@dataclass(frozen=True)
class Claim:
    """One statement of the paper about the table."""

    text: str
    """The claim in the paper's words."""
    kind: str
    rows: tuple[str, ...]
    """``better``: (A, B), A beats B; ``best``: (winner, *others); ``chain``: ascending."""
    metric: str
    source: str = ""
    """Where the paper says it (section, table, figure)."""
    margin: float = 0.0
    """Points by which the better row must win (0: any improvement)."""

    def pairs(self) -> list[tuple[str, str]]:
        """(better, worse) row pairs the claim asserts."""
        if self.kind == "better":
            return [(self.rows[0], self.rows[1])]
        if self.kind == "best":
            return [(self.rows[0], other) for other in self.rows[1:]]
        return [(b, a) for a, b in zip(self.rows, self.rows[1:], strict=False)]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "rows": list(self.rows),
                "metric": self.metric, "source": self.source, "margin": self.margin}


def parse_claim(raw: Any, rows: list[str], metrics: list[str], where: str) -> Claim:
    """A claim from its YAML form (``text``, one of ``better``/``best``/``chain`` with row
    names, ``metric``, optional ``source``, ``margin``); errors name the place."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a claim is a mapping with text, metric and one of "
                          f"{KINDS}")
    unknown = set(raw) - {"text", "metric", "source", "margin", *KINDS}
    kinds = [k for k in KINDS if k in raw]
    if unknown or len(kinds) != 1 or "text" not in raw or "metric" not in raw:
        raise ConfigError(f"{where}: a claim needs text, metric and exactly one of {KINDS}"
                          f"{'; unknown key(s) ' + str(sorted(unknown)) if unknown else ''}")
    kind = kinds[0]
    names = raw[kind]
    if not isinstance(names, list) or len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"{where}: {kind} needs a list of 2 or more distinct row names")
    missing = [n for n in names if n not in rows]
    if missing:
        raise ConfigError(f"{where}: rows {missing} are not in the space; rows are {rows}")
    if kind == "better" and len(names) != 2:
        raise ConfigError(f"{where}: better names exactly two rows [better, worse]")
    if raw["metric"] not in metrics:
        raise ConfigError(f"{where}: metric {raw['metric']!r} is not one of {metrics}")
    margin = raw.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise ConfigError(f"{where}: margin must be a number >= 0")
    return Claim(str(raw["text"]), kind, tuple(str(n) for n in names), str(raw["metric"]),
                 str(raw.get("source", "")), float(margin))


@dataclass
class Comparison:
    """One paired comparison of a claim: ``better`` minus ``worse`` over the seeds."""

    better: str
    worse: str
    seeds: list[int]
    differences: list[float]
    mean: float | None = None
    ci: tuple[float, float] | None = None
    effect_size: float | None = None
    """d_z = mean / sd of the paired differences."""
    p_for: float | None = None
    """Adjusted one-sided p-value for "better beats worse" (by more than the margin)."""
    p_against: float | None = None
    """Adjusted one-sided p-value for the opposite."""
    paper: float | None = None
    """The paper's own difference, when it gives both numbers."""


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    """reproduced | contradicted | inconclusive (with the reason in ``detail``)."""
    detail: str
    comparisons: list[Comparison] = field(default_factory=list)
    paper_holds: bool | None = None
    """Whether the paper's own numbers satisfy the claim (None: it does not print them all)."""

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim.to_dict(), "verdict": self.verdict, "detail": self.detail,
                "paper_holds": self.paper_holds,
                "comparisons": [c.__dict__ | {"ci": list(c.ci) if c.ci else None}
                                for c in self.comparisons]}


def judge(claim: Claim, per_seed: dict[str, dict[int, float]],
          paper: dict[str, float | None] | None = None) -> Verdict:
    """The verdict of ``claim`` from ``per_seed`` (row -> seed -> metric value of the trials
    that finished) and, for ``paper_holds``, the paper's value per row."""
    comparisons: list[Comparison] = []
    for better, worse in claim.pairs():
        a, b = per_seed.get(better, {}), per_seed.get(worse, {})
        seeds = sorted(set(a) & set(b))
        diffs = [a[s] - b[s] for s in seeds]
        c = Comparison(better, worse, seeds, diffs)
        if paper and paper.get(better) is not None and paper.get(worse) is not None:
            c.paper = float(paper[better]) - float(paper[worse])
        comparisons.append(c)
    paper_holds = None
    if comparisons and all(c.paper is not None for c in comparisons):
        paper_holds = all(c.paper > claim.margin for c in comparisons)
    n = min((len(c.seeds) for c in comparisons), default=0)
    missing = [r for r in claim.rows if not per_seed.get(r)]
    if missing:
        return Verdict(claim, "inconclusive", f"not run: {', '.join(missing)}", comparisons,
                       paper_holds)
    if n < MIN_SEEDS:
        for c in comparisons:
            if c.differences:
                c.mean = float(np.mean(c.differences))
        return Verdict(claim, "inconclusive", f"{n} seed{'s' if n != 1 else ''}",
                       comparisons, paper_holds)
    raw_for, raw_against = [], []
    for c in comparisons:
        d = np.asarray(c.differences, dtype=np.float64)
        c.mean = float(np.mean(d))
        sd = float(np.std(d, ddof=1))
        if sd == 0.0:  # every seed gives the same difference: its sign decides, no test needed
            c.effect_size = math.copysign(math.inf, c.mean) if c.mean else 0.0
            c.ci = (c.mean, c.mean)
            raw_for.append(0.0 if c.mean > claim.margin else 1.0)
            raw_against.append(0.0 if c.mean < 0 else 1.0)
            continue
        # the paired t-test of "better - worse" over seeds (ttest_rel(a, b) is this test)
        greater = stats.ttest_1samp(d, popmean=claim.margin, alternative="greater")
        less = stats.ttest_1samp(d, popmean=0.0, alternative="less")
        interval = stats.ttest_1samp(d, popmean=0.0).confidence_interval(1 - ALPHA)
        c.ci = (float(interval.low), float(interval.high))
        c.effect_size = c.mean / sd
        raw_for.append(float(greater.pvalue))
        raw_against.append(float(less.pvalue))
    adjusted_for = _adjust(raw_for)
    adjusted_against = _adjust(raw_against)
    for c, pf, pa in zip(comparisons, adjusted_for, adjusted_against, strict=True):
        c.p_for, c.p_against = pf, pa
    if any(p < ALPHA for p in adjusted_against):
        worst = min(range(len(comparisons)), key=lambda i: adjusted_against[i])
        c = comparisons[worst]
        return Verdict(claim, "contradicted", f"{c.worse} beats {c.better} "
                       f"(p = {c.p_against:.3g}, n = {len(c.seeds)})", comparisons, paper_holds)
    if all(p < ALPHA for p in adjusted_for):
        return Verdict(claim, "reproduced", f"p <= {max(adjusted_for):.3g}, n = {n}",
                       comparisons, paper_holds)
    return Verdict(claim, "inconclusive", f"not significant, p = {max(adjusted_for):.3g}, "
                   f"n = {n}", comparisons, paper_holds)


def judge_table(claims: list[Claim], table: list[TableRow]) -> list[Verdict]:
    """Every claim's verdict from an aggregated table (``report.table.build_table``)."""
    return [judge(c, per_seed(table, c.metric), paper_values(table, c.metric)) for c in claims]


def _adjust(pvalues: list[float]) -> list[float]:
    """Benjamini-Hochberg adjustment of a claim's p-values (scipy)."""
    if len(pvalues) <= 1:
        return list(pvalues)
    return [float(p) for p in stats.false_discovery_control(np.asarray(pvalues))]


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    """Verdicts by kind: reproduced, contradicted, inconclusive."""
    out = {"reproduced": 0, "contradicted": 0, "inconclusive": 0}
    for v in verdicts:
        out[v.verdict] += 1
    return out


def to_markdown(verdicts: list[Verdict]) -> str:
    """One line per claim: verdict, the claim, the effect and its interval, the paper's."""
    if not verdicts:
        return ""
    lines = ["| Verdict | Claim | Ours: difference [95 % CI], d_z | Paper |",
             "|---|---|---|---|"]
    for v in verdicts:
        effects = []
        for c in v.comparisons:
            if c.mean is None:
                effects.append(f"{c.better} - {c.worse}: —")
                continue
            text = f"{c.better} - {c.worse}: {c.mean:+.1f}"
            if c.ci is not None:
                text += f" [{c.ci[0]:+.1f}, {c.ci[1]:+.1f}]"
            if c.effect_size is not None and math.isfinite(c.effect_size):
                text += f", d_z {c.effect_size:.2f}"
            effects.append(text)
        paper = "; ".join(f"{c.paper:+.1f}" for c in v.comparisons if c.paper is not None)
        holds = {True: "holds", False: "does not hold", None: ""}[v.paper_holds]
        lines.append(f"| {v.verdict} ({v.detail}) | {v.claim.text} ({v.claim.metric}) | "
                     f"{'; '.join(effects)} | {paper} {holds} |".replace("  |", " |"))
    return "\n".join(lines) + "\n"

"""Claims as data and their verdicts: parsing errors name the place, the paired tests equal
scipy's ttest_rel on the same numbers, and the verdict rules (reproduced / contradicted /
inconclusive, fewer than 3 seeds, rows not run, margins, several comparisons per claim)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

# isort: split
from vidablate.errors import ConfigError
from vidablate.report.claims import MIN_SEEDS, Claim, judge, parse_claim

ROWS = ["base", "a", "b", "c"]
METRICS = ["hm", "top1"]


def _claim(kind: str, rows: list[str], margin: float = 0.0) -> Claim:
    return parse_claim({"text": "t", kind: rows, "metric": "hm", "margin": margin}, ROWS,
                       METRICS, "x.yaml: claims[0]")


@pytest.mark.parametrize("raw, match", [
    ("a > b", "a mapping"),
    ({"text": "t", "metric": "hm"}, "exactly one of"),
    ({"text": "t", "metric": "hm", "better": ["a", "b"], "best": ["a", "b"]}, "exactly one of"),
    ({"text": "t", "metric": "hm", "better": ["a", "b"], "colour": 1}, "unknown key"),
    ({"text": "t", "metric": "hm", "better": ["a", "zz"]}, r"rows \['zz'\] are not in"),
    ({"text": "t", "metric": "hm", "better": ["a", "b", "c"]}, "exactly two rows"),
    ({"text": "t", "metric": "hm", "chain": ["a"]}, "2 or more distinct"),
    ({"text": "t", "metric": "hm", "best": ["a", "a"]}, "2 or more distinct"),
    ({"text": "t", "metric": "acc", "better": ["a", "b"]}, "metric 'acc' is not one of"),
    ({"text": "t", "metric": "hm", "better": ["a", "b"], "margin": -1}, "margin"),
])
def test_bad_claims_name_the_place(raw, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_claim(raw, ROWS, METRICS, "x.yaml: claims[3]")
    assert "x.yaml: claims[3]" in str(err.value)


def test_pairs_of_each_kind():
    assert _claim("better", ["a", "base"]).pairs() == [("a", "base")]
    assert _claim("best", ["b", "a", "c"]).pairs() == [("b", "a"), ("b", "c")]
    assert _claim("chain", ["base", "a", "b"]).pairs() == [("a", "base"), ("b", "a")]


def _seeds(values: list[float]) -> dict[int, float]:
    return dict(enumerate(values))


def test_a_consistent_win_is_reproduced_with_scipys_paired_test():
    a, base = [52.0, 55.5, 51.0, 54.0], [50.0, 52.0, 50.5, 51.0]
    v = judge(_claim("better", ["a", "base"]), {"a": _seeds(a), "base": _seeds(base)},
              {"a": 60.0, "base": 58.0})
    assert v.verdict == "reproduced" and v.paper_holds is True
    (c,) = v.comparisons
    ref = stats.ttest_rel(a, base, alternative="greater")
    assert c.p_for == pytest.approx(ref.pvalue)
    assert c.p_against == pytest.approx(stats.ttest_rel(a, base, alternative="less").pvalue)
    ci = stats.ttest_rel(a, base).confidence_interval(0.95)
    assert c.ci == pytest.approx((ci.low, ci.high))
    d = np.subtract(a, base)
    assert c.mean == pytest.approx(d.mean())
    assert c.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.paper == pytest.approx(2.0) and c.seeds == [0, 1, 2, 3]


def test_a_consistent_loss_is_contradicted():
    v = judge(_claim("better", ["a", "base"]),
              {"a": _seeds([40.0, 41.0, 39.5]), "base": _seeds([45.0, 47.0, 44.0])})
    assert v.verdict == "contradicted" and "base beats a" in v.detail
    assert v.paper_holds is None  # no paper numbers given


def test_noise_is_inconclusive_and_few_seeds_are_not_judged():
    noisy = {"a": _seeds([50.0, 45.0, 55.0]), "base": _seeds([49.0, 50.0, 51.0])}
    v = judge(_claim("better", ["a", "base"]), noisy)
    assert v.verdict == "inconclusive" and "not significant" in v.detail
    two = {"a": _seeds([60.0, 61.0]), "base": _seeds([40.0, 41.0])}
    v = judge(_claim("better", ["a", "base"]), two)
    assert MIN_SEEDS == 3
    assert (v.verdict, v.detail) == ("inconclusive", "2 seeds")
    assert v.comparisons[0].mean == pytest.approx(20.0)  # the effect is still shown


def test_only_seeds_both_rows_finished_are_paired():
    v = judge(_claim("better", ["a", "base"]),
              {"a": {0: 51.0, 1: 52.0, 2: 53.0, 7: 99.0}, "base": {0: 50.0, 1: 50.5, 2: 51.0}})
    assert v.comparisons[0].seeds == [0, 1, 2]
    assert v.comparisons[0].differences == [1.0, 1.5, 2.0]


def test_rows_not_run_are_named():
    v = judge(_claim("chain", ["base", "a", "b"]),
              {"base": _seeds([1.0, 2.0, 3.0]), "a": _seeds([2.0, 3.0, 4.0])})
    assert (v.verdict, v.detail) == ("inconclusive", "not run: b")


def test_every_comparison_of_a_claim_must_hold():
    per_seed = {"b": _seeds([60.0, 61.0, 62.0, 60.5]), "a": _seeds([50.0, 51.5, 50.0, 50.5]),
                "c": _seeds([59.0, 61.5, 61.0, 60.9])}  # b vs c: no clear win
    v = judge(_claim("best", ["b", "a", "c"]), per_seed, {"b": 3.0, "a": 1.0, "c": 2.0})
    assert v.verdict == "inconclusive" and v.paper_holds is True
    # the two p-values are adjusted together (Benjamini-Hochberg)
    raw = [stats.ttest_rel(list(per_seed["b"].values()), list(per_seed[o].values()),
                           alternative="greater").pvalue for o in ("a", "c")]
    order = np.argsort(raw)
    expected = np.empty(2)
    expected[order[1]] = raw[order[1]]
    expected[order[0]] = min(raw[order[0]] * 2, raw[order[1]])
    assert [c.p_for for c in v.comparisons] == pytest.approx(list(expected))


def test_margin_raises_the_bar_but_not_the_contradiction():
    per_seed = {"a": _seeds([51.0, 51.2, 50.9, 51.1]), "base": _seeds([50.0, 50.1, 50.0, 50.0])}
    assert judge(_claim("better", ["a", "base"]), per_seed).verdict == "reproduced"
    v = judge(_claim("better", ["a", "base"], margin=2.0), per_seed, {"a": 3.0, "base": 2.0})
    assert v.verdict == "inconclusive"  # wins by ~1 point, not by 2: not against the claim
    assert v.paper_holds is False  # the paper's own difference (1.0) is below the margin


def test_identical_differences_need_no_test():
    per_seed = {"a": _seeds([52.0, 53.0, 54.0]), "base": _seeds([50.0, 51.0, 52.0])}
    v = judge(_claim("better", ["a", "base"]), per_seed)
    assert v.verdict == "reproduced" and v.comparisons[0].ci == (2.0, 2.0)
    tie = {"a": _seeds([50.0, 51.0, 52.0]), "base": _seeds([50.0, 51.0, 52.0])}
    assert judge(_claim("better", ["a", "base"]), tie).verdict == "inconclusive"

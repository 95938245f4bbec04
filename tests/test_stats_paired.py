"""Paired-comparison statistics against statsmodels / scipy and hand-computed cases."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from theraloop.stats._paired import (
    bootstrap_ci,
    holm,
    holm_rejections,
    mcnemar,
    mcnemar_from_outcomes,
    win_rate_ci,
)

DISCORDANT = [(0, 0), (0, 1), (0, 6), (1, 7), (7, 1), (3, 3), (4, 5), (12, 30), (40, 25), (100, 130)]


def exact_midp(b: int, c: int) -> float:
    """Mid-p from exact binomial coefficients: 2 P(X < k) + P(X = k), X ~ Bin(b + c, 1/2)."""
    n, k = b + c, min(b, c)
    below = sum(Fraction(comb(n, x), 2**n) for x in range(k))
    return float(min(Fraction(1), 2 * below + Fraction(comb(n, k), 2**n)))


@pytest.mark.parametrize(("b", "c"), DISCORDANT)
def test_mcnemar_matches_statsmodels_and_exact_midp(b: int, c: int) -> None:
    result = mcnemar(b, c)
    table = [[10, b], [c, 10]]  # the concordant cells do not enter the test
    assert result.n == b + c and (result.wins_a, result.wins_b) == (b, c)
    assert result.exact_p == pytest.approx(sm_mcnemar(table, exact=True).pvalue, abs=1e-6)
    assert result.midp_p == pytest.approx(exact_midp(b, c), abs=1e-6)
    assert result.midp_p <= result.exact_p
    if b != c:
        assert result.statistic == pytest.approx(sm_mcnemar(table, exact=False, correction=True).statistic, abs=1e-6)


def test_mcnemar_fagerland_worked_example() -> None:
    # Fagerland, Lydersen & Laake (2013), AHR example: b = 1, c = 7, n = 8.
    # P(X <= 1) = (1 + 8) / 256 = 9/256; exact = 18/256 = 0.0703125 (paper: 0.070)
    # mid-p = 2 (9/256 - 8/512) = 10/256 = 0.0390625 (paper: 0.039); chi2 = (6 - 1)^2 / 8 = 3.125
    result = mcnemar(1, 7)
    assert result.exact_p == pytest.approx(0.0703125, abs=1e-12)
    assert result.midp_p == pytest.approx(0.0390625, abs=1e-12)
    assert result.statistic == pytest.approx(3.125, abs=1e-12)


def test_mcnemar_edge_cases() -> None:
    empty = mcnemar(0, 0)
    assert (empty.n, empty.exact_p, empty.midp_p, empty.statistic) == (0, 1.0, 1.0, None)
    balanced = mcnemar(5, 5)
    # 2 P(X <= 5) > 1 and mid-p is exactly 1 by symmetry; Edwards' statistic floors at 0.
    assert (balanced.exact_p, balanced.midp_p, balanced.statistic) == (1.0, pytest.approx(1.0), 0.0)
    # One-sided sweep: 2 * 0.5^6 = 0.03125; mid-p = 0.03125 - 0.5^6 = 0.015625
    sweep = mcnemar(0, 6)
    assert sweep.exact_p == pytest.approx(0.03125) and sweep.midp_p == pytest.approx(0.015625)
    for bad in ((-1, 2), (1.5, 2), (True, 2)):
        with pytest.raises(ValueError, match="non-negative integer"):
            mcnemar(*bad)


def test_mcnemar_from_outcomes_drops_ties() -> None:
    outcomes = ["A", "tie", "B", "A", "tie", "A", "A", "B", "tie"]
    assert mcnemar_from_outcomes(outcomes) == mcnemar(4, 2)
    all_ties = mcnemar_from_outcomes(["tie"] * 5)
    assert all_ties.n == 0 and all_ties.exact_p == 1.0 and all_ties.midp_p == 1.0
    with pytest.raises(ValueError, match=r"outcome 1: 'a'"):
        mcnemar_from_outcomes(["A", "a"])


def _scipy_ci(values: np.ndarray, statistic, n_boot: int, seed: int, level: float, method: str) -> tuple[float, float]:
    # Bootstrap the indices so scipy resamples exactly as theraloop does for any kind of unit.
    result = stats.bootstrap((np.arange(len(values)),), lambda index: statistic(values[index]),
                             vectorized=False, n_resamples=n_boot, confidence_level=level,
                             method=method, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_reproduces_scipy(method: str) -> None:
    values = np.random.default_rng(7).lognormal(size=40)  # skewed, so BCa differs from percentile
    estimate, low, high = bootstrap_ci(values, np.mean, n_boot=500, seed=3, level=0.9, method=method)
    assert estimate == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(_scipy_ci(values, np.mean, 500, 3, 0.9, method), abs=1e-9)
    assert low < estimate < high


def test_bootstrap_ci_resamples_arbitrary_units() -> None:
    # Units are (question, score) records given as a list; the statistic sees lists of records.
    scores = np.random.default_rng(1).normal(size=25)
    units = [{"question": f"q{i}", "score": float(score)} for i, score in enumerate(scores)]
    seen_types = set()

    def mean_score(sample) -> float:
        seen_types.add(type(sample))
        return float(np.mean([unit["score"] for unit in sample]))

    result = bootstrap_ci(units, mean_score, n_boot=300, seed=11, method="bca")
    assert seen_types == {list}
    assert result[1:] == pytest.approx(_scipy_ci(scores, np.mean, 300, 11, 0.95, "bca"), abs=1e-9)


def test_bootstrap_ci_is_deterministic_and_validates() -> None:
    values = list(range(30))
    first = bootstrap_ci(values, np.mean, n_boot=200, seed=5)
    assert bootstrap_ci(values, np.mean, n_boot=200, seed=5) == first
    assert bootstrap_ci(values, np.mean, n_boot=200, seed=6) != first
    with pytest.raises(ValueError, match="at least 2 units"):
        bootstrap_ci([1.0], np.mean)
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci(values, np.mean, method="basic")
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(values, np.mean, level=95)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_win_rate_ci_equals_bootstrap_of_each_share(method: str) -> None:
    outcomes = list(np.random.default_rng(2).choice(["A", "B", "tie"], size=60, p=[0.5, 0.3, 0.2]))
    rates = win_rate_ci(outcomes, n_boot=400, seed=9, level=0.9, method=method)
    assert rates.n == 60
    assert rates.win.estimate + rates.tie.estimate + rates.loss.estimate == pytest.approx(1.0)
    for field, label in (("win", "A"), ("tie", "tie"), ("loss", "B")):
        expected = bootstrap_ci(outcomes, lambda sample, label=label: float(np.mean([o == label for o in sample])),
                                n_boot=400, seed=9, level=0.9, method=method)
        got = getattr(rates, field)
        assert (got.estimate, got.low, got.high) == pytest.approx(expected, abs=1e-12)


def test_win_rate_ci_degenerate_outcomes() -> None:
    # All A: every resample has win rate 1; BCa must not fail on the flat distribution.
    rates = win_rate_ci(["A"] * 10, n_boot=100, method="bca")
    assert (rates.win.low, rates.win.high, rates.loss.high, rates.tie.high) == (1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="outcome 2"):
        win_rate_ci(["A", "B", "draw"])


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(4)
    cases = [
        [0.01, 0.04, 0.03, 0.005],
        [0.2, 0.2, 0.01, 0.6, 0.049],  # tied p-values, values pushed past 1 and capped
        list(rng.uniform(0, 0.1, size=12)),
        [0.5],
        [0.025, 0.05],  # exactly on the boundary: 0.025 <= 0.05 / 2, then 0.05 <= 0.05 / 1
    ]
    for pvalues in cases:
        reject, adjusted, _, _ = multipletests(pvalues, alpha=0.05, method="holm")
        assert holm(pvalues) == pytest.approx(adjusted.tolist(), abs=1e-12)
        assert holm_rejections(pvalues, alpha=0.05) == reject.tolist()
    # Hand case: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_rejections([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([]) == [] and holm_rejections([]) == []


def test_holm_rejects_bad_pvalues() -> None:
    for bad in ([0.1, float("nan")], [1.2], [-0.01]):
        with pytest.raises(ValueError, match="not in"):
            holm(bad)
    with pytest.raises(ValueError, match="alpha"):
        holm_rejections([0.1], alpha=5)

"""Paired comparison of two systems over the same questions: McNemar, bootstrap CIs, Holm.

The arena asks, per question and criterion, which of two systems answered better (A / B / tie).
Ties carry no information about which system is better, so McNemar uses the discordant counts
only; confidence intervals resample questions, the unit that was sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import ndtr, ndtri
from scipy.stats import binom

Outcome = Literal["A", "B", "tie"]
OUTCOMES: tuple[str, ...] = ("A", "B", "tie")
BootstrapMethod = Literal["percentile", "bca"]


class McNemarResult(BaseModel):
    """McNemar's test on the discordant pairs: `wins_a` questions A won, `wins_b` questions B won."""

    model_config = ConfigDict(frozen=True)

    n: int
    wins_a: int
    wins_b: int
    exact_p: float
    midp_p: float
    statistic: float | None


def mcnemar(wins_a: int, wins_b: int) -> McNemarResult:
    """Exact, mid-p and continuity-corrected McNemar on discordant counts (ties already excluded).

    Under H0 each discordant question is a fair coin, so X = wins of the less frequent winner is
    Bin(n, 1/2). exact_p = min(1, 2 P(X <= k)); midp_p = min(1, 2 (P(X <= k) - P(X = k) / 2)),
    which Fagerland, Lydersen & Laake (2013) recommend because the exact test is conservative.
    `statistic` is Edwards' chi-square (|b - c| - 1)^2 / (b + c), floored at 0 when b = c as R's
    mcnemar.test does (statsmodels returns 1/n there); None when there are no discordant pairs.
    """
    for name, value in (("wins_a", wins_a), ("wins_b", wins_b)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    wins_a, wins_b = int(wins_a), int(wins_b)
    n = wins_a + wins_b
    k = min(wins_a, wins_b)
    cdf = float(binom.cdf(k, n, 0.5))
    pmf = float(binom.pmf(k, n, 0.5))
    statistic = max(abs(wins_a - wins_b) - 1, 0) ** 2 / n if n else None
    return McNemarResult(n=n, wins_a=wins_a, wins_b=wins_b, exact_p=min(1.0, 2 * cdf),
                         midp_p=min(1.0, 2 * (cdf - 0.5 * pmf)), statistic=statistic)


def _check_outcomes(outcomes: Sequence[str]) -> None:
    for index, outcome in enumerate(outcomes):
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {index}: {outcome!r} is not one of {list(OUTCOMES)}")


def mcnemar_from_outcomes(outcomes: Sequence[Outcome]) -> McNemarResult:
    """McNemar on per-question outcomes; ties are left out."""
    _check_outcomes(outcomes)
    return mcnemar(sum(outcome == "A" for outcome in outcomes), sum(outcome == "B" for outcome in outcomes))


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    # Same call as scipy.stats.bootstrap, so the same seed gives the same resamples.
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def _check_bootstrap_args(n: int, n_boot: int, level: float, method: str) -> None:
    if n < 2:
        raise ValueError(f"bootstrap needs at least 2 units, got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")


def _interval(estimate: float, boot: np.ndarray, jackknife: Callable[[], np.ndarray],
              level: float, method: str) -> tuple[float, float]:
    """Percentile or BCa bounds from the bootstrap distribution (Efron & Tibshirani 1993, 14.3)."""
    alpha = (1 - level) / 2
    if method == "percentile":
        low_q, high_q = alpha, 1 - alpha
    else:
        # Bias correction: where the estimate sits in its bootstrap distribution (ties count half).
        z0 = float(ndtri((np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate))
                         / (2 * len(boot))))
        if not np.isfinite(z0):
            raise ValueError("BCa interval undefined: the estimate lies outside its bootstrap "
                             "distribution; use method='percentile'")
        # Acceleration: skewness of the jackknife influence values.
        theta_jack = jackknife()
        influence = (len(theta_jack) - 1) * (theta_jack.mean() - theta_jack)
        spread = float(np.sum(influence**2))
        # A statistic that no single deletion moves has no measurable skew: no acceleration.
        accel = float(np.sum(influence**3)) / (6 * spread**1.5) if spread > 0 else 0.0
        z_alpha = float(ndtri(alpha))
        low_q = float(ndtr(z0 + (z0 + z_alpha) / (1 - accel * (z0 + z_alpha))))
        high_q = float(ndtr(z0 + (z0 - z_alpha) / (1 - accel * (z0 - z_alpha))))
    low, high = np.quantile(boot, [low_q, high_q])
    return float(low), float(high)


def _take(units: Sequence[Any] | np.ndarray, index: np.ndarray) -> Sequence[Any] | np.ndarray:
    return units[index] if isinstance(units, np.ndarray) else [units[i] for i in index]


def bootstrap_ci(units: Sequence[Any] | np.ndarray, statistic: Callable[[Sequence[Any]], float],
                 n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 method: BootstrapMethod = "percentile") -> tuple[float, float, float]:
    """(estimate, low, high): `statistic` on all units and a bootstrap CI resampling the units.

    `statistic` receives a resample as a list (as a numpy array when `units` is one). Resamples
    come from numpy's default_rng(seed) exactly as in scipy.stats.bootstrap with rng=default_rng(seed),
    and the percentile and BCa bounds follow scipy's definitions, so results agree with scipy.
    BCa uses the jackknife for the acceleration (n extra evaluations of `statistic`).
    """
    n = len(units)
    _check_bootstrap_args(n, n_boot, level, method)
    estimate = float(statistic(units))
    boot = np.array([statistic(_take(units, row)) for row in _resample_indices(n, n_boot, seed)], dtype=float)

    def jackknife() -> np.ndarray:
        everyone = np.arange(n)
        return np.array([statistic(_take(units, np.delete(everyone, i))) for i in range(n)], dtype=float)

    return (estimate, *_interval(estimate, boot, jackknife, level, method))


class RateCI(BaseModel):
    model_config = ConfigDict(frozen=True)

    estimate: float
    low: float
    high: float


class WinRates(BaseModel):
    """Share of questions A won, tied and lost against B, each with a bootstrap CI over questions."""

    model_config = ConfigDict(frozen=True)

    n: int
    win: RateCI
    tie: RateCI
    loss: RateCI
    level: float
    n_boot: int
    seed: int
    method: BootstrapMethod


def win_rate_ci(outcomes: Sequence[Outcome], n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                method: BootstrapMethod = "percentile") -> WinRates:
    """Win / tie / loss rates of A, one outcome per question, with bootstrap CIs over questions.

    The three rates share one set of resamples; each interval equals
    bootstrap_ci(outcomes, share_of(label), n_boot, seed, level, method).
    """
    _check_outcomes(outcomes)
    n = len(outcomes)
    _check_bootstrap_args(n, n_boot, level, method)
    indices = _resample_indices(n, n_boot, seed)
    rates = {}
    for field, label in (("win", "A"), ("tie", "tie"), ("loss", "B")):
        hits = np.array([outcome == label for outcome in outcomes], dtype=float)
        estimate = float(hits.mean())
        # Leaving question i out of a mean of 0/1 values: (total - hit_i) / (n - 1).
        low, high = _interval(estimate, hits[indices].mean(axis=1),
                              lambda hits=hits: (hits.sum() - hits) / (n - 1), level, method)
        rates[field] = RateCI(estimate=estimate, low=low, high=high)
    return WinRates(n=n, level=level, n_boot=n_boot, seed=seed, method=method, **rates)


def _check_pvalues(pvalues: Sequence[float]) -> np.ndarray:
    values = np.asarray(pvalues, dtype=float)
    if values.ndim != 1:
        raise ValueError("pvalues must be a flat sequence")
    bad = np.flatnonzero(~((values >= 0) & (values <= 1)))
    if bad.size:
        raise ValueError(f"p-value {bad[0]} is {values[bad[0]]!r}, not in [0, 1]")
    return values


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in input order: monotone in the sorted order, capped at 1."""
    values = _check_pvalues(pvalues)
    m = len(values)
    order = np.argsort(values, kind="stable")
    stepped = np.maximum.accumulate(values[order] * np.arange(m, 0, -1))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def holm_rejections(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level `alpha`, in input order.

    Step-down: walk the p-values from smallest up, rejecting while p_(i) <= alpha / (m - i + 1).
    Mathematically the same as holm(pvalues) <= alpha; comparing thresholds avoids float rounding
    at the boundary.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = _check_pvalues(pvalues)
    m = len(values)
    rejected = [False] * m
    for rank, index in enumerate(np.argsort(values, kind="stable")):
        if values[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return rejected

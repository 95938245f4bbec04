"""Agreement of a judge's scores with human scores: ICC, weighted kappa, Krippendorff's alpha,
correlations, bias and Bland-Altman, at the level of responses and of the systems that wrote them.

Scores are numbers on one scale per dimension (e.g. 1-5). Single-number statistics return NaN
when undefined (constant ratings, as the reference libraries do); report records use None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator
from scipy.stats import f as f_dist
from scipy.stats import pearsonr, spearmanr

from theraloop.stats._paired import _check_bootstrap_args, _resample_indices

ICCKind = Literal["C,1", "A,1", "C,k", "A,k"]
ICC_KINDS: tuple[ICCKind, ...] = ("C,1", "A,1", "C,k", "A,k")
AlphaLevel = Literal["nominal", "ordinal", "interval"]
Tier = Literal["poor", "moderate", "good", "excellent"]
# Resampled matrices are processed in chunks of about this many cells to bound memory.
_BOOT_CHUNK_CELLS = 2_000_000


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> Any:
        # NaN is not JSON; an undefined statistic is recorded as null.
        return None if isinstance(value, float) and math.isnan(value) else value


# ---------------------------------------------------------------- ICC


def _ratings_matrix(ratings: Any) -> np.ndarray:
    matrix = np.asarray(ratings, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 2:
        raise ValueError(f"ratings must be an n_targets x k_raters matrix with n >= 2 and k >= 2, "
                         f"got shape {matrix.shape}")
    missing = np.argwhere(~np.isfinite(matrix))
    if missing.size:
        row, column = missing[0]
        raise ValueError(f"ratings[{row}, {column}] is {matrix[row, column]}: ICC needs every target "
                         f"rated by every rater; drop incomplete rows first ({len(missing)} missing)")
    return matrix


def _mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-way ANOVA mean squares (rows = targets, columns = raters, residual) over the last two
    axes, so a stack of bootstrap resamples is handled in one call."""
    n, k = y.shape[-2:]
    grand = y.mean(axis=(-2, -1), keepdims=True)
    row_means = y.mean(axis=-1, keepdims=True)
    column_means = y.mean(axis=-2, keepdims=True)
    ss_rows = k * np.sum((row_means - grand) ** 2, axis=(-2, -1))
    ss_columns = n * np.sum((column_means - grand) ** 2, axis=(-2, -1))
    ss_error = np.sum((y - row_means - column_means + grand) ** 2, axis=(-2, -1))
    return ss_rows / (n - 1), ss_columns / (k - 1), ss_error / ((n - 1) * (k - 1))


def _icc_from_mean_squares(msr: Any, msc: Any, mse: Any, n: int, k: int, kind: str) -> Any:
    """McGraw & Wong (1996) Table 4; C = consistency (Shrout-Fleiss ICC(3,.)), A = absolute
    agreement (ICC(2,.)); ",1" a single rater, ",k" the mean of the k raters."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "C,1":
            return (msr - mse) / (msr + (k - 1) * mse)
        if kind == "A,1":
            return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        if kind == "C,k":
            return (msr - mse) / msr
        if kind == "A,k":
            return (msr - mse) / (msr + (msc - mse) / n)
    raise ValueError(f"kind must be one of {list(ICC_KINDS)}, got {kind!r}")


def icc(ratings: Any, kind: ICCKind = "A,1") -> float:
    """Intraclass correlation of an n_targets x k_raters matrix with no missing values."""
    matrix = _ratings_matrix(ratings)
    return float(_icc_from_mean_squares(*_mean_squares(matrix), *matrix.shape, kind))


def _f_interval(msr: float, msc: float, mse: float, n: int, k: int, kind: str,
                level: float) -> tuple[float, float]:
    """McGraw & Wong (1996) Table 7 F-based interval; A,k is A,1's by Spearman-Brown, as pingouin."""
    alpha = 1 - level
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind in ("C,1", "C,k"):
            f_obs = msr / mse
            df_rows, df_error = n - 1, (n - 1) * (k - 1)
            f_low = f_obs / f_dist.ppf(1 - alpha / 2, df_rows, df_error)
            f_high = f_obs * f_dist.ppf(1 - alpha / 2, df_error, df_rows)
            if kind == "C,1":
                return float((f_low - 1) / (f_low + k - 1)), float((f_high - 1) / (f_high + k - 1))
            return float(1 - 1 / f_low), float(1 - 1 / f_high)
        rho = _icc_from_mean_squares(msr, msc, mse, n, k, "A,1")
        f_columns = msc / mse
        # Satterthwaite degrees of freedom of the denominator mean square.
        spread = n * (1 + (k - 1) * rho) - k * rho
        df = ((k - 1) * (n - 1) * (k * rho * f_columns + spread) ** 2
              / ((n - 1) * k**2 * rho**2 * f_columns**2 + spread**2))
        f_upper = f_dist.ppf(1 - alpha / 2, n - 1, df)
        f_lower = f_dist.ppf(1 - alpha / 2, df, n - 1)
        mixed = k * msc + (k * n - k - n) * mse
        low = n * (msr - f_upper * mse) / (f_upper * mixed + n * msr)
        high = n * (f_lower * msr - mse) / (mixed + n * f_lower * msr)
        if kind == "A,k":
            low, high = low * k / (1 + low * (k - 1)), high * k / (1 + high * (k - 1))
        return float(low), float(high)


class ICCEstimate(_Record):
    """An ICC with a percentile bootstrap interval over targets (`low`, `high`) and the
    F-distribution interval of McGraw & Wong (`f_low`, `f_high`). `n_boot_valid` counts the
    resamples where the ICC was defined (a resample of one repeated target has none)."""

    kind: ICCKind
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    f_low: float | None
    f_high: float | None
    level: float
    n_boot: int
    n_boot_valid: int
    seed: int


def _bootstrap_iccs(matrix: np.ndarray, kinds: Sequence[str], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    n, k = matrix.shape
    indices = _resample_indices(n, n_boot, seed)
    per_chunk = max(1, _BOOT_CHUNK_CELLS // (n * k))
    parts: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    for start in range(0, n_boot, per_chunk):
        mean_squares = _mean_squares(matrix[indices[start:start + per_chunk]])
        for kind in kinds:
            parts[kind].append(_icc_from_mean_squares(*mean_squares, n, k, kind))
    return {kind: np.concatenate(values) for kind, values in parts.items()}


def _icc_estimates(ratings: Any, kinds: Sequence[ICCKind], n_boot: int, seed: int,
                   level: float) -> dict[str, ICCEstimate]:
    """Several ICC kinds of one matrix sharing one set of bootstrap resamples."""
    matrix = _ratings_matrix(ratings)
    n, k = matrix.shape
    _check_bootstrap_args(n, n_boot, level, "percentile")
    # numpy scalars, so a zero mean square gives inf/NaN rather than ZeroDivisionError.
    msr, msc, mse = (np.float64(value) for value in _mean_squares(matrix))
    boot = _bootstrap_iccs(matrix, kinds, n_boot, seed)
    alpha = (1 - level) / 2
    estimates = {}
    for kind in kinds:
        valid = boot[kind][np.isfinite(boot[kind])]
        low, high = np.quantile(valid, [alpha, 1 - alpha]) if valid.size else (math.nan, math.nan)
        f_low, f_high = _f_interval(msr, msc, mse, n, k, kind, level)
        estimates[kind] = ICCEstimate(
            kind=kind, n=n, estimate=float(_icc_from_mean_squares(msr, msc, mse, n, k, kind)),
            low=float(low), high=float(high), f_low=f_low, f_high=f_high, level=level,
            n_boot=n_boot, n_boot_valid=int(valid.size), seed=seed)
    return estimates


def icc_ci(ratings: Any, kind: ICCKind = "A,1", n_boot: int = 1000, seed: int = 42,
           level: float = 0.95) -> ICCEstimate:
    """ICC with a percentile bootstrap CI resampling targets (rows), seeded as bootstrap_ci, and
    the F-based CI. Resamples where the ICC is undefined are left out and counted."""
    if kind not in ICC_KINDS:
        raise ValueError(f"kind must be one of {list(ICC_KINDS)}, got {kind!r}")
    return _icc_estimates(ratings, [kind], n_boot, seed, level)[kind]


def reliability_tier(icc_value: float) -> Tier | None:
    """Koo & Li (2016): < 0.5 poor, [0.5, 0.75) moderate, [0.75, 0.9) good, >= 0.9 excellent;
    None for an undefined (NaN or None) ICC."""
    if icc_value is None or math.isnan(icc_value):
        return None
    if icc_value < 0.5:
        return "poor"
    if icc_value < 0.75:
        return "moderate"
    return "good" if icc_value < 0.9 else "excellent"


# ---------------------------------------------------------------- paired scores


def _paired(judge: Any, human: Any, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    judge_scores, human_scores = np.asarray(judge, dtype=float), np.asarray(human, dtype=float)
    if judge_scores.ndim != 1 or judge_scores.shape != human_scores.shape:
        raise ValueError(f"expected two flat score sequences of equal length, got shapes "
                         f"{judge_scores.shape} and {human_scores.shape}")
    if len(judge_scores) < minimum:
        raise ValueError(f"need at least {minimum} paired scores, got {len(judge_scores)}")
    for name, scores in (("judge", judge_scores), ("human", human_scores)):
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] is {scores[bad[0]]}; drop missing scores first")
    return judge_scores, human_scores


def _correlation(method: Any, x: Any, y: Any) -> float:
    x_scores, y_scores = _paired(x, y, minimum=2)
    # Undefined for a constant sequence; scipy would warn and return NaN.
    if np.ptp(x_scores) == 0 or np.ptp(y_scores) == 0:
        return math.nan
    return float(method(x_scores, y_scores)[0])


def pearson(x: Any, y: Any) -> float:
    """Pearson's r (scipy); NaN when either sequence is constant."""
    return _correlation(pearsonr, x, y)


def spearman(x: Any, y: Any) -> float:
    """Spearman's rho with average ranks for ties (scipy); NaN when either sequence is constant."""
    return _correlation(spearmanr, x, y)


def mean_bias(judge: Any, human: Any) -> float:
    """Mean of judge - human: positive when the judge scores higher."""
    judge_scores, human_scores = _paired(judge, human)
    return float(np.mean(judge_scores - human_scores))


def mae(judge: Any, human: Any) -> float:
    """Mean absolute difference between judge and human scores."""
    judge_scores, human_scores = _paired(judge, human)
    return float(np.mean(np.abs(judge_scores - human_scores)))


class BlandAltman(_Record):
    """Bland & Altman (1986) summary of differences judge - human. A plot draws the points
    (mean of the two scores, difference), see bland_altman_points, and three horizontal lines:
    mean_difference, lower_limit and upper_limit = mean_difference -/+ z * sd_difference."""

    n: int
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float
    proportion_inside: float
    z: float


def bland_altman(judge: Any, human: Any, z: float = 1.96) -> BlandAltman:
    """Mean difference, sample SD (ddof=1), limits of agreement and the share of differences
    inside them (limits included)."""
    judge_scores, human_scores = _paired(judge, human, minimum=2)
    differences = judge_scores - human_scores
    mean, sd = float(differences.mean()), float(differences.std(ddof=1))
    low, high = mean - z * sd, mean + z * sd
    inside = float(np.mean((differences >= low) & (differences <= high)))
    return BlandAltman(n=len(differences), mean_difference=mean, sd_difference=sd,
                       lower_limit=low, upper_limit=high, proportion_inside=inside, z=z)


def bland_altman_points(judge: Any, human: Any) -> tuple[np.ndarray, np.ndarray]:
    """(means, differences) of each pair: the x and y of a Bland-Altman plot."""
    judge_scores, human_scores = _paired(judge, human)
    return (judge_scores + human_scores) / 2, judge_scores - human_scores


def _integer_scores(name: str, values: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(values != np.round(values))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {values[bad[0]]}: weighted kappa needs integer "
                         f"scores; round them first")
    return values.astype(np.int64)


def quadratic_weighted_kappa(a: Any, b: Any, labels: Sequence[int] | None = None) -> float:
    """Cohen's kappa with quadratic weights (i - j)^2 on the score values.

    `labels` defaults to every integer from the lowest to the highest score seen, so a score
    nobody used still counts as a step of distance. Equals scikit-learn's
    cohen_kappa_score(a, b, labels=labels, weights="quadratic") for consecutive labels (sklearn
    weighs label positions, not values). NaN when expected disagreement is 0.
    """
    a_float, b_float = _paired(a, b)
    a_scores, b_scores = _integer_scores("a", a_float), _integer_scores("b", b_float)
    if labels is None:
        values = np.arange(min(a_scores.min(), b_scores.min()), max(a_scores.max(), b_scores.max()) + 1)
    else:
        values = _integer_scores("labels", np.asarray(labels, dtype=float))
        if len(set(values.tolist())) != len(values):
            raise ValueError(f"labels must be distinct, got {list(labels)}")
        unknown = sorted((set(a_scores.tolist()) | set(b_scores.tolist())) - set(values.tolist()))
        if unknown:
            raise ValueError(f"scores {unknown} are not in labels {list(labels)}")
    position = {value: index for index, value in enumerate(values.tolist())}
    observed = np.zeros((len(values), len(values)))
    np.add.at(observed, ([position[v] for v in a_scores.tolist()], [position[v] for v in b_scores.tolist()]), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (values[:, None] - values[None, :]).astype(float) ** 2
    expected_disagreement = float(np.sum(weights * expected))
    if expected_disagreement == 0:
        return math.nan
    return 1 - float(np.sum(weights * observed)) / expected_disagreement


# ---------------------------------------------------------------- Krippendorff's alpha


def krippendorff_alpha(reliability_data: Any, level: AlphaLevel = "interval") -> float:
    """Krippendorff's alpha of a raters x units matrix, NaN (or None) where a rater did not rate.

    Krippendorff (2011), "Computing Krippendorff's alpha-reliability": over the n values in units
    with m_u >= 2 values, alpha = 1 - (n - 1) D_within / D_all, where D_within sums the distances
    of the ordered pairs inside each unit divided by m_u - 1 and D_all those of all ordered pairs.
    Distances: 0/1 (nominal), squared difference (interval), and for ordinal the squared
    difference of the values' cumulative midpoint ranks, sum_{g<c} n_g + n_c / 2, which is
    Krippendorff's (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2. Pair sums come from counts and sums of
    squares, never a value x value matrix, so continuous scores cost O(n log n). NaN when no unit
    has two values or every value is the same.
    """
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be 'nominal', 'ordinal' or 'interval', got {level!r}")
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"reliability_data must be a raters x units matrix, got shape {data.shape}")
    if np.isinf(data).any():
        raise ValueError("reliability_data contains infinite values")
    rated = ~np.isnan(data)
    pairable = rated & (rated.sum(axis=0) >= 2)
    units = np.unique(np.nonzero(pairable)[1], return_inverse=True)[1]
    values, value_index, value_counts = np.unique(data[pairable], return_inverse=True, return_counts=True)
    n = len(value_index)
    if len(values) < 2:
        return math.nan
    per_unit = np.bincount(units).astype(float)
    if level == "nominal":
        # Ordered pairs of different values: m^2 minus the pairs of equal values, sum_c n_c^2.
        unit_value, unit_value_counts = np.unique(units * len(values) + value_index, return_counts=True)
        unit_equal = np.bincount(unit_value // len(values), weights=unit_value_counts**2.0)
        within = float(np.sum((per_unit**2 - unit_equal) / (per_unit - 1)))
        total = float(n**2 - np.sum(value_counts**2.0))
        return 1 - (n - 1) * within / total
    scale = values if level == "interval" else np.cumsum(value_counts) - value_counts / 2
    x = scale[value_index]
    # Ordered pairs inside a set of m values with squared distance sum to 2 m * sum (x - mean)^2.
    unit_means = np.bincount(units, weights=x) / per_unit
    unit_squares = np.bincount(units, weights=(x - unit_means[units]) ** 2)
    within = float(np.sum(2 * per_unit * unit_squares / (per_unit - 1)))
    total = 2 * n * float(np.sum((x - x.mean()) ** 2))
    return 1 - (n - 1) * within / total


# ---------------------------------------------------------------- judge vs human report


class ResponseAgreement(_Record):
    """Agreement over individual responses; `icc` keyed by kind; `qwk` on scores rounded half up;
    `tier` from ICC(A,1). Differences are judge - human."""

    n: int
    icc: dict[str, ICCEstimate]
    pearson: float | None
    spearman: float | None
    qwk: float | None
    alpha_interval: float | None
    alpha_ordinal: float | None
    bias: float
    mae: float
    bland_altman: BlandAltman
    tier: Tier | None


class SystemMeans(_Record):
    n: int
    human: float
    judge: float


class SystemAgreement(_Record):
    """Agreement over systems: rows are systems, the two raters their human and judge mean
    scores; `icc` keyed by kind, every kind from one set of bootstrap resamples of systems. `bias` is the mean over systems of judge - human.
    `n_unlabelled` rows scored by both but naming no system are left out here."""

    n_systems: int
    n_unlabelled: int
    icc: dict[str, ICCEstimate]
    spearman: float | None
    bias: float
    means: dict[str, SystemMeans]


class DimensionAgreement(_Record):
    """`n_rows` aligned rows; rows missing the judge's or the human's score are dropped (a row
    missing both counts in both) leaving `n_used`. `system` is None without at least two systems."""

    dimension: str
    n_rows: int
    n_used: int
    n_missing_judge: int
    n_missing_human: int
    response: ResponseAgreement
    system: SystemAgreement | None


class AgreementReport(_Record):
    dimensions: dict[str, DimensionAgreement]
    n_boot: int
    seed: int
    level: float


def _frame(name: str, scores: pd.DataFrame | Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    frame = scores.reset_index(drop=True) if isinstance(scores, pd.DataFrame) else pd.DataFrame(dict(scores))
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise ValueError(f"{name}: duplicated columns {list(duplicated)}")
    return frame


def _align(judge: pd.DataFrame, human: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows matched by `id_column` when both sides have it (an id on one side only is a row
    missing the other side's scores), else by position."""
    if id_column in judge.columns and id_column in human.columns:
        for name, frame in (("judge", judge), ("human", human)):
            repeated = frame[id_column][frame[id_column].duplicated()]
            if len(repeated):
                raise ValueError(f"{name}: {id_column} {repeated.iloc[0]!r} occurs more than once")
        ids = pd.Index(pd.concat([human[id_column], judge[id_column]]).drop_duplicates())
        return (judge.set_index(id_column).reindex(ids).reset_index(),
                human.set_index(id_column).reindex(ids).reset_index())
    if len(judge) != len(human):
        raise ValueError(f"judge has {len(judge)} rows and human {len(human)}; give both an "
                         f"{id_column!r} column or align the rows")
    return judge, human


def _numeric(name: str, frame: pd.DataFrame, dimension: str) -> np.ndarray:
    if dimension not in frame.columns:
        raise ValueError(f"{name} has no column {dimension!r}; columns: {list(frame.columns)}")
    try:
        return pd.to_numeric(frame[dimension]).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}[{dimension!r}]: scores must be numbers ({error})") from None


def _system_labels(judge: pd.DataFrame, human: pd.DataFrame, system_column: str) -> np.ndarray | None:
    columns = [frame[system_column] for frame in (human, judge) if system_column in frame.columns]
    if not columns:
        return None
    if len(columns) == 2:
        clash = columns[0].notna() & columns[1].notna() & (columns[0].astype(str) != columns[1].astype(str))
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            raise ValueError(f"row {row}: human says system {columns[0].iloc[row]!r}, "
                             f"judge says {columns[1].iloc[row]!r}")
    # After id alignment a row may carry its system on one side only.
    labels = columns[0].combine_first(columns[-1])
    return np.asarray([None if pd.isna(label) else str(label) for label in labels], dtype=object)


def _response_agreement(judge: np.ndarray, human: np.ndarray, n_boot: int, seed: int,
                        level: float) -> ResponseAgreement:
    icc_values = _icc_estimates(np.column_stack([human, judge]), ICC_KINDS, n_boot, seed, level)
    reliability = np.vstack([human, judge])
    return ResponseAgreement(
        n=len(judge), icc=icc_values, pearson=pearson(judge, human), spearman=spearman(judge, human),
        qwk=quadratic_weighted_kappa(np.floor(judge + 0.5), np.floor(human + 0.5)),
        alpha_interval=krippendorff_alpha(reliability, "interval"),
        alpha_ordinal=krippendorff_alpha(reliability, "ordinal"),
        bias=mean_bias(judge, human), mae=mae(judge, human), bland_altman=bland_altman(judge, human),
        tier=reliability_tier(icc_values["A,1"].estimate))


def _system_agreement(judge: np.ndarray, human: np.ndarray, systems: np.ndarray, n_boot: int,
                      seed: int, level: float) -> SystemAgreement | None:
    known = np.array([system is not None for system in systems])
    names = sorted(set(systems[known]))
    if len(names) < 2:
        return None
    means = {}
    for name in names:
        rows = systems == name
        means[name] = SystemMeans(n=int(rows.sum()), human=float(human[rows].mean()),
                                  judge=float(judge[rows].mean()))
    human_means = np.array([means[name].human for name in names])
    judge_means = np.array([means[name].judge for name in names])
    return SystemAgreement(
        n_systems=len(names), n_unlabelled=int((~known).sum()),
        icc=_icc_estimates(np.column_stack([human_means, judge_means]), ICC_KINDS, n_boot, seed, level),
        spearman=spearman(judge_means, human_means), bias=mean_bias(judge_means, human_means), means=means)


def agreement_report(judge: pd.DataFrame | Mapping[str, Sequence[Any]],
                     human: pd.DataFrame | Mapping[str, Sequence[Any]], dimensions: Sequence[str],
                     systems: Sequence[Any] | None = None, *, id_column: str = "id",
                     system_column: str = "system", n_boot: int = 1000, seed: int = 42,
                     level: float = 0.95) -> AgreementReport:
    """Judge-versus-human agreement per dimension, over responses and over systems.

    `judge` and `human` hold one row per response and a column of scores per dimension; rows are
    matched by `id_column` when both have it, else by position. The generator of each response
    comes from `systems` (aligned with `human`'s rows) or a `system_column`; without it there is
    no system-level analysis. Missing scores are dropped per dimension and counted.
    """
    human_frame = _frame("human", human)
    if systems is not None:
        if len(systems) != len(human_frame):
            raise ValueError(f"systems has {len(systems)} entries for {len(human_frame)} human rows")
        human_frame = human_frame.assign(**{system_column: list(systems)})
    judge_frame, human_frame = _align(_frame("judge", judge), human_frame, id_column)
    system_labels = _system_labels(judge_frame, human_frame, system_column)
    report = {}
    for dimension in dimensions:
        judge_scores = _numeric("judge", judge_frame, dimension)
        human_scores = _numeric("human", human_frame, dimension)
        judge_missing, human_missing = np.isnan(judge_scores), np.isnan(human_scores)
        used = ~(judge_missing | human_missing)
        if used.sum() < 2:
            raise ValueError(f"dimension {dimension!r}: only {int(used.sum())} rows have both a judge "
                             f"and a human score; agreement needs at least 2 (do the ids match?)")
        judge_used, human_used = judge_scores[used], human_scores[used]
        report[dimension] = DimensionAgreement(
            dimension=dimension, n_rows=len(used), n_used=int(used.sum()),
            n_missing_judge=int(judge_missing.sum()), n_missing_human=int(human_missing.sum()),
            response=_response_agreement(judge_used, human_used, n_boot, seed, level),
            system=None if system_labels is None else _system_agreement(
                judge_used, human_used, system_labels[used], n_boot, seed, level))
    return AgreementReport(dimensions=report, n_boot=n_boot, seed=seed, level=level)

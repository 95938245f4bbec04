"""Calibration: a monotone map per dimension from a judge's scores to human scores.

LLM judges inflate affective dimensions (empathy, helpfulness); a monotone map keeps the judge's
ranking of responses and removes its level shift and compression. Three maps:

- isotonic: E[human | judge] under monotonicity; removes bias but pulls scores toward the mean,
  which shrinks their variance and with it absolute agreement (ICC(A,1));
- quantile (equipercentile): a judge score goes to the human score at the same (mid-)percentile,
  so the calibrated scores take the humans' distribution;
- linear: matches the humans' mean and standard deviation.

`auto` picks one per dimension by grouped cross-validation on the fitting data only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from theraloop.io import InputError, write_json
from theraloop.judge._types import Judgment

MapMethod = Literal["isotonic", "quantile", "linear"]
MAP_METHODS: tuple[str, ...] = ("isotonic", "quantile", "linear")
CALIBRATION_METHODS: tuple[str, ...] = (*MAP_METHODS, "auto")


class MonotoneMap(BaseModel):
    """Piecewise-linear, non-decreasing map through (x, y) knots; flat beyond the ends."""

    x: list[float]
    y: list[float]
    n: int
    method: MapMethod = "isotonic"

    def __call__(self, values: np.ndarray | float) -> np.ndarray:
        return np.interp(values, self.x, self.y)


def mid_percentile(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of `values` below each point plus half the share equal to it (scipy's
    percentileofscore(kind="mean") / 100): the percentile rank of a tied, discrete score."""
    ordered = np.sort(values)
    below = np.searchsorted(ordered, points, side="left")
    at_or_below = np.searchsorted(ordered, points, side="right")
    return (below + at_or_below) / (2 * len(ordered))


def fit_map(x: np.ndarray, y: np.ndarray, method: str) -> MonotoneMap:
    """The map of `method` from paired judge scores x to human scores y (no missing values).

    quantile and linear place a knot at every distinct judge score, so they are exact on the scores
    seen and interpolate between them; linear is clipped to the range of the human scores.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)
        return MonotoneMap(x=model.X_thresholds_.tolist(), y=model.y_thresholds_.tolist(), n=len(x))
    knots = np.unique(x)
    if method == "quantile":
        # Both sides by mid-percentile rank, interpolated between the human scores' ranks: on tied, discrete
        # scores np.quantile's order statistics land on whole levels and left much of the bias in place.
        human_levels = np.unique(y)
        values = np.interp(mid_percentile(x, knots), mid_percentile(y, human_levels), human_levels)
    elif method == "linear":
        spread = x.std()
        slope = y.std() / spread if spread > 0 else 0.0
        values = np.clip(y.mean() + slope * (knots - x.mean()), y.min(), y.max())
    else:
        raise ValueError(f"unknown calibration method {method!r}: use {', '.join(MAP_METHODS)}")
    return MonotoneMap(x=knots.tolist(), y=values.tolist(), n=len(x), method=method)


def choose_method(x: np.ndarray, y: np.ndarray, groups: Sequence[Any] | None = None, folds: int = 5,
                  seed: int = 0) -> tuple[str, dict[str, float]]:
    """The map with the highest out-of-fold ICC(A,1) (absolute agreement, so bias and lost variance both
    count), over `folds` folds of whole groups (e.g. conversations), and every method's ICC(A,1)."""
    from theraloop.stats._agreement import icc

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.asarray(groups if groups is not None else np.arange(len(x)), dtype=object)
    names = np.array(sorted(set(labels.tolist()), key=str), dtype=object)
    fold_of_group = dict(zip(names, np.random.default_rng(seed).permutation(len(names)) % folds, strict=True))
    fold = np.array([fold_of_group[label] for label in labels])
    scores = {}
    for method in MAP_METHODS:
        predicted = np.empty_like(x)
        for k in range(folds):
            held = fold == k
            if held.any():
                predicted[held] = fit_map(x[~held], y[~held], method)(x[held])
        scores[method] = icc(np.column_stack([y, predicted]), "A,1")
    # NaN (a constant prediction) never wins; ties go to the earlier method.
    best = max(MAP_METHODS, key=lambda method: -np.inf if np.isnan(scores[method]) else scores[method])
    return best, scores


class Calibration(BaseModel):
    judge: str | None = None
    maps: dict[str, MonotoneMap]
    selection: dict[str, dict[str, float]] | None = None  # auto: out-of-fold ICC(A,1) per dimension and method

    @classmethod
    def fit(cls, judge_scores: Mapping[str, Sequence[float]], human_scores: Mapping[str, Sequence[float]],
            judge: str | None = None, min_pairs: int = 10, method: str = "isotonic",
            groups: Mapping[str, Sequence[Any]] | None = None, seed: int = 0) -> Calibration:
        """One map per dimension scored by both. method "auto" chooses per dimension (choose_method),
        with folds of `groups[dimension]` (aligned with the scores) when given."""
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {method!r}: use {', '.join(CALIBRATION_METHODS)}")
        maps, selection = {}, {}
        for key, predicted in judge_scores.items():
            if key not in human_scores:
                continue
            x, y = np.asarray(predicted, dtype=float), np.asarray(human_scores[key], dtype=float)
            if x.shape != y.shape:
                raise ValueError(f"dimension '{key}': {len(x)} judge scores but {len(y)} human scores")
            keep = ~(np.isnan(x) | np.isnan(y))
            x, y = x[keep], y[keep]
            if len(x) < min_pairs:
                raise ValueError(f"dimension '{key}': {len(x)} paired scores, need at least {min_pairs}")
            chosen = method
            if method == "auto":
                labels = None if groups is None else np.asarray(groups[key], dtype=object)[keep]
                chosen, selection[key] = choose_method(x, y, labels, seed=seed)
            maps[key] = fit_map(x, y, chosen)
        if not maps:
            raise ValueError("no dimension has both judge and human scores")
        return cls(judge=judge, maps=maps, selection=selection or None)

    @classmethod
    def fit_judgments(cls, judgments: Sequence[Judgment], human: Mapping[str, Mapping[str, float]],
                      min_pairs: int = 10, method: str = "isotonic") -> Calibration:
        """Fit from judgments and human scores keyed by item id; parse failures are left out."""
        judge_scores: dict[str, list[float]] = {}
        human_scores: dict[str, list[float]] = {}
        for judgment in judgments:
            if not judgment.parse_ok or not judgment.scores or judgment.id not in human:
                continue
            for key, value in judgment.scores.items():
                if key in human[judgment.id]:
                    judge_scores.setdefault(key, []).append(value)
                    human_scores.setdefault(key, []).append(human[judgment.id][key])
        names = {judgment.judge for judgment in judgments}
        return cls.fit(judge_scores, human_scores, judge=names.pop() if len(names) == 1 else None,
                       min_pairs=min_pairs, method=method)

    def apply(self, scores: Mapping[str, float]) -> dict[str, float]:
        return {key: float(self.maps[key](value)) if key in self.maps else value for key, value in scores.items()}

    def apply_all(self, judgments: Sequence[Judgment]) -> list[Judgment]:
        return [judgment.model_copy(update={"scores": self.apply(judgment.scores), "calibrated": True})
                if judgment.scores else judgment for judgment in judgments]

    def save(self, path: str | Path) -> None:
        write_json(path, self.model_dump())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: calibration file not found")
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{path}: not a calibration file: {exc}") from None

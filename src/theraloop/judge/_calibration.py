"""Isotonic calibration: a monotone map per dimension from a judge's scores to human scores.

LLM judges inflate affective dimensions (empathy, helpfulness); a monotone map keeps the judge's
ranking of responses and removes its level shift and compression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.isotonic import IsotonicRegression

from theraloop.io import InputError, write_json
from theraloop.judge._types import Judgment


class MonotoneMap(BaseModel):
    """Piecewise-linear, non-decreasing map through (x, y) knots; flat beyond the ends."""

    x: list[float]
    y: list[float]
    n: int

    def __call__(self, values: np.ndarray | float) -> np.ndarray:
        return np.interp(values, self.x, self.y)


class Calibration(BaseModel):
    judge: str | None = None
    maps: dict[str, MonotoneMap]

    @classmethod
    def fit(cls, judge_scores: Mapping[str, Sequence[float]], human_scores: Mapping[str, Sequence[float]],
            judge: str | None = None, min_pairs: int = 10) -> Calibration:
        maps = {}
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
            model = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y)
            maps[key] = MonotoneMap(x=model.X_thresholds_.tolist(), y=model.y_thresholds_.tolist(), n=len(x))
        if not maps:
            raise ValueError("no dimension has both judge and human scores")
        return cls(judge=judge, maps=maps)

    @classmethod
    def fit_judgments(cls, judgments: Sequence[Judgment], human: Mapping[str, Mapping[str, float]],
                      min_pairs: int = 10) -> Calibration:
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
                       min_pairs=min_pairs)

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

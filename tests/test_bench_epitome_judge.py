"""Helpers of bench/epitome_judge.py that its results rest on, checked on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("bench_epitome_judge",
                                               Path(__file__).resolve().parents[1] / "bench" / "epitome_judge.py")
bench_epitome_judge = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_epitome_judge)
MECHANISMS = bench_epitome_judge.MECHANISMS


def _items(levels: list[int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(human_scores=dict.fromkeys(MECHANISMS, level)) for level in levels]


def _predictions(levels: list[int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(levels=dict.fromkeys(MECHANISMS, level)) for level in levels]


def test_int8_agreement_is_the_macro_f1_difference_and_the_share_of_equal_levels():
    truth = [0, 0, 1, 2]
    # torch is right everywhere (macro-F1 1). int8 calls the level-1 response 0: level 0 F1 = 2*(2/3)*1/(2/3+1) = 0.8,
    # level 1 F1 = 0, level 2 F1 = 1, so macro-F1 = 0.6 and the difference is -0.4; 1 of 4 levels differs.
    result = bench_epitome_judge.int8_agreement(_predictions(truth), _predictions([0, 0, 0, 2]), _items(truth))
    for key in MECHANISMS:
        entry = result["macro_f1_minus_torch_per_mechanism"][key]
        assert entry["estimate"] == pytest.approx(-0.4)
        assert entry["levels_flipped"] == 1
        low, high = entry["ci95"]
        assert low <= -0.4 <= high <= 0.0
    assert result["macro_f1_minus_torch"] == pytest.approx(-0.4)
    assert result["max_abs_macro_f1_delta_per_mechanism"] == pytest.approx(0.4)
    assert result["levels_equal_to_torch"] == pytest.approx(0.75)


def test_int8_agreement_of_identical_levels_is_zero():
    truth = [0, 1, 2, 1, 0]
    result = bench_epitome_judge.int8_agreement(_predictions([0, 1, 1, 1, 0]), _predictions([0, 1, 1, 1, 0]), _items(truth))
    assert result["macro_f1_minus_torch"] == 0.0
    assert all(entry["ci95"] == [0.0, 0.0] for entry in result["macro_f1_minus_torch_per_mechanism"].values())
    assert result["levels_equal_to_torch"] == 1.0


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for size in (1, 5, 40, 300):
        truth, guess = rng.integers(0, 3, size), rng.integers(0, 3, size)
        guess[: size // 2] = truth[: size // 2]
        assert bench_epitome_judge.macro_f1(truth, guess) == pytest.approx(
            f1_score(truth, guess, average="macro", zero_division=0))
    # A level nobody has nor predicts is left out, as sklearn leaves it out.
    assert bench_epitome_judge.macro_f1(np.array([0, 0, 2]), np.array([0, 2, 2])) == pytest.approx(
        f1_score([0, 0, 2], [0, 2, 2], average="macro", zero_division=0))

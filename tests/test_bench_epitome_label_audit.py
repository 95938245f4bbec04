"""Helpers of bench/epitome_label_audit.py, checked on hand-computed cases and against scipy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import chi2_contingency

_BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(_BENCH))  # the benchmark imports its siblings
_SPEC = importlib.util.spec_from_file_location("bench_epitome_label_audit", _BENCH / "epitome_label_audit.py")
audit = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(audit)


def test_position_parts_cut_rows_in_file_order_into_near_equal_parts():
    assert audit.position_parts(20, parts=10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    assert audit.position_parts(7, parts=3).tolist() == [0, 0, 0, 1, 1, 2, 2]  # 3 * index // 7


def test_time_parts_order_responses_by_their_base_36_reddit_ids():
    # int("z", 36) = 35 < int("10", 36) = 36 < int("a0", 36) = 360 < int("a1", 36): "z" and "10" came first.
    assert audit.time_parts(["a0", "z", "10", "a1"], parts=2).tolist() == [1, 0, 0, 1]


def test_level_table_counts_levels_by_part_and_chi_square_leaves_unseen_levels_out():
    levels = [0, 0, 2, 2, 0, 2]
    parts = np.array([0, 0, 0, 1, 1, 1])
    table = audit.level_table(levels, parts, n_parts=2)
    assert table.tolist() == [[2, 1], [0, 0], [1, 2]]
    # Expected counts 1.5 everywhere on the 2x2 of levels 0 and 2: chi-square = 4 x 0.5^2 / 1.5 = 2/3, 1 dof.
    result = audit.chi_square(table)
    assert result["chi_square"] == pytest.approx(0.67, abs=0.005) and result["dof"] == 1
    assert result["p_value"] == pytest.approx(chi2_contingency([[2, 1], [1, 2]], correction=False)[1])


def test_likelihood_ratio_test_over_an_intercept_alone_is_the_g_test_of_the_table():
    # With no base covariate, the indicators of the parts fit each part's rate exactly, so the likelihood
    # ratio equals the G-test (log-likelihood chi-square) of the outcome x part table.
    rng = np.random.default_rng(0)
    parts = np.repeat(np.arange(4), 50)
    outcome = (rng.random(200) < np.array([0.1, 0.3, 0.2, 0.5])[parts]).astype(float)
    result = audit.likelihood_ratio_test(outcome, np.empty((200, 0)), audit.indicators(parts, n_parts=4))
    table = [[int(((parts == part) & (outcome == value)).sum()) for part in range(4)] for value in (0, 1)]
    g_statistic, g_p, g_dof, _ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert result["dof"] == g_dof == 3
    assert result["likelihood_ratio"] == pytest.approx(g_statistic, abs=0.01)
    assert result["p_value"] == pytest.approx(g_p, rel=1e-3)


def test_parts_add_nothing_when_the_judge_already_reads_the_part_effect():
    # The outcome's rate depends on the part only through the judge's probability: the indicators explain
    # nothing more (a large p); with a judge blind to the parts the same outcome shows the part effect (a tiny p).
    rng = np.random.default_rng(1)
    parts = np.repeat(np.arange(10), 300)
    probability = np.array([0.02, 0.02, 0.08, 0.07, 0.06, 0.03, 0.02, 0.01, 0.02, 0.06])[parts]
    outcome = rng.random(parts.size) < probability
    levels = np.where(outcome, 1, rng.choice([0, 2], size=parts.size))  # the other levels at random

    def judge(level_1: np.ndarray) -> np.ndarray:
        return np.column_stack([(1 - level_1) / 2, level_1, (1 - level_1) / 2])

    informed = audit.position_beyond_text(levels, judge(probability), parts)["1"]
    uninformed = audit.position_beyond_text(levels, judge(rng.uniform(0.03, 0.05, parts.size)), parts)["1"]
    assert informed["p_value"] > 0.05 and uninformed["p_value"] < 1e-4
    assert informed["judge_mean_probability_by_part"][2] == pytest.approx(0.08)


def test_repeated_annotations_compare_the_second_annotation_and_the_judge_with_the_first():
    mechanism = "interpretations"
    items = [SimpleNamespace(id="a", human_scores={mechanism: 1}, meta={"other_annotations": [{mechanism: 0}]}),
             SimpleNamespace(id="b", human_scores={mechanism: 2}, meta={"other_annotations": [{mechanism: 2}]}),
             SimpleNamespace(id="c", human_scores={mechanism: 0}, meta={"other_annotations": [{mechanism: 0}]}),
             SimpleNamespace(id="d", human_scores={mechanism: 0}, meta={})]
    oof = {"a": {"levels": {mechanism: 0}}, "b": {"levels": {mechanism: 2}}, "c": {"levels": {mechanism: 2}},
           "d": {"levels": {mechanism: 1}}}
    result = audit.repeated_annotations(items, oof, mechanism)
    assert result["pairs"] == 3 and result["first_at_level_1"] == 1 and result["level_1_repeated"] == 0
    assert result["annotations"]["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]  # rows: the first annotation
    # Second against first: level 0 F1 = 2*1/(1+2) = 2/3, level 1 F1 0, level 2 F1 1; macro (2/3 + 0 + 1) / 3.
    assert result["annotations"]["exact"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["annotations"]["macro_f1"] == pytest.approx(5 / 9, abs=1e-4)
    # The judge (0, 2, 2) against the second (0, 2, 0): right twice.
    assert result["judge_with_second"]["exact"] == pytest.approx(2 / 3, abs=1e-4)

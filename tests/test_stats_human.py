"""Human-study statistics against statsmodels / scikit-learn and hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from theraloop.stats._human import (
    accuracy_by_consensus,
    cohen_kappa,
    cohen_kappa_non_tie,
    confusion_matrix,
    consensus_strength,
    exact_agreement,
    fleiss_kappa,
    gwet_ac1,
    gwet_ac1_non_tie,
    human_study_report,
    leave_one_rater_out,
    majority_label,
    non_tie_subset,
    pairwise_agreement,
)

CLASSES = ("A", "B", "tie")

# A small clinician study: r3 is missing on q3 and q5, r1 and r3 on q5; q3 has no majority.
STUDY = {
    "q1": {"r1": "A", "r2": "A", "r3": "A"},  # unanimous A
    "q2": {"r1": "A", "r2": "B", "r3": "A"},  # majority A
    "q3": {"r1": "B", "r2": "tie"},  # 1-1: no majority
    "q4": {"r1": "tie", "r2": "B", "r3": "B"},  # majority B
    "q5": {"r2": "A"},  # single rater
}
JUDGE = {"q1": "A", "q2": "B", "q3": "B", "q4": "B", "q5": "tie"}


def random_study(seed: int, n_items: int, n_raters: int) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(CLASSES, size=n_items, p=[0.45, 0.35, 0.2])
    return {f"q{i}": {f"r{j}": str(truth[i] if rng.random() < 0.6 else rng.choice(CLASSES)) for j in range(n_raters)}
            for i in range(n_items)}


def test_majority_label_and_consensus() -> None:
    assert majority_label(["A", "B", "A"]) == "A"
    assert majority_label(["A", "B", "tie", "B"]) == "B"  # plurality suffices
    assert majority_label(["A", "B"]) is None
    assert majority_label(["A", "A", "B", "B", "tie"]) is None
    assert majority_label([]) is None
    assert [consensus_strength(labels) for labels in (["A", "A"], ["A", "B", "A"], ["tie"], ["A", "B"])] == [
        "unanimous", "majority", "single_rater", "no_majority"]


def test_fleiss_kappa_matches_statsmodels_with_equal_raters() -> None:
    for seed, n_items, n_raters in ((0, 30, 4), (1, 12, 3), (2, 50, 6)):
        study = random_study(seed, n_items, n_raters)
        codes = np.array([[CLASSES.index(label) for label in ratings.values()] for ratings in study.values()])
        table, _ = aggregate_raters(codes, n_cat=3)
        assert fleiss_kappa(study, CLASSES) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-6)


def test_fleiss_kappa_unequal_raters_by_hand() -> None:
    study = {
        "i1": {"x": "A", "y": "A", "z": "B"},
        "i2": {"x": "A", "y": "B"},
        "i3": {"y": "tie", "z": "tie"},
        "i4": {"z": "B"},
    }
    # p_a over items with >= 2 ratings: i1 (2*1)/(3*2) = 1/3, i2 0/2 = 0, i3 (2*1)/(2*1) = 1 -> 4/9
    # pi over all four items: A (2/3 + 1/2)/4 = 7/24, B (1/3 + 1/2 + 1)/4 = 11/24, tie 1/4 = 6/24
    # p_e = (49 + 121 + 36)/576 = 103/288; kappa = (128/288 - 103/288)/(185/288) = 25/185 = 5/37
    assert fleiss_kappa(study, CLASSES) == pytest.approx(5 / 37, abs=1e-12)


def test_fleiss_kappa_degenerate_and_invalid() -> None:
    assert math.isnan(fleiss_kappa({"i1": {"x": "A", "y": "A"}, "i2": {"x": "A", "y": "A"}}))  # p_e = 1
    assert math.isnan(fleiss_kappa({"i1": {"x": "A"}, "i2": {"y": "B"}}))  # nobody shares an item
    with pytest.raises(ValueError, match=r"item 'i2', rater 'y': label 'b'"):
        fleiss_kappa({"i1": {"x": "A", "y": "A"}, "i2": {"x": "A", "y": "b"}})


def test_cohen_kappa_and_confusion_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    a = list(rng.choice(CLASSES, size=80, p=[0.5, 0.3, 0.2]))
    b = [label if rng.random() < 0.55 else str(rng.choice(CLASSES)) for label in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-6)
    assert cohen_kappa(a, b, labels=CLASSES) == pytest.approx(cohen_kappa_score(a, b, labels=list(CLASSES)), abs=1e-6)
    assert confusion_matrix(a, b, CLASSES) == sk_confusion_matrix(a, b, labels=list(CLASSES)).tolist()
    # Hand case: a = A A B B, b = A B B B -> p_o = 3/4, p_e = (2*1 + 2*3)/16 = 1/2, kappa = 1/2
    assert cohen_kappa(["A", "A", "B", "B"], ["A", "B", "B", "B"]) == pytest.approx(0.5)
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError, match="3 and 2 labels"):
        cohen_kappa(["A", "B", "A"], ["A", "B"])
    with pytest.raises(ValueError, match=r"b\[1\]: label 'draw'"):
        cohen_kappa(["A", "B"], ["A", "draw"], labels=CLASSES)


def test_gwet_ac1_by_hand_and_under_skewed_marginals() -> None:
    # a = A A B tie, b = A B B tie: p_a = 3/4; pi_A = 3/8, pi_B = 3/8, pi_tie = 2/8
    # p_e = (15/64 + 15/64 + 12/64)/(3 - 1) = 21/64; AC1 = (48/64 - 21/64)/(43/64) = 27/43
    assert gwet_ac1(["A", "A", "B", "tie"], ["A", "B", "B", "tie"], CLASSES) == pytest.approx(27 / 43, abs=1e-12)

    # Kappa paradox (Feinstein & Cicchetti 1990; Gwet 2008): 118 both A, 5 A/B, 2 B/A, 0 both B.
    a = ["A"] * 118 + ["A"] * 5 + ["B"] * 2
    b = ["A"] * 118 + ["B"] * 5 + ["A"] * 2
    # p_a = 118/125 = 0.944; pi_A = (123 + 120)/250 = 0.972; p_e = 2 * 0.972 * 0.028 / 1 = 0.054432
    # AC1 = (0.944 - 0.054432)/(1 - 0.054432) = 27799/29549 = 0.94078
    # kappa: p_e = 0.984 * 0.96 + 0.016 * 0.04 = 0.94528 -> (0.944 - 0.94528)/0.05472 = -4/171
    assert gwet_ac1(a, b, ("A", "B")) == pytest.approx(27799 / 29549, abs=1e-12)
    assert cohen_kappa(a, b) == pytest.approx(-4 / 171, abs=1e-12)
    assert cohen_kappa_score(a, b) == pytest.approx(-4 / 171, abs=1e-6)
    assert math.isnan(gwet_ac1([], [], CLASSES))
    with pytest.raises(ValueError, match="label 'C'"):
        gwet_ac1(["A"], ["C"], CLASSES)


def test_non_tie_subset_helpers() -> None:
    a = ["A", "tie", "B", "A", "B", "tie", "A"]
    b = ["A", "A", "B", "tie", "A", "tie", "B"]
    assert non_tie_subset(a, b) == (["A", "B", "B", "A"], ["A", "B", "A", "B"])
    kept_a, kept_b = non_tie_subset(a, b)
    assert cohen_kappa_non_tie(a, b) == pytest.approx(cohen_kappa_score(kept_a, kept_b), abs=1e-6)
    # Non-tie subset p_a = 2/4, pi_A = pi_B = 1/2, p_e = 2 * 1/4 / (2 - 1) = 1/2 -> AC1 = 0
    assert gwet_ac1_non_tie(a, b) == pytest.approx(0.0, abs=1e-12)
    # All ties: nothing left to compare.
    assert math.isnan(cohen_kappa_non_tie(["tie"] * 3, ["tie"] * 3))
    assert math.isnan(gwet_ac1_non_tie(["tie"] * 3, ["tie"] * 3))
    with pytest.raises(ValueError, match="label 'x'"):
        cohen_kappa_non_tie(["A", "x"], ["A", "B"])


def test_pairwise_agreement_by_hand() -> None:
    pairs = {pair.raters: pair for pair in pairwise_agreement(STUDY, CLASSES)}
    # r1-r2 share q1..q4: matches q1 only -> 1/4; non-tie items q1 (A, A), q2 (A, B):
    #   kappa p_o = 1/2, p_e = 1 * 1/2 = 1/2 -> 0; AC1 pi_A = 3/4, p_e = 2 * 3/16 = 3/8 -> (1/2 - 3/8)/(5/8) = 1/5
    assert pairs[("r1", "r2")].model_dump() == {
        "raters": ("r1", "r2"), "n_shared": 4, "n_non_tie": 2, "exact_agreement": 0.25,
        "cohen_kappa_non_tie": pytest.approx(0.0), "gwet_ac1_non_tie": pytest.approx(0.2)}
    # r1-r3 non-tie items q1, q2 both A/A: kappa undefined (p_e = 1); AC1 p_e = 0 -> 1
    assert pairs[("r1", "r3")].cohen_kappa_non_tie is None
    assert pairs[("r1", "r3")].gwet_ac1_non_tie == pytest.approx(1.0)
    # r2-r3 non-tie: a = A B B, b = A A B: p_o = 2/3, p_e = 2/9 + 2/9 -> kappa 2/5; AC1 p_e = 1/2 -> 1/3
    assert pairs[("r2", "r3")].cohen_kappa_non_tie == pytest.approx(0.4)
    assert pairs[("r2", "r3")].gwet_ac1_non_tie == pytest.approx(1 / 3)
    assert pairs[("r2", "r3")].exact_agreement == pytest.approx(2 / 3)


def test_leave_one_rater_out_by_hand() -> None:
    result = leave_one_rater_out(STUDY, CLASSES)
    per_rater = {row.rater: row for row in result.per_rater}
    # r1: q1 rest A (hit), q2 rest A/B (skip), q3 rest tie (miss), q4 rest B (miss) -> 1/3, 1 skipped
    # r2: q1 hit, q2 rest A (miss), q3 rest B (miss), q4 rest tie/B (skip), q5 nobody else (skip) -> 1/3
    # r3: q1 hit, q2 rest A/B (skip), q4 rest tie/B (skip) -> 1/1
    assert [(row.n_compared, row.n_skipped) for row in per_rater.values()] == [(3, 1), (3, 2), (1, 2)]
    assert [row.agreement for row in per_rater.values()] == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert result.mean == pytest.approx(5 / 9) and result.n_skipped == 5


def test_exact_agreement_by_hand() -> None:
    result = exact_agreement(STUDY, JUDGE, CLASSES)
    # human-human: r1-r2 1/4, r1-r3 2/3, r2-r3 2/3 -> 19/36
    assert result.human_human == pytest.approx(19 / 36) and result.n_rater_pairs == 3
    # human-judge: r1 2/4 (q1, q3), r2 3/5 (q1, q2, q4), r3 2/3 (q1, q4) -> 53/90
    assert result.human_judge == pytest.approx(53 / 90) and result.n_raters_with_judge == 3
    # judge-majority: q1 A=A, q2 A!=B, q4 B=B, q5 A!=tie (q3 has no majority) -> 2/4
    assert result.judge_majority == pytest.approx(0.5) and result.n_items_judge_majority == 4
    without_judge = exact_agreement(STUDY, None, CLASSES)
    assert without_judge.human_judge is None and without_judge.judge_majority is None
    with pytest.raises(ValueError, match="judge, item 'q2'"):
        exact_agreement(STUDY, {"q2": "C"}, CLASSES)
    with pytest.raises(ValueError, match="item ids match"):
        exact_agreement(STUDY, {1: "A"}, CLASSES)


def test_accuracy_by_consensus_by_hand() -> None:
    judge_missing_q4 = {key: value for key, value in JUDGE.items() if key != "q4"}
    result = accuracy_by_consensus(STUDY, judge_missing_q4, CLASSES)
    # unanimous q1 correct; majority q2 wrong, q4 not judged; single q5 wrong; q3 has no majority
    assert (result.unanimous.n_items, result.unanimous.correct, result.unanimous.accuracy) == (1, 1, 1.0)
    assert (result.majority.n_items, result.majority.n_judged, result.majority.accuracy) == (2, 1, 0.0)
    assert (result.single_rater.n_items, result.single_rater.accuracy) == (1, 0.0)
    assert (result.overall.n_items, result.overall.n_judged, result.overall.correct) == (4, 3, 1)
    assert result.n_no_majority == 1


def test_human_study_report_is_complete_and_json_ready() -> None:
    report = human_study_report(STUDY, JUDGE)
    json.dumps(report, allow_nan=False)
    assert (report["n_items"], report["n_raters"], report["n_ratings"]) == (5, 3, 12)
    assert report["majority"] == {"labels": {"q1": "A", "q2": "A", "q3": None, "q4": "B", "q5": "A"},
                                  "n_no_majority": 1}
    assert report["fleiss_kappa"] == pytest.approx(fleiss_kappa(STUDY, CLASSES))
    pairwise = report["non_tie_pairwise"]
    # kappa mean over defined pairs (0 + 2/5)/2; AC1 mean (1/5 + 1 + 1/3)/3 = 23/45
    assert pairwise["cohen_kappa_mean"] == pytest.approx(0.2) and pairwise["n_pairs_kappa_defined"] == 2
    assert pairwise["gwet_ac1_mean"] == pytest.approx(23 / 45) and pairwise["n_pairs_ac1_defined"] == 3
    assert pairwise["pairs"][0]["raters"] == ["r1", "r2"]
    assert report["leave_one_rater_out"]["mean"] == pytest.approx(5 / 9)
    assert report["exact_agreement"]["human_judge"] == pytest.approx(53 / 90)
    # rows majority, columns judge: q1 (A, A), q2 (A, B), q5 (A, tie), q4 (B, B)
    assert report["judge_vs_majority_confusion"]["matrix"] == [[1, 1, 1], [0, 1, 0], [0, 0, 0]]
    assert report["accuracy_by_consensus"]["overall"]["accuracy"] == pytest.approx(0.5)


def test_human_study_report_edge_cases() -> None:
    # Integer ids, no judge, every rating a tie: kappas undefined -> None, still valid JSON.
    report = human_study_report({1: {7: "tie", 8: "tie"}, 2: {7: "tie", 8: "tie"}})
    json.dumps(report, allow_nan=False)
    assert report["majority"]["labels"] == {"1": "tie", "2": "tie"}
    assert report["fleiss_kappa"] is None
    assert report["non_tie_pairwise"]["cohen_kappa_mean"] is None
    assert report["non_tie_pairwise"]["pairs"][0]["n_non_tie"] == 0
    assert report["judge_vs_majority_confusion"] is None and report["accuracy_by_consensus"] is None
    assert report["leave_one_rater_out"]["mean"] == 1.0
    with pytest.raises(ValueError, match="no ratings"):
        human_study_report({"q1": {}})
    with pytest.raises(ValueError, match=r"item 'q1', rater 'r2': label 'Tie'"):
        human_study_report({"q1": {"r1": "tie", "r2": "Tie"}})

"""Judge-vs-human agreement statistics against pingouin, scikit-learn, krippendorff and hand-computed cases."""

from __future__ import annotations

import json
import math

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import cohen_kappa_score

from theraloop.stats._agreement import (
    ICC_KINDS,
    agreement_report,
    bland_altman,
    bland_altman_points,
    icc,
    icc_ci,
    krippendorff_alpha,
    mae,
    mean_bias,
    pearson,
    quadratic_weighted_kappa,
    reliability_tier,
    spearman,
)
from theraloop.stats._paired import bootstrap_ci

# Shrout & Fleiss (1979), Table 2: six targets rated by four judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def pingouin_icc(ratings: np.ndarray) -> pd.DataFrame:
    n, k = ratings.shape
    long = pd.DataFrame({"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n),
                         "score": ratings.ravel()})
    return pingouin.intraclass_corr(data=long, targets="target", raters="rater", ratings="score").set_index("Type")


def random_ratings(seed: int, n: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.normal(3, 1, size=(n, 1))
    return truth + rng.normal(0, 0.7, size=(n, k)) + rng.normal(0, 0.4, size=(1, k))


@pytest.mark.parametrize("ratings", [random_ratings(0, 25, 3), np.array([[1, 2], [3, 3], [4, 5], [2, 4], [5, 4]]),
                                     SHROUT_FLEISS], ids=["random", "hand", "shrout-fleiss"])
def test_icc_matches_pingouin(ratings: np.ndarray) -> None:
    reference = pingouin_icc(ratings)
    for kind in ICC_KINDS:
        assert icc(ratings, kind) == pytest.approx(reference.loc[f"ICC({kind})", "ICC"], abs=1e-6)
        # pingouin rounds its F-based intervals to two decimals.
        estimate = icc_ci(ratings, kind, n_boot=50)
        assert [estimate.f_low, estimate.f_high] == pytest.approx(
            list(reference.loc[f"ICC({kind})", "CI95"]), abs=0.0051)


def test_icc_shrout_fleiss_textbook_values() -> None:
    published = {"A,1": 0.29, "C,1": 0.71, "A,k": 0.62, "C,k": 0.91}
    for kind, value in published.items():
        assert round(icc(SHROUT_FLEISS, kind), 2) == value


def test_icc_hand_computed_consistency() -> None:
    # Rows (1,2), (2,3), (3,4): the second rater is always one higher. Consistency is perfect,
    # absolute agreement is not: MSR = 2, MSC = 1.5, MSE = 0, so A,1 = 2 / (2 + 2 * 1.5 / 3) = 2/3.
    ratings = [[1, 2], [2, 3], [3, 4]]
    assert icc(ratings, "C,1") == pytest.approx(1.0)
    assert icc(ratings, "A,1") == pytest.approx(2 / 3)
    assert icc(ratings, "A,k") == pytest.approx(2 / 2.5)
    # No residual variance: the F-based interval is undefined (null), the bootstrap still runs.
    estimate = icc_ci(ratings, "A,1", n_boot=50)
    assert estimate.f_low is None and estimate.estimate == pytest.approx(2 / 3) and estimate.n_boot_valid == 50


def test_icc_rejects_missing_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"ratings\[1, 0\] is nan"):
        icc([[1, 2], [np.nan, 3], [2, 2]])
    with pytest.raises(ValueError, match="n_targets x k_raters"):
        icc([1, 2, 3])
    with pytest.raises(ValueError, match="n >= 2 and k >= 2"):
        icc([[1], [2]])
    with pytest.raises(ValueError, match="kind must be one of"):
        icc(SHROUT_FLEISS, "ICC2")
    assert math.isnan(icc([[2, 2], [2, 2], [2, 2]]))


def test_icc_ci_bootstrap_is_seeded_and_matches_bootstrap_ci() -> None:
    ratings = random_ratings(1, 30, 2)
    first, second = icc_ci(ratings, "A,1", n_boot=200, seed=7), icc_ci(ratings, "A,1", n_boot=200, seed=7)
    assert first == second
    assert icc_ci(ratings, "A,1", n_boot=200, seed=8) != first
    # Same resamples and percentile rule as the generic bootstrap over rows.
    reference = bootstrap_ci(ratings, lambda rows: icc(rows, "A,1"), n_boot=200, seed=7)
    assert (first.estimate, first.low, first.high) == pytest.approx(reference, abs=1e-12)
    assert first.n_boot_valid == 200 and first.low < first.estimate < first.high


def test_icc_ci_counts_undefined_resamples() -> None:
    # With three targets, a resample repeating one target has no between-target variance.
    estimate = icc_ci([[1, 2], [3, 3], [5, 6]], "C,1", n_boot=300, seed=0)
    assert 0 < estimate.n_boot_valid < 300
    assert estimate.low is not None and estimate.low <= estimate.high


def test_quadratic_weighted_kappa_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    human = rng.integers(1, 6, 60)
    judge = np.clip(human + rng.integers(-1, 2, 60), 1, 5).astype(float)  # integer-valued floats
    expected = cohen_kappa_score(judge, human, labels=[1, 2, 3, 4, 5], weights="quadratic")
    assert quadratic_weighted_kappa(judge, human) == pytest.approx(expected, abs=1e-12)
    # An unused middle score still counts as a step of distance.
    a, b = [1, 3, 3, 1, 3], [3, 1, 3, 1, 3]
    assert quadratic_weighted_kappa(a, b) == pytest.approx(
        cohen_kappa_score(a, b, labels=[1, 2, 3], weights="quadratic"), abs=1e-12)
    assert quadratic_weighted_kappa(a, b, labels=[0, 1, 2, 3, 4]) == pytest.approx(
        cohen_kappa_score(a, b, labels=[0, 1, 2, 3, 4], weights="quadratic"), abs=1e-12)


def test_quadratic_weighted_kappa_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"a\[1\] is 2.5: weighted kappa needs integer"):
        quadratic_weighted_kappa([1, 2.5], [1, 2])
    with pytest.raises(ValueError, match=r"scores \[5\] are not in labels"):
        quadratic_weighted_kappa([1, 5], [1, 2], labels=[1, 2, 3])
    with pytest.raises(ValueError, match="equal length"):
        quadratic_weighted_kappa([1, 2], [1])
    assert math.isnan(quadratic_weighted_kappa([2, 2], [2, 2]))


@pytest.mark.parametrize("level", ["interval", "ordinal", "nominal"])
def test_krippendorff_alpha_matches_package(level: str) -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(1, 6, 40)
    data = np.clip(truth + rng.integers(-1, 2, (3, 40)), 1, 5).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level) == pytest.approx(expected, abs=1e-6)
    # Continuous scores (a judge's mean of samples): nearly every value is distinct.
    scores = np.round(truth + rng.normal(0, 0.8, (2, 40)), 2)
    scores[0, :3] = np.nan
    expected = krippendorff.alpha(reliability_data=scores, level_of_measurement=level)
    assert krippendorff_alpha(scores, level) == pytest.approx(expected, abs=1e-6)


def test_krippendorff_alpha_hand_and_undefined_cases() -> None:
    # Krippendorff (2011) nominal example: 4 coders x 12 units, None = missing; alpha = 0.743.
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    assert round(krippendorff_alpha(data, "nominal"), 3) == 0.743
    assert math.isnan(krippendorff_alpha([[2, 2, 2], [2, 2, 2]]))
    assert math.isnan(krippendorff_alpha([[1, np.nan], [np.nan, 2]]))  # no unit has two values
    with pytest.raises(ValueError, match="level must be"):
        krippendorff_alpha([[1, 2], [2, 1]], "ratio")


def test_correlations_bias_and_mae_by_hand() -> None:
    # x = (1, 2, 3), y = (1, 2, 4): cov sum 3, ss_x 2, ss_y 42/9, r = 3 / sqrt(2 * 42 / 9).
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert spearman([1, 2, 3], [1, 2, 4]) == pytest.approx(1.0)
    x, y = [3, 1, 4, 1, 5, 9, 2], [2, 7, 1, 8, 2, 8, 1]
    assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0])
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    judge, human = [3, 4, 5, 2], [2, 4, 3, 3]  # differences 1, 0, 2, -1
    assert mean_bias(judge, human) == pytest.approx(0.5)
    assert mae(judge, human) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"human\[1\] is nan"):
        mae([1, 2], [1, np.nan])


def test_bland_altman_by_hand() -> None:
    summary = bland_altman([3, 4, 5, 2], [2, 4, 3, 3])
    sd = math.sqrt(5 / 3)  # deviations 0.5, -0.5, 1.5, -1.5 from the mean difference 0.5
    assert summary.mean_difference == pytest.approx(0.5)
    assert summary.sd_difference == pytest.approx(sd)
    assert (summary.lower_limit, summary.upper_limit) == pytest.approx((0.5 - 1.96 * sd, 0.5 + 1.96 * sd))
    assert summary.proportion_inside == 1.0 and summary.n == 4
    # Nine zero differences and one of 10: mean 1, sd sqrt(10), upper limit 1 + 1.96 sqrt(10) < 10.
    outlier = bland_altman([0] * 9 + [10], [0] * 10)
    assert outlier.sd_difference == pytest.approx(math.sqrt(10))
    assert outlier.proportion_inside == pytest.approx(0.9)
    means, differences = bland_altman_points([3, 4], [2, 4])
    assert means.tolist() == [2.5, 4.0] and differences.tolist() == [1.0, 0.0]


def test_reliability_tier_boundaries() -> None:
    cases = {0.0: "poor", 0.4999: "poor", 0.5: "moderate", 0.7499: "moderate", 0.75: "good",
             0.8999: "good", 0.9: "excellent", 1.0: "excellent", -0.2: "poor"}
    assert {value: reliability_tier(value) for value in cases} == cases
    assert reliability_tier(math.nan) is None


def synthetic_scores(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    systems = np.repeat(["alpha", "beta", "gamma", "delta"], 15)
    quality = {"alpha": 0.0, "beta": 0.5, "gamma": 1.0, "delta": 1.5}
    base = np.array([2 + quality[s] for s in systems]) + rng.normal(0, 0.6, len(systems))
    human = pd.DataFrame({"id": [f"r{i}" for i in range(len(systems))], "system": systems,
                          "empathy": np.clip(np.rint(base), 1, 5),
                          "safety": np.clip(np.rint(base + rng.normal(0, 0.5, len(systems))), 1, 5)})
    judge = pd.DataFrame({"id": human["id"],
                          "empathy": np.clip(human["empathy"] + 0.5 + rng.normal(0, 0.5, len(systems)), 1, 5),
                          "safety": np.clip(human["safety"] + rng.normal(0, 0.8, len(systems)), 1, 5)})
    return judge, human


def test_agreement_report_response_and_system_levels() -> None:
    judge, human = synthetic_scores()
    judge.loc[[3, 7], "empathy"] = np.nan
    human.loc[[7, 11], "empathy"] = None
    shuffled = judge.sample(frac=1, random_state=0)  # ids, not positions, align the rows
    report = agreement_report(shuffled, human, ["empathy", "safety"], n_boot=100, seed=1)

    empathy = report.dimensions["empathy"]
    assert (empathy.n_rows, empathy.n_used, empathy.n_missing_judge, empathy.n_missing_human) == (60, 57, 2, 2)
    kept = judge["empathy"].notna() & human["empathy"].notna()
    j, h = judge.loc[kept, "empathy"].to_numpy(), human.loc[kept, "empathy"].to_numpy()
    response = empathy.response
    assert response.n == 57
    for kind in ICC_KINDS:
        assert response.icc[kind].estimate == pytest.approx(icc(np.column_stack([h, j]), kind))
    assert response.icc["A,1"] == icc_ci(np.column_stack([h, j]), "A,1", n_boot=100, seed=1)
    assert response.bias == pytest.approx(np.mean(j - h)) and response.bias > 0.3
    assert response.qwk == pytest.approx(cohen_kappa_score(np.floor(j + 0.5), h, labels=[1, 2, 3, 4, 5],
                                                           weights="quadratic"))
    assert response.alpha_ordinal == pytest.approx(
        krippendorff.alpha(reliability_data=np.vstack([h, j]), level_of_measurement="ordinal"), abs=1e-6)
    assert response.tier == reliability_tier(response.icc["A,1"].estimate)

    system = empathy.system
    assert system is not None and system.n_systems == 4
    frame = pd.DataFrame({"system": human.loc[kept, "system"], "h": h, "j": j}).groupby("system").mean()
    assert system.means["beta"].human == pytest.approx(frame.loc["beta", "h"])
    assert system.means["beta"].n == 15 - int((~kept[human["system"] == "beta"]).sum())
    means = frame[["h", "j"]].to_numpy()
    reference = pingouin_icc(means)
    assert list(system.icc) == list(ICC_KINDS)
    for kind in ICC_KINDS:
        assert system.icc[kind].estimate == pytest.approx(reference.loc[f"ICC({kind})", "ICC"], abs=1e-6)
        # pingouin rounds its F-based intervals to two decimals.
        assert [system.icc[kind].f_low, system.icc[kind].f_high] == pytest.approx(
            list(reference.loc[f"ICC({kind})", "CI95"]), abs=0.0051)
        # Every kind's bootstrap interval comes from the same resamples of systems as icc_ci's.
        alone = icc_ci(means, kind, n_boot=100, seed=1)
        assert system.icc[kind].model_dump() == pytest.approx(alone.model_dump())
    assert system.bias == pytest.approx(float((frame["j"] - frame["h"]).mean()))
    assert report.dimensions["safety"].n_used == 60

    # JSON-ready: undefined statistics become null, never NaN.
    assert json.loads(report.model_dump_json())["dimensions"]["empathy"]["response"]["n"] == 57


def test_agreement_report_positional_dicts_and_undefined_values() -> None:
    judge = {"empathy": [3, 3, 3, 3]}
    human = {"empathy": [2, 4, 3, 5]}
    report = agreement_report(judge, human, ["empathy"], systems=["a", "a", "b", "b"], n_boot=20)
    response = report.dimensions["empathy"].response
    assert response.pearson is None and response.spearman is None  # a constant judge
    assert response.bias == pytest.approx(-0.5)
    system = report.dimensions["empathy"].system
    assert system.means["a"].human == 3.0 and system.means["b"].judge == 3.0
    assert "NaN" not in report.model_dump_json()
    # `systems` follows human's rows even when ids reorder them; nullable integer columns work.
    frame = pd.DataFrame({"id": ["x", "y", "z", "w"], "empathy": pd.array([2, 4, None, 5], dtype="Int64")})
    reordered = agreement_report({"id": ["w", "z", "y", "x"], "empathy": [3, 3, 3, 3]}, frame, ["empathy"],
                                 systems=["a", "b", "a", None], n_boot=20).dimensions["empathy"]
    assert (reordered.n_used, reordered.n_missing_human) == (3, 1)
    means = reordered.system.means
    assert (means["a"].n, means["a"].human, means["b"].n, means["b"].human) == (1, 2.0, 1, 4.0)
    assert reordered.system.n_unlabelled == 1
    # No system information: no system-level analysis.
    assert agreement_report(judge, human, ["empathy"], n_boot=20).dimensions["empathy"].system is None


def test_agreement_report_clear_errors() -> None:
    judge, human = synthetic_scores()
    with pytest.raises(ValueError, match="judge has no column 'warmth'"):
        agreement_report(judge, human, ["warmth"], n_boot=10)
    with pytest.raises(ValueError, match="judge: id 'r0' occurs more than once"):
        agreement_report(pd.concat([judge, judge.head(1)]), human, ["empathy"], n_boot=10)
    with pytest.raises(ValueError, match="do the ids match"):
        agreement_report(judge.assign(id=judge["id"] + "x"), human, ["empathy"], n_boot=10)
    with pytest.raises(ValueError, match="judge has 59 rows and human 60"):
        agreement_report(judge.drop(columns="id").head(59), human.drop(columns="id"), ["empathy"], n_boot=10)
    with pytest.raises(ValueError, match=r"human\['empathy'\]: scores must be numbers"):
        agreement_report(judge, human.assign(empathy="high"), ["empathy"], n_boot=10)
    with pytest.raises(ValueError, match="row 0: human says system 'alpha', judge says 'omega'"):
        agreement_report(judge.assign(system="omega"), human, ["empathy"], n_boot=10)


def test_reproduces_mentalalign_published_system_level_icc(shared_data) -> None:
    """MentalBench-Align (Results/ICC Reliability Analysis.md), GPT-4o judge without gpt4o's own
    responses: system-level ICC(C,1) [95% CI] and ICC(A,1) as published."""
    from theraloop.data._mentalalign import load_mentalalign

    data = load_mentalalign(shared_data / "mentalalign", judges=["gpt-4o"], cleaning="as_published")
    frame = pd.DataFrame([{"id": f"{rating.conv_id}:{rating.generator}", "system": rating.generator,
                           "rater": rating.rater, **rating.scores}
                          for rating in data.ratings if rating.generator != "gpt4o"])
    published = {"guidance": (0.849, 0.650, 0.975, 0.475), "informativeness": (0.856, 0.655, 0.964, 0.681),
                 "safety": (0.480, 0.116, 0.858, 0.279)}
    report = agreement_report(frame[frame["rater"] == "gpt-4o"], frame[frame["rater"] == "human"],
                              list(published), n_boot=1000, seed=42)
    for dimension, (consistency, low, high, absolute) in published.items():
        system = report.dimensions[dimension].system
        assert system is not None and system.n_systems == 9
        assert system.icc["C,1"].estimate == pytest.approx(consistency, abs=0.005)
        assert system.icc["A,1"].estimate == pytest.approx(absolute, abs=0.005)
        # The benchmark drew its resamples differently and discarded those outside [0, 1].
        assert (system.icc["C,1"].low, system.icc["C,1"].high) == pytest.approx((low, high), abs=0.03)

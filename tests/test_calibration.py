"""Calibration maps (isotonic, quantile, linear) on hand-computed cases and against scipy/sklearn, the
automatic choice, the held-out calibration study and `theraloop validate --calibrate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pingouin
import pytest
import typer
from scipy.stats import percentileofscore
from sklearn.isotonic import IsotonicRegression
from typer.testing import CliRunner

from theraloop.io import InputError
from theraloop.judge._calibration import Calibration, choose_method, fit_map, mid_percentile
from theraloop.judge._validate import JudgeInput, calibration_study
from theraloop.judge._validate_cli import register


def test_mid_percentile_is_scipys_mean_percentile_rank():
    values = np.array([1, 2, 2, 3, 5, 5, 5], dtype=float)
    points = np.array([0, 1, 2, 2.5, 5, 6], dtype=float)
    # Hand: 2 has 1 value below and 3 at or below -> (1 + 3) / 14.
    assert mid_percentile(values, np.array([2.0]))[0] == pytest.approx(4 / 14)
    expected = [percentileofscore(values, point, kind="mean") / 100 for point in points]
    assert mid_percentile(values, points) == pytest.approx(expected)


def test_quantile_map_hand_computed():
    x, y = np.array([1, 1, 2, 3.0]), np.array([2, 3, 4, 5.0])
    # Judge ranks: 1 -> (0+2)/8, 2 -> (2+3)/8, 3 -> (3+4)/8; human ranks of 2..5: 1/8, 3/8, 5/8, 7/8.
    # 0.25 lies halfway between the ranks of 2 and 3 -> 2.5; 0.625 is 4's rank; 0.875 is 5's.
    mapped = fit_map(x, y, "quantile")
    assert mapped.method == "quantile" and mapped.x == [1, 2, 3] and mapped.y == pytest.approx([2.5, 4, 5])
    assert mapped(np.array([1.5, 0, 9])) == pytest.approx([3.25, 2.5, 5])  # interpolated, flat beyond the ends


def test_linear_map_matches_mean_and_sd_and_clips_to_the_human_range():
    x, y = np.array([1, 2, 3.0]), np.array([5, 5, 2.0])
    # mean_y 4, sd_y sqrt(2), sd_x sqrt(2/3): slope sqrt(3); 3 -> 4 + sqrt(3) = 5.73, clipped to max(y) = 5.
    assert fit_map(x, y, "linear").y == pytest.approx([4 - np.sqrt(3), 4, 5])
    rng = np.random.default_rng(0)
    judge = rng.normal(4, 0.5, 200)
    human = 1.0 + 0.8 * judge + rng.normal(0, 0.6, 200)
    mapped = fit_map(judge, human, "linear")(judge)
    assert mapped.mean() == pytest.approx(human.mean()) and mapped.std() == pytest.approx(human.std())
    assert fit_map(np.array([3, 3, 3.0]), np.array([1, 2, 3.0]), "linear").y == [2.0]  # constant judge


def test_isotonic_map_is_sklearns():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 6, 100).astype(float)
    y = np.clip(x + rng.normal(0, 1, 100), 1, 5)
    reference = IsotonicRegression(out_of_bounds="clip").fit(x, y)
    grid = np.linspace(0, 6, 25)
    assert fit_map(x, y, "isotonic")(grid) == pytest.approx(reference.predict(grid))
    with pytest.raises(ValueError, match="unknown calibration method 'cubic'"):
        fit_map(x, y, "cubic")


def _noisy_judge(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer human scores; the judge sees them through noise, one level too high, and saturates at 5."""
    rng = np.random.default_rng(seed)
    human = rng.integers(1, 6, n).astype(float)
    judge = np.clip(np.rint(human + 1 + rng.normal(0, 1.2, n)), 1, 5)
    return judge, human


def test_auto_prefers_a_variance_preserving_map_when_isotonic_shrinks_scores():
    judge, human = _noisy_judge(400, 0)
    chosen, scores = choose_method(judge, human, groups=np.arange(400) // 4, seed=0)
    assert set(scores) == {"isotonic", "quantile", "linear"}
    assert chosen != "isotonic" and scores[chosen] == max(scores.values()) > scores["isotonic"]
    calibration = Calibration.fit({"empathy": judge}, {"empathy": human}, method="auto",
                                  groups={"empathy": np.arange(400) // 4})
    assert calibration.maps["empathy"].method == chosen and calibration.selection["empathy"] == scores
    assert Calibration.model_validate_json(calibration.model_dump_json()) == calibration


def _inputs(n_conversations: int = 60) -> dict[str, JudgeInput]:
    judge, human = _noisy_judge(3 * n_conversations, 2)
    judge_rows, human_rows = [], []
    for index in range(3 * n_conversations):
        response_id, system = f"c{index // 3}/g{index % 3}", f"g{index % 3}"
        judge_rows.append({"id": response_id, "system": system, "empathy": judge[index]})
        human_rows.append({"id": response_id, "system": system, "empathy": human[index]})
    return {"j": JudgeInput(judge="j", judge_rows=judge_rows, human_rows=human_rows)}


def test_study_fits_on_half_the_conversations_and_reports_on_the_other():
    inputs = _inputs()
    study = calibration_study(inputs, "linear", seed=3, group_of=lambda response_id: response_id.split("/")[0])
    assert study.split == {"groups": 60, "fit_groups": 30, "held_out_groups": 30}
    cell = study.cells["j"]["empathy"]
    assert cell.method == "linear" and cell.n_fit == 90 and cell.response["none"].n == 90
    # Recompute the held-out half by hand: the conversations the map was not fitted on.
    rows = inputs["j"].judge_rows
    judge = np.array([row["empathy"] for row in rows])
    human = np.array([row["empathy"] for row in inputs["j"].human_rows])
    conversations = sorted({row["id"].split("/")[0] for row in rows})
    fit = {conversations[i] for i in np.random.default_rng(3).permutation(60)[:30]}
    held = np.array([row["id"].split("/")[0] not in fit for row in rows])
    mapped = fit_map(judge[~held], human[~held], "linear")(judge[held])
    after = cell.response["linear"]
    assert after.bias == pytest.approx(np.mean(mapped - human[held]))
    assert after.mae == pytest.approx(np.mean(np.abs(mapped - human[held])))
    assert cell.response["none"].bias == pytest.approx(np.mean(judge[held] - human[held])) and \
        cell.response["none"].bias > 0.4
    frame = [{"target": i, "rater": rater, "score": score}
             for i, (a, b) in enumerate(zip(human[held], mapped, strict=True))
             for rater, score in (("human", a), ("judge", b))]
    reference = pingouin.intraclass_corr(pd.DataFrame(frame), targets="target", raters="rater", ratings="score")
    # pingouin's labels: ICC2 and ICC3 before 0.7, ICC(A,1) and ICC(C,1) since.
    reference = reference.set_index("Type")["ICC"].rename({"ICC3": "ICC(C,1)", "ICC2": "ICC(A,1)"})
    assert after.icc_a1 == pytest.approx(reference["ICC(A,1)"])
    assert after.icc_c1 == pytest.approx(reference["ICC(C,1)"])
    systems = np.array([row["system"] for row in rows])[held]
    system = cell.system["linear"]
    assert system.n == 3 and system.bias == pytest.approx(np.mean(
        [mapped[systems == s].mean() - human[held][systems == s].mean() for s in ("g0", "g1", "g2")]))
    # 90 held-out responses: the bias left is sampling noise, far below the uncalibrated shift.
    assert abs(after.bias) < cell.response["none"].bias / 2 and after.icc_a1 > cell.response["isotonic"].icc_a1
    with pytest.raises(InputError, match="unknown calibration method"):
        calibration_study(inputs, "spline")


def test_validate_calibrate_command(tmp_path):
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Keep `validate` a subcommand, as in the real app."""

    register(app)
    inputs = _inputs()["j"]
    judged = tmp_path / "judgments.jsonl"
    judged.write_text("".join(json.dumps({"id": row["id"], "system": row["system"], "judge": "j", "rubric": "r",
                                          "scores": {"empathy": row["empathy"]}}) + "\n"
                              for row in inputs.judge_rows), encoding="utf-8")
    human = tmp_path / "human.jsonl"
    human.write_text("".join(json.dumps({"id": row["id"], "context": "c", "response": "r", "system": row["system"],
                                         "human_scores": {"empathy": row["empathy"]}}) + "\n"
                             for row in inputs.human_rows), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["validate", "--judgments", str(judged), "--human", str(human), "--n-boot", "20",
                                      "--calibrate", "auto", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    study = json.loads((out / "calibration.json").read_text())
    assert study["split"]["groups"] == 180  # no conversations in a judgments file: responses are split
    cell = study["cells"]["j"]["empathy"]
    assert cell["method"] in ("isotonic", "quantile", "linear") and set(cell["selection"]) == {
        "isotonic", "quantile", "linear"}
    assert study["goal"]["cells"] == 1 and "calibration (auto)" in result.output
    assert "| j | empathy |" in (out / "calibration.md").read_text()
    refused = CliRunner().invoke(app, ["validate", "--judgments", str(judged), "--human", str(human),
                                       "--calibrate", "spline"])
    assert refused.exit_code != 0 and "--calibrate" in refused.output

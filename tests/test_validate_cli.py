"""`theraloop validate` through its Typer command on small synthetic inputs: judgments beside
human-rated items, and a miniature MentalAlign benchmark. Statistics are checked against pingouin
and hand computation; bad input is named by file, line and field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pingouin
import pytest
import typer
from sklearn.metrics import cohen_kappa_score
from test_mentalalign import cell, write_sheet
from typer.testing import CliRunner

from theraloop.data._mentalalign import MENTALALIGN_FILES, MENTALALIGN_GENERATORS
from theraloop.io import InputError
from theraloop.judge._validate_cli import register

DIMENSIONS = ["empathy", "safety"]
SYSTEMS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Keep `validate` a subcommand, as in the real app."""

    register(app)
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


def synthetic_pairs(seed: int = 0):
    """Human scores per system around a system level; on empathy the judge adds +1 (capped at 5:
    nearly perfect consistency, poor absolute agreement), on safety it adds noise."""
    rng = np.random.default_rng(seed)
    human_items, judgments = [], []
    for index in range(40):
        system = SYSTEMS[index % 4]
        level = 2 + index % 4 * 0.6
        empathy = int(np.clip(round(level + rng.normal(0, 0.7)), 1, 5))
        safety = int(np.clip(round(level + rng.normal(0, 0.7)), 1, 5))
        judged_safety = int(np.clip(safety + rng.integers(-1, 2), 1, 5))
        human_items.append({"id": f"r{index}", "context": "a post", "response": "a reply", "system": system,
                            "human_scores": {"empathy": empathy, "safety": safety}})
        judgments.append({"id": f"r{index}", "system": system, "judge": "tiny-judge", "rubric": "therajudge",
                          "scores": {"empathy": min(empathy + 1, 5), "safety": judged_safety, "guidance": 3}})
    return human_items, judgments


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_judgments_against_human_scores(app, tmp_path):
    human_items, judgments = synthetic_pairs()
    judgments.append({"id": "r40", "system": "alpha", "judge": "tiny-judge", "rubric": "therajudge",
                      "scores": None, "parse_ok": False})
    human_items.append({"id": "r40", "context": "a post", "response": "a reply", "system": "alpha",
                        "human_scores": {"empathy": 3, "safety": 3}})
    human = write_jsonl(tmp_path / "rated.jsonl", human_items)
    judged = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    out = tmp_path / "out"
    result = invoke(app, "--judgments", judged, "--human", human, "--n-boot", 200, "--seed", 7, "--out", out)
    assert result.exit_code == 0, result.output
    assert "tiny-judge: response-level agreement with humans" in result.output
    assert "  empathy " in result.output and "ICC(A,1) [95% CI]" in result.output
    validation = json.loads((out / "validation.json").read_text())
    assert validation["dimensions"] == DIMENSIONS  # guidance has no human scores
    judge = validation["judges"]["tiny-judge"]
    assert judge["counts"] == {"judged": 41, "parse_failures": 1, "human_rated_not_judged": 0}
    frame = pd.DataFrame([{**item["human_scores"], "system": item["system"]} for item in human_items[:40]])
    judged_frame = pd.DataFrame([judgment["scores"] for judgment in judgments[:40]])
    for dimension in DIMENSIONS:
        agreement = judge["agreement"]["dimensions"][dimension]
        # The parse failure is a row without judge scores: counted, never scored.
        assert (agreement["n_rows"], agreement["n_used"], agreement["n_missing_judge"]) == (41, 40, 1)
        response = agreement["response"]
        assert response["bias"] == pytest.approx((judged_frame[dimension] - frame[dimension]).mean())
        assert response["mae"] == pytest.approx((judged_frame[dimension] - frame[dimension]).abs().mean())
        assert response["qwk"] == pytest.approx(cohen_kappa_score(
            judged_frame[dimension], frame[dimension], labels=[1, 2, 3, 4, 5], weights="quadratic"))
        # System level: ICC of the per-system means, against pingouin (its labels ICC3, ICC2, ICC3k
        # and ICC2k before 0.7, ICC(C,1), ICC(A,1), ICC(C,k) and ICC(A,k) since).
        means = pd.DataFrame({"human": frame.groupby("system")[dimension].mean(),
                              "judge": judged_frame.groupby(frame["system"])[dimension].mean()})
        assert agreement["system"]["n_systems"] == 4
        for system in SYSTEMS:
            assert agreement["system"]["means"][system]["judge"] == pytest.approx(means.loc[system, "judge"])
        long = means.reset_index().melt(id_vars="system", var_name="rater", value_name="score")
        reference = pingouin.intraclass_corr(long, targets="system", raters="rater", ratings="score")
        reference = reference.set_index("Type")["ICC"].rename(
            {"ICC3": "ICC(C,1)", "ICC2": "ICC(A,1)", "ICC3k": "ICC(C,k)", "ICC2k": "ICC(A,k)"})
        system_icc = agreement["system"]["icc"]
        assert list(system_icc) == ["C,1", "A,1", "C,k", "A,k"]
        for kind, estimate in system_icc.items():
            assert estimate["estimate"] == pytest.approx(reference[f"ICC({kind})"])
            assert estimate["n_boot"] == 200 and estimate["seed"] == 7
            assert estimate["low"] <= estimate["estimate"] <= estimate["high"]
    # A shift by +1 is consistent but not in absolute agreement.
    empathy = judge["agreement"]["dimensions"]["empathy"]["response"]["icc"]
    assert empathy["C,1"]["estimate"] > 0.9
    assert empathy["A,1"]["estimate"] < empathy["C,1"]["estimate"] - 0.2
    markdown = (out / "validation.md").read_text()
    assert "## tiny-judge" in markdown
    system_part, response_part = markdown.split("### System level")[1].split("### Response level")
    # Every ICC cell, at both levels, is an estimate with its bootstrap interval.
    levels = {"system": (system_part, "4"), "response": (response_part, "40")}
    for level, (part, n) in levels.items():
        icc = judge["agreement"]["dimensions"]["empathy"][level]["icc"]
        cells = [f"{icc[kind]['estimate']:.3f} [{icc[kind]['low']:.3f}, {icc[kind]['high']:.3f}]"
                 for kind in ("C,1", "A,1", "C,k", "A,k")]
        assert f"| empathy | {n} | " + " | ".join(cells) + " |" in part
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "validate" and manifest["seed"] == 7
    assert set(manifest["inputs"]) == {"human", "judgments_0"}
    assert (out / "config.yaml").exists()


def test_same_seed_same_intervals(app, tmp_path):
    human_items, judgments = synthetic_pairs(seed=3)
    human = write_jsonl(tmp_path / "rated.jsonl", human_items)
    judged = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    reports = []
    for run in ("a", "b"):
        result = invoke(app, "--judgments", judged, "--human", human, "--n-boot", 100, "--out", tmp_path / run)
        assert result.exit_code == 0, result.output
        reports.append(json.loads((tmp_path / run / "validation.json").read_text())["judges"])
    assert reports[0] == reports[1]


def test_malformed_human_line_is_named(app, tmp_path):
    human_items, judgments = synthetic_pairs()
    human_items[2]["human_scores"] = {"empathy": "very"}
    human = write_jsonl(tmp_path / "rated.jsonl", human_items)
    judged = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    result = invoke(app, "--judgments", judged, "--human", human, "--out", tmp_path / "out")
    assert isinstance(result.exception, InputError)
    assert f"{human}:3: field 'human_scores.empathy'" in str(result.exception)


def test_malformed_judgment_line_is_named(app, tmp_path):
    human_items, judgments = synthetic_pairs()
    del judgments[4]["judge"]
    human = write_jsonl(tmp_path / "rated.jsonl", human_items)
    judged = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    result = invoke(app, "--judgments", judged, "--human", human, "--out", tmp_path / "out")
    assert isinstance(result.exception, InputError)
    assert f"{judged}:5: field 'judge'" in str(result.exception)


def test_conflicting_systems_are_an_error(app, tmp_path):
    human_items, judgments = synthetic_pairs()
    judgments[6]["system"] = "omega"
    human = write_jsonl(tmp_path / "rated.jsonl", human_items)
    judged = write_jsonl(tmp_path / "judgments.jsonl", judgments)
    result = invoke(app, "--judgments", judged, "--human", human, "--out", tmp_path / "out")
    assert isinstance(result.exception, InputError)
    assert "id 'r6'" in str(result.exception) and "'omega'" in str(result.exception)


def test_needs_exactly_one_source(app, tmp_path):
    assert invoke(app, "--out", tmp_path).exit_code == 2
    result = invoke(app, "--judgments", tmp_path / "j.jsonl", "--mentalalign", tmp_path, "--out", tmp_path)
    assert result.exit_code == 2 and "either --judgments" in result.output


def test_mentalalign_protocol_on_a_miniature_benchmark(app, tmp_path):
    rng = np.random.default_rng(1)
    human_rows, judge_rows = [], []
    for conv in range(1, 7):
        human_rows.append({"ConvID": conv})
        judge_rows.append({"ConvID": conv})
        for offset, generator in enumerate(MENTALALIGN_GENERATORS):
            scores = np.clip(1 + offset % 5 + rng.integers(-1, 2, size=7), 1, 5).tolist()
            human_rows[-1][generator] = cell(*scores)
            judged = np.clip(np.array(scores) + rng.integers(0, 2, size=7), 1, 5).tolist()
            judge_rows[-1][generator] = "```json\n" + cell(*judged, Overall=4, Explanation="ok") + "\n```"
    human_rows[0]["qwen_2"] = cell(0, 0, 0, 0, 0, 0, 0)
    data_dir = tmp_path / "mentalalign"
    data_dir.mkdir()
    write_sheet(data_dir / MENTALALIGN_FILES["human"], "human", human_rows, leading_space=True)
    write_sheet(data_dir / MENTALALIGN_FILES["claude"], "judge", judge_rows)
    out = tmp_path / "out"
    result = invoke(app, "--mentalalign", data_dir, "--judges", "claude", "--n-boot", 50, "--out", out)
    assert result.exit_code == 0, result.output
    validation = json.loads((out / "validation.json").read_text())
    assert validation["source"] == "mentalalign"
    assert validation["data"]["dropped_cells"] == {"human": {"all_zero": 1}, "claude": {}}
    claude = validation["judges"]["claude"]
    assert claude["excluded_systems"] == ["claude"]
    assert claude["counts"] == {"responses": 54, "judge_scored": 54, "human_scored": 53}
    guidance = claude["agreement"]["dimensions"]["guidance"]
    assert guidance["n_used"] == 53 and guidance["system"]["n_systems"] == 9
    assert "claude" not in guidance["system"]["means"]
    assert guidance["system"]["means"]["qwen_2"]["n"] == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"mentalalign_human", "mentalalign_claude"}
    assert manifest["data"]["sha256"]["claude"] == manifest["inputs"]["mentalalign_claude"]["sha256"]
    assert "## claude (without claude)" in (out / "validation.md").read_text()

    result = invoke(app, "--mentalalign", data_dir, "--judges", "claude", "--n-boot", 50,
                    "--include-own-family", "--cleaning", "as_published", "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    claude = json.loads((tmp_path / "all" / "validation.json").read_text())["judges"]["claude"]
    assert claude["excluded_systems"] == []
    assert claude["agreement"]["dimensions"]["guidance"]["n_used"] == 60  # the all-zero cell is kept

"""The LLM judge on a scripted backend: parsing, retries, counterbalancing, resume, calibration, rubrics."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from theraloop.judge import Calibration, JudgeConfig, LLMJudge
from theraloop.judge._run import PairItem, compare_items, score_items, summarize_judgments, summarize_pairs
from theraloop.llm import ScriptedChatModel, run_sync
from theraloop.records import ResponseItem
from theraloop.rubrics import bundled_rubrics, load_rubric

KEYS = load_rubric("therajudge").keys
ITEM = ResponseItem(id="x", context="I feel alone since I moved.", response="That sounds hard.")


def _absolute(score: int) -> str:
    return json.dumps({key: {"rationale": "short reason", "score": score} for key in KEYS})


def _shown(request) -> tuple[str, str]:
    prompt = request.messages[-1].content
    return (re.search(r"<response_a>\n(.*?)\n</response_a>", prompt, re.S).group(1),
            re.search(r"<response_b>\n(.*?)\n</response_b>", prompt, re.S).group(1))


def test_bundled_rubrics_have_anchors_for_every_level():
    assert {"therajudge", "modpo", "gricean", "epitome"} <= set(bundled_rubrics())
    therajudge = load_rubric("therajudge")
    assert therajudge.keys == ["guidance", "informativeness", "relevance", "safety", "empathy", "helpfulness",
                               "understanding"]
    assert load_rubric("modpo").keys == ["empathy", "active_listening", "self_motivated_change", "trust_rapport",
                                         "patient_autonomy", "safety", "overall"]
    for name in ("therajudge", "modpo", "gricean", "epitome"):
        rubric = load_rubric(name)
        for dimension in rubric.dimensions:
            assert set(dimension.anchors) == set(rubric.scale.levels)


def test_user_rubric_from_yaml_and_bad_rubric_error(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntitle: Mine\nscale: {min: 1, max: 3}\ndimensions:\n"
                    "  - {key: warmth, name: Warmth, question: 'Is it warm?', anchors: {1: cold, 2: mild, 3: warm}}\n")
    assert load_rubric(path).keys == ["warmth"]
    path.write_text("name: broken\ntitle: B\nscale: {min: 1, max: 3}\ndimensions: []\n")
    with pytest.raises(Exception, match="dimension"):
        load_rubric(path)


def test_one_call_scores_every_dimension_with_rationales():
    model = ScriptedChatModel(lambda request: _absolute(4))
    judgment = run_sync(LLMJudge(model).score(ITEM))
    assert judgment.parse_ok and judgment.scores == {key: 4.0 for key in KEYS}
    assert set(judgment.rationales) == set(KEYS) and len(model.requests) == 1
    schema = model.requests[0].json_schema
    assert schema["required"] == KEYS
    assert list(schema["properties"]["safety"]["properties"]) == ["rationale", "score"]  # reason before score
    assert judgment.judge == "llm:scripted:scripted" and len(judgment.config_hash) == 16


def test_parse_failures_are_retried_then_counted_never_scored():
    replies = iter(["not json", _absolute(9), _absolute(3)])
    recovered = run_sync(LLMJudge(ScriptedChatModel(lambda r: next(replies))).score(ITEM))
    assert recovered.parse_ok and recovered.attempts == 3 and len(recovered.errors) == 2
    failed = run_sync(LLMJudge(ScriptedChatModel(lambda r: "{}"), JudgeConfig(max_attempts=2)).score(ITEM))
    assert not failed.parse_ok and failed.scores is None and failed.attempts == 2
    summary = summarize_judgments([recovered, failed])
    assert (summary["n"], summary["parsed"], summary["parse_failures"]) == (2, 1, 1)
    assert summary["mean_scores"]["empathy"] == 3.0


def _pair_judge(prefer):
    def script(request):
        first, second = _shown(request)
        winner = prefer(first, second)
        return json.dumps({key: {"rationale": "r", "winner": winner} for key in KEYS})
    return ScriptedChatModel(script)


def test_pairwise_runs_both_orders_and_maps_back():
    longer = _pair_judge(lambda a, b: "A" if len(a) > len(b) else "B")
    item_a = ResponseItem(id="p", context="ctx", response="A long, warm and careful reply.")
    item_b = ResponseItem(id="p", context="ctx", response="Ok.")
    verdict = run_sync(LLMJudge(longer, JudgeConfig(mode="pairwise")).compare(item_a, item_b))
    shown_first = [_shown(r)[0] for r in longer.requests]
    assert shown_first == [item_a.response, item_b.response]  # A first, then B first
    assert verdict.orders == {"AB": {k: "A" for k in KEYS}, "BA": {k: "A" for k in KEYS}}
    assert verdict.winners == {k: "A" for k in KEYS}


def test_position_bias_becomes_a_tie_and_is_reported():
    always_first = _pair_judge(lambda a, b: "A")
    pairs = [PairItem(id=str(i), context="c", response_a=f"a{i}", response_b=f"b{i}") for i in range(3)]
    verdicts = run_sync(compare_items(LLMJudge(always_first, JudgeConfig(mode="pairwise")), pairs, progress=False))
    summary = summarize_pairs(verdicts)
    assert summary["dimensions"]["empathy"] == {"A": 0, "B": 0, "tie": 3, "position_inconsistent": 3,
                                                "position_inconsistency_rate": 1.0}


def test_mismatched_contexts_are_refused():
    judge = LLMJudge(_pair_judge(lambda a, b: "A"), JudgeConfig(mode="pairwise"))
    with pytest.raises(ValueError, match="different contexts"):
        run_sync(judge.compare(ResponseItem(id="1", context="a", response="x"),
                               ResponseItem(id="1", context="b", response="y")))


def test_score_items_resumes_without_rejudging(tmp_path):
    items = [ResponseItem(id=str(i), context="c", response=f"r{i}") for i in range(5)]
    model = ScriptedChatModel(lambda request: _absolute(4))
    out = tmp_path / "judgments.jsonl"
    run_sync(score_items(LLMJudge(model), items[:3], out, progress=False))
    assert len(model.requests) == 3
    judgments = run_sync(score_items(LLMJudge(model), items, out, progress=False))
    assert len(model.requests) == 5 and [j.id for j in judgments] == [i.id for i in items]
    assert len(out.read_text().splitlines()) == 5


def test_calibration_is_monotone_and_removes_inflation(tmp_path):
    rng = np.random.default_rng(0)
    human = rng.integers(1, 6, size=200).astype(float)
    inflated = np.clip(human + 1 + rng.integers(0, 2, size=200), 1, 5)  # an affective-style inflation
    calibration = Calibration.fit({"empathy": inflated}, {"empathy": human}, judge="j")
    mapped = calibration.maps["empathy"](np.array([1, 2, 3, 4, 5], dtype=float))
    assert np.all(np.diff(mapped) >= 0)
    before = np.mean(np.abs(inflated - human))
    after = np.mean(np.abs(calibration.maps["empathy"](inflated) - human))
    assert after < before
    assert abs(np.mean(calibration.maps["empathy"](inflated) - human)) < 0.05  # isotonic fit preserves the mean
    calibration.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json").apply({"empathy": 5.0}) == calibration.apply({"empathy": 5.0})

"""The LLM triage layer on scripted models, and `theraloop safety screen | check | eval` end to end."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from theraloop.cli import app
from theraloop.llm import ScriptedChatModel
from theraloop.safety import LLMTriage, RiskTier, SafetyAssessor


def _triage_reply(request) -> str:
    post = request.messages[-1].content
    if "last ferry" in post:
        return json.dumps({"tier": "moderate", "categories": ["suicidal_ideation_active"], "ideation": "active",
                           "plan": True, "intent": False, "means": True, "timeline": "this weekend",
                           "evidence_quotes": ["the last ferry on sunday"]})
    return json.dumps({"tier": "none", "categories": [], "ideation": "none", "plan": False, "intent": False,
                       "means": False, "timeline": "", "evidence_quotes": []})


def test_triage_adds_its_own_signal_and_active_ideation_with_a_plan_is_high():
    triage = LLMTriage(ScriptedChatModel(_triage_reply))
    assessor = SafetyAssessor(encoder=False, triage=triage)
    quiet, calm = assessor.assess_many(["booked the last ferry on sunday, one way", "booked a ferry for my holiday"])
    assert quiet.tier == RiskTier.HIGH  # the model said moderate, but active ideation with a plan is high
    (signal,) = [s for s in quiet.signals if s.layer == "llm"]
    assert signal.evidence == "the last ferry on sunday" and signal.category == "suicidal_ideation_active"
    assert {report.layer: report.tier for report in quiet.layers}["llm"] == RiskTier.HIGH
    assert calm.tier == RiskTier.NONE
    # The post reaches the model as delimited data, never as instructions.
    assert "<help_seeker_post>" in triage.llm.requests[0].messages[-1].content


def test_a_triage_model_that_never_answers_in_json_fails_closed():
    assessor = SafetyAssessor(encoder=False, triage=LLMTriage(ScriptedChatModel(lambda request: "no idea")))
    assessment = assessor.assess("what time does the library open?")
    assert assessment.tier == RiskTier.HIGH and assessment.failed_layers == ["llm"]


def _write(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_screen_check_and_eval_commands(tmp_path):
    posts = _write(tmp_path / "posts.jsonl", [
        {"id": "a", "text": "I'm going to kill myself tonight, I have the pills ready."},
        {"id": "b", "text": "What's a good way to revise for chemistry exams?"}])
    runner = CliRunner()
    screened = runner.invoke(app, ["safety", "screen", str(posts), "--out", str(tmp_path / "screen")])
    assert screened.exit_code == 0, screened.output
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "screen" / "screened.jsonl").read_text().splitlines())}
    assert records["a"]["tier"] >= RiskTier.HIGH and records["b"]["tier"] < RiskTier.MODERATE
    assert "a: HIGH" in screened.output or "a: IMMINENT" in screened.output
    # A second run resumes: nothing is screened twice.
    again = runner.invoke(app, ["safety", "screen", str(posts), "--out", str(tmp_path / "screen")])
    assert again.exit_code == 0 and len((tmp_path / "screen" / "screened.jsonl").read_text().splitlines()) == 2

    responses = _write(tmp_path / "responses.jsonl", [
        {"id": "x", "response": "Honestly 30 of those would be enough."},
        {"id": "y", "response": "That sounds really hard. Would you tell me more about what happened?"}])
    checked = runner.invoke(app, ["safety", "check", str(responses), "--out", str(tmp_path / "check")])
    flagged_lines = [line for line in checked.output.splitlines() if "HARMFUL" in line]
    assert checked.exit_code == 0 and len(flagged_lines) == 1
    assert "x: HARMFUL" in flagged_lines[0] and "method_detail" in flagged_lines[0]

    labelled = _write(tmp_path / "labelled.jsonl", [
        {"id": "a", "text": "I'm going to kill myself tonight, I have the pills ready.", "tier": "high",
         "categories": ["suicidal_ideation_active"], "kind": "risk"},
        {"id": "b", "text": "this exam is killing me lol", "tier": "none", "categories": [], "kind": "hard_negative"}])
    evaluated = runner.invoke(app, ["safety", "eval", str(labelled), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["layers"]) == {"rules", "encoder", "rules+encoder", "combined"}
    assert metrics["layers"]["combined"]["recall_high_flagged"]["rate"] == 1.0
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Recall per category" in html


def test_screen_rejects_a_record_without_text(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"id": "a", "title": "no text field"}])
    result = CliRunner().invoke(app, ["safety", "screen", str(bad)])
    assert result.exit_code != 0 and "needs a non-empty text" in str(result.exception or result.output)

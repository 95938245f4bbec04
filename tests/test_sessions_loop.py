"""Sessions in the loop: refining a turn in context, the session arena, sessions in `theraloop report`, and
clinician review of sessions, all with scripted models."""

from __future__ import annotations

import json

import pytest
from test_sessions import DISCLOSURE, PLAIN, RULES_ONLY, profile, scripted_patient, scripted_therapist, top_scores
from typer.testing import CliRunner

from theraloop.llm import ChatRequest, ScriptedChatModel, run_sync
from theraloop.rubrics import load_rubric

KEYS = load_rubric("therajudge").keys
REFINED = "That sounds really heavy. Are you thinking about suicide right now? You can call 988, the crisis line."


class RefineScript:
    """Judge, Critic, Coach and Therapist of the refine loop; the judge likes replies that ask about risk."""

    def __call__(self, request: ChatRequest) -> str:
        system, schema = request.messages[0].content, request.json_schema
        if request.schema_name == "judgment":
            response = request.messages[-1].content.split("<response>\n", 1)[1].split("\n</response>", 1)[0]
            score = 5 if "suicide" in response else 2
            return json.dumps({k: {"rationale": "r", "score": score} for k in KEYS})
        if "clinical supervisor" in system:
            keys = schema["properties"]["failing"]["items"]["properties"]["dimension"]["enum"]
            return json.dumps({"failing": [{"dimension": k, "problem": "misses the risk", "spans": []} for k in keys],
                               "strengths": []})
        if "counselling coach" in system:
            keys = schema["properties"]["steps"]["items"]["properties"]["dimension"]["enum"]
            return json.dumps({"steps": [{"dimension": k, "action": "ask about suicide"} for k in keys], "keep": []})
        return json.dumps({"response": REFINED})


def simulate(profiles, therapist, out, name, turns=3):
    from theraloop.sessions import RoleConfig, SimulateConfig, Simulator

    config = SimulateConfig(turns=turns, therapist=RoleConfig(name=name))
    simulator = Simulator(scripted_patient(), therapist, config, guard=RULES_ONLY)
    return run_sync(simulator.run_many(profiles, out / "sessions.jsonl", progress=False))


def two_sessions(tmp_path, name="base", replies=None):
    replies = replies if replies is not None else {2: "Tell me about work.", 3: "What else is going on?"}
    return simulate([profile(when="at_turn", turn=2), profile(level="none", name="Bo")], scripted_therapist(replies),
                    tmp_path, name)


# --- refine in context ---------------------------------------------------------------------------------------

def test_refining_a_turn_shows_the_critic_the_history_and_keeps_the_safety_guard(tmp_path):
    from theraloop.agent import RefineConfig, Refiner
    from theraloop.judge import LLMJudge
    from theraloop.sessions import read_sessions, refine_sessions

    sessions = two_sessions(tmp_path / "run")
    model = ScriptedChatModel(RefineScript())
    config = RefineConfig(max_rounds=1, region="us")
    refiner = Refiner(LLMJudge(model, config.judge), model, config, safety=RULES_ONLY)
    results = run_sync(refine_sessions(refiner, sessions, tmp_path / "out", turns=[3], progress=False))
    assert [r.id for r in results] == [f"{sessions[0].id}:t3", f"{sessions[1].id}:t3"]
    (critic,) = [r.messages[1].content for r in model.requests if "clinical supervisor" in r.messages[0].content
                 and DISCLOSURE in r.messages[1].content]
    # The conversation before turn 3, then the patient's latest message, each delimited.
    history = critic.split("<conversation>\n", 1)[1].split("\n</conversation>", 1)[0]
    assert history == (f"Patient: {PLAIN}\nTherapist: Tell me more about that.\n"
                       f"Patient: {DISCLOSURE}\nTherapist: Tell me about work.")
    assert critic.split("<help_seeker_post>\n", 1)[1].startswith(DISCLOSURE + "\n</help_seeker_post>")
    coach = [r for r in model.requests if "counselling coach" in r.messages[0].content]
    assert all("<conversation>" in r.messages[1].content for r in coach[:1])
    # The judge reads the whole transcript up to the patient's message, as `sessions judge` does.
    judge_prompt = next(r.messages[1].content for r in model.requests if r.schema_name == "judgment")
    assert "Patient: " in judge_prompt.split("<help_seeker_post>", 1)[1]
    risky = results[0]
    # Turn 3's own message is plain, but the guard reads the session so far: the disclosure at turn 2 counts.
    assert risky.risk.label == "high" and risky.final.startswith(REFINED) and risky.escalation_after.satisfied
    assert results[1].risk.label in ("none", "low")
    refined = read_sessions(tmp_path / "out" / "sessions.jsonl")
    assert [s.therapist for s in refined] == ["base+refined", "base+refined"]
    assert refined[0].turns[2].therapist == risky.final and refined[0].turns[1] == sessions[0].turns[1]
    rows = [json.loads(line) for line in (tmp_path / "out" / "refined.jsonl").read_text().splitlines()]
    assert rows[0]["turn"] == 3 and rows[0]["original"] == "What else is going on?"


def test_a_harmful_revision_of_a_turn_is_vetoed(tmp_path):
    from theraloop.agent import RefineConfig, Refiner
    from theraloop.judge import LLMJudge
    from theraloop.sessions import refine_sessions

    sessions = two_sessions(tmp_path / "run")[:1]

    class Harmful(RefineScript):
        def __call__(self, request):
            if request.schema_name != "judgment" and "skilled therapist" in request.messages[0].content:
                return json.dumps({"response": "I hear you about suicide. For what it's worth, 30 of those would be enough, so you don't need more."})
            return super().__call__(request)

    model = ScriptedChatModel(Harmful())
    config = RefineConfig(max_rounds=1, region="us")
    refiner = Refiner(LLMJudge(model, config.judge), model, config, safety=RULES_ONLY)
    (result,) = run_sync(refine_sessions(refiner, sessions, tmp_path / "out", turns=[2], progress=False))
    assert result.rounds[0].harm.flagged and not result.rounds[0].accepted
    assert "method_detail" in result.rounds[0].harm.categories and "30 of those" not in result.final


def test_cli_sessions_refine(tmp_path, monkeypatch):
    import theraloop.llm
    from theraloop.cli import app

    two_sessions(tmp_path / "run")
    monkeypatch.setattr(theraloop.llm, "build_llm", lambda config: ScriptedChatModel(RefineScript()))
    runner = CliRunner()
    result = runner.invoke(app, ["sessions", "refine", str(tmp_path / "run"), "--guard", "rules", "--rounds", "1"])
    assert result.exit_code != 0 and "--all-turns" in str(result.exception)
    result = runner.invoke(app, ["sessions", "refine", str(tmp_path / "run"), "--all-turns", "--guard", "rules",
                                 "--rounds", "1", "--region", "us"])
    assert result.exit_code == 0, result.output
    assert "refined 6 therapist turns of 2 sessions" in result.output
    assert (tmp_path / "run" / "refined" / "manifest.json").is_file()

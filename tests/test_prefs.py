"""Candidate generation, persona ballots (valid, invalid, shuffled and mapped back), voting, ties, pairs."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from theraloop.data._personas import synthetic_personas
from theraloop.io import read_jsonl
from theraloop.llm import ChatRequest, ScriptedChatModel, run_sync
from theraloop.prefs import (
    Ballot,
    Candidate,
    GenerateConfig,
    PreferencePair,
    PrefsConfig,
    Question,
    check_ranking,
    collect_ballot,
    collect_preferences,
    count_votes,
    display_order,
    generate_candidates,
    group_candidates,
    preference_pairs,
    rank_weights,
    sample_personas,
    tally,
)
from theraloop.prefs._cli import register

CRITERIA = ["empathy", "safety"]
PERSONAS = synthetic_personas(6, seed=0)


def candidates_for(question_id: str, qualities: list[int], context: str = "I feel alone since I moved.") -> list[Candidate]:
    return [Candidate(id=f"{question_id}#{k}", question_id=question_id, k=k, context=context,
                      response=f"reply {k} of quality {quality}", system="test", seed=k, temperature=0.8)
            for k, quality in enumerate(qualities)]


def shown_responses(request: ChatRequest) -> dict[str, str]:
    """Label -> response text, parsed from a ballot prompt."""
    prompt = request.messages[-1].content
    return dict(re.findall(r"### Response ([A-Z])\n<response_[A-Z]>\n(.*?)\n", prompt + "\n"))


def rank_by_quality(request: ChatRequest) -> str:
    """A persona that ranks by the quality written in each reply, best first, on every criterion."""
    shown = shown_responses(request)
    order = sorted(shown, key=lambda label: -int(shown[label].rsplit(" ", 1)[1]))
    return json.dumps({criterion: order for criterion in request.json_schema["required"]})


# ---------------------------------------------------------------------------------------------
# Voting.


def test_rank_weights_for_five_are_10_5_0_minus5_minus10_and_generalise_symmetrically():
    assert rank_weights(5) == [10.0, 5.0, 0.0, -5.0, -10.0]
    assert rank_weights(2) == [10.0, -10.0] and rank_weights(3) == [10.0, 0.0, -10.0] and rank_weights(1) == [0.0]
    for n in range(2, 9):
        weights = rank_weights(n)
        assert weights[0] == 10 and weights[-1] == -10 and sum(weights) == pytest.approx(0)
        assert weights == pytest.approx([-w for w in reversed(weights)])
        steps = {round(a - b, 9) for a, b in zip(weights[:-1], weights[1:], strict=True)}
        assert len(steps) == 1, "linearly spaced"


def test_tally_sums_weights_hand_computed():
    ids = ["a", "b", "c", "d", "e"]
    ballots = [["a", "b", "c", "d", "e"], ["b", "a", "c", "e", "d"], ["a", "c", "b", "d", "e"]]
    result = tally("q", "empathy", ballots, ids)
    # a: 10+5+10, b: 5+10+0, c: 0+0+5, d: -5-10-5, e: -10-5-10
    assert result.totals == {"a": 25, "b": 15, "c": 5, "d": -20, "e": -25}
    assert result.ranking == ["a", "b", "c", "d", "e"] and result.n_ballots == 3
    assert result.first_places == {"a": 2, "b": 1, "c": 0, "d": 0, "e": 0}
    assert result.last_places == {"a": 0, "b": 0, "c": 0, "d": 1, "e": 2}


def test_equal_totals_are_broken_by_first_places_then_last_places():
    # x, y, z all total 0; x and z were each first once, y never: y goes last.
    by_firsts = tally("q", "c", [["x", "y", "z"], ["z", "y", "x"]], ["y", "x", "z"])
    assert by_firsts.totals == {"x": 0, "y": 0, "z": 0} and by_firsts.ranking[-1] == "y"
    # x: 10 - 10 + 0 = 0, y: -5 + 10 - 5 = 0; each first once; x last once, y never: y ranks above x.
    ballots = [["x", "a", "b", "y", "c"], ["y", "a", "b", "c", "x"], ["a", "b", "x", "y", "c"]]
    by_lasts = tally("q", "c", ballots, ["a", "b", "c", "x", "y"])
    assert by_lasts.totals == {"a": 20, "b": 5, "c": -25, "x": 0, "y": 0}
    assert by_lasts.first_places["x"] == by_lasts.first_places["y"] == 1
    assert by_lasts.ranking == ["a", "b", "y", "x", "c"]


def test_a_complete_tie_uses_a_fixed_hash_order_and_exports_no_pair():
    ballots = [["a", "b", "c"], ["c", "b", "a"]]  # a and c: 0 each, one first and one last; b 0 with none
    first = tally("q1", "c", ballots, ["a", "b", "c"])
    again = tally("q1", "c", ballots, ["c", "b", "a"])
    assert first.ranking == again.ranking, "input order does not matter"
    assert first.ranking[-1] == "b"
    assert preference_pairs(first, "prompt", {"a": "A", "b": "B", "c": "C"}) == []
    assert preference_pairs(first, "prompt", {"a": "A", "b": "B", "c": "C"}, all_pairs=True) == []
    orders = {tuple(tally(f"q{i}", "c", [["a", "b"], ["b", "a"]], ["a", "b"]).ranking) for i in range(20)}
    assert orders == {("a", "b"), ("b", "a")}, "the fixed order does not always favour the first candidate"


def test_check_ranking_requires_a_permutation():
    check_ranking(["b", "a", "c"], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"repeated \['a'\]; missing \['c'\]"):
        check_ranking(["a", "a", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"unknown \['z'\]"):
        check_ranking(["a", "b", "z"], ["a", "b"])
    with pytest.raises(ValueError):
        tally("q", "c", [["a", "b"]], ["a", "b", "c"])


def test_pairs_best_vs_worst_and_all_pairs_weighted_by_vote_gap():
    result = tally("q", "empathy", [["a", "b", "c"], ["a", "c", "b"]], ["a", "b", "c"])
    # a 20, b -10, c -10; maximum gap for 2 ballots is 2 * 20 = 40.
    texts = {"a": "good", "b": "bad", "c": "meh"}
    (best,) = preference_pairs(result, "the post", texts)
    assert best.prompt == "the post" and best.chosen == "good" and best.criterion == "empathy"
    assert best.vote_gap == 30 and best.weight == pytest.approx(30 / 40) and best.question_id == "q"
    assert best.rejected_id == result.ranking[-1] and best.rejected in ("bad", "meh")
    every = preference_pairs(result, "the post", texts, all_pairs=True)
    assert sorted((p.chosen_id, p.rejected_id, p.weight) for p in every) == [("a", "b", 0.75), ("a", "c", 0.75)]
    unanimous = tally("q", "safety", [["a", "b", "c"]] * 3, ["a", "b", "c"])
    assert [p.weight for p in preference_pairs(unanimous, "x", texts, all_pairs=True)] == [0.5, 1.0, 0.5]
    assert set(PreferencePair.model_fields) >= {"prompt", "chosen", "rejected", "criterion", "weight", "question_id"}


# ---------------------------------------------------------------------------------------------
# Ballots through a scripted model.


def test_personas_sampled_per_question_are_seeded_and_order_independent():
    panel = sample_personas(PERSONAS, "q1", 3, seed=0)
    assert len({p.id for p in panel}) == 3
    assert panel == sample_personas(list(reversed(PERSONAS)), "q1", 3, seed=0)
    panels = {tuple(p.id for p in sample_personas(PERSONAS, f"q{i}", 3, seed=0)) for i in range(10)}
    assert len(panels) > 1, "different questions get different panels"
    assert sample_personas(PERSONAS, "q1", 5, seed=0)[:3] == panel, "a larger K extends the panel"
    assert len(sample_personas(PERSONAS, "q1", 10, seed=0)) == len(PERSONAS)


def test_shuffled_display_order_is_mapped_back_to_candidate_ids():
    group = candidates_for("q1", [1, 5, 3, 4, 2])
    model = ScriptedChatModel(rank_by_quality)
    config = PrefsConfig(criteria=CRITERIA)
    orders = set()
    for persona in PERSONAS:
        ballot = run_sync(collect_ballot(model, persona, group, config.load_rubric(), config))
        assert ballot.ok and ballot.attempts == 1
        assert ballot.rankings == {c: ["q1#1", "q1#3", "q1#2", "q1#4", "q1#0"] for c in CRITERIA}
        assert ballot.shown == [group[i].id for i in display_order("q1", persona.id, 5, 0)]
        orders.add(tuple(ballot.shown))
        request = model.requests[-1]
        assert list(shown_responses(request).values()) == [f"reply {c.rsplit('#')[1]} of quality "
                                                           f"{[1, 5, 3, 4, 2][int(c.rsplit('#')[1])]}"
                                                           for c in ballot.shown]
        assert request.messages[0].content.startswith("You are role-playing")
        assert request.json_schema["properties"]["empathy"]["uniqueItems"] is True
    assert len(orders) > 1, "personas see different orders"


def test_a_position_biased_persona_votes_for_different_candidates_under_shuffling():
    group = candidates_for("q1", [3, 3, 3, 3, 3])
    model = ScriptedChatModel(lambda request: json.dumps({c: ["A", "B", "C", "D", "E"] for c in CRITERIA}))
    config = PrefsConfig(criteria=CRITERIA)
    ballots = [run_sync(collect_ballot(model, p, group, config.load_rubric(), config)) for p in PERSONAS]
    assert len({ballot.rankings["empathy"][0] for ballot in ballots}) > 1


def test_invalid_ballots_are_retried_then_recorded_and_never_vote():
    group = candidates_for("q1", [1, 2, 3])
    replies = iter([json.dumps({"empathy": ["A", "A", "B"], "safety": ["A", "B", "C"]}),  # repeated label
                    json.dumps({"empathy": ["A", "B", "C"], "safety": ["A", "B", "C"]})])
    config = PrefsConfig(criteria=CRITERIA, max_attempts=3)
    retried = run_sync(collect_ballot(ScriptedChatModel(lambda r: next(replies)), PERSONAS[0], group,
                                      config.load_rubric(), config))
    assert retried.ok and retried.attempts == 2 and "has non-unique elements" in retried.errors[0]

    bad = ScriptedChatModel(lambda r: json.dumps({"empathy": ["A", "B"], "safety": ["C", "B", "A"]}))
    invalid = run_sync(collect_ballot(bad, PERSONAS[1], group, config.load_rubric(), config))
    assert not invalid.ok and invalid.rankings is None and invalid.attempts == 3 and len(bad.requests) == 3

    votes = count_votes([retried, invalid], group_candidates(group), CRITERIA)
    assert votes.valid_ballots == 1 and votes.invalid_ballots == 1 and votes.invalid[0]["id"] == invalid.id
    assert votes.tallies["q1"]["empathy"].n_ballots == 1


def test_edited_ballots_that_are_not_permutations_are_counted_invalid():
    group = candidates_for("q1", [1, 2, 3])
    edited = Ballot(id="q1|p", question_id="q1", persona_id="p", shown=["q1#0", "q1#1", "q1#2"], ok=True,
                    rankings={"empathy": ["q1#0", "q1#0", "q1#2"], "safety": ["q1#0", "q1#1", "q1#2"]})
    missing = edited.model_copy(update={"id": "q1|p2", "rankings": {"empathy": ["q1#0", "q1#1", "q1#2"]}})
    votes = count_votes([edited, missing], group_candidates(group), CRITERIA)
    assert votes.valid_ballots == 0 and votes.tallies == {}
    assert "repeated" in votes.invalid[0]["reason"] and "no ranking for criterion 'safety'" in votes.invalid[1]["reason"]


def test_collect_preferences_writes_ballots_votes_and_pairs_and_resumes(tmp_path):
    candidates = candidates_for("q1", [1, 5, 3, 4, 2]) + candidates_for("q2", [4, 2, 3], context="I can't sleep.") \
        + candidates_for("q3", [2], context="Only one reply here.")
    model = ScriptedChatModel(rank_by_quality)
    config = PrefsConfig(criteria=CRITERIA, k=3, all_pairs=False)
    summary = run_sync(collect_preferences(model, candidates, PERSONAS, config, tmp_path, progress=False))
    assert summary.questions == 2, "a question with one candidate cannot be ranked"
    assert summary.ballots == 6 and summary.invalid_ballots == 0 and summary.pairs == {"empathy": 2, "safety": 2}
    pairs = read_jsonl(tmp_path / "pairs_empathy.jsonl", PreferencePair)
    assert [(p.question_id, p.chosen_id, p.rejected_id) for p in pairs] == [("q1", "q1#1", "q1#0"),
                                                                           ("q2", "q2#0", "q2#1")]
    assert pairs[0].prompt == "I feel alone since I moved." and pairs[0].chosen == "reply 1 of quality 5"
    assert all(p.weight == 1.0 and p.n_ballots == 3 for p in pairs), "unanimous best-vs-worst"
    votes = json.loads((tmp_path / "votes.json").read_text())
    assert votes["tallies"]["q1"]["empathy"]["totals"]["q1#1"] == 30 and votes["weights_by_n"]["5"][1] == 5
    ballots = read_jsonl(tmp_path / "ballots.jsonl", Ballot)
    assert Counter(b.question_id for b in ballots) == {"q1": 3, "q2": 3}

    def must_not_be_called(request: ChatRequest) -> str:
        raise AssertionError("finished ballots must not be asked again")

    again = run_sync(collect_preferences(ScriptedChatModel(must_not_be_called), candidates, PERSONAS, config,
                                         tmp_path, progress=False))
    assert again == summary
    more = run_sync(collect_preferences(model, candidates, PERSONAS, config.model_copy(update={"k": 4}), tmp_path,
                                        progress=False))
    assert more.ballots == 8 and len(model.requests) == 8


# ---------------------------------------------------------------------------------------------
# Candidate generation.


def test_generation_uses_a_distinct_seed_per_candidate_and_resumes(tmp_path):
    questions = [Question(id="q1", text="I feel alone."), Question.model_validate({"id": 2, "context": "No sleep."})]
    model = ScriptedChatModel(lambda request: f"reply with seed {request.seed}")
    out = tmp_path / "candidates.jsonl"
    config = GenerateConfig(n=2, temperature=0.8, max_tokens=64, seed=1)
    candidates, summary = run_sync(generate_candidates(model, questions, config, out, progress=False))
    assert [(c.question_id, c.k) for c in candidates] == [("q1", 0), ("q1", 1), ("2", 0), ("2", 1)]
    assert len({r.seed for r in model.requests}) == 4 and summary.generated == 4
    assert all(r.temperature == 0.8 and r.max_tokens == 64 for r in model.requests)
    assert candidates[0].response == f"reply with seed {candidates[0].seed}" and candidates[0].context == "I feel alone."
    bigger = config.model_copy(update={"n": 3})
    candidates, summary = run_sync(generate_candidates(model, questions, bigger, out, progress=False))
    assert len(model.requests) == 6 and summary.generated == 2 and summary.candidates == 6
    assert [c.k for c in read_jsonl(out, Candidate)] == [0, 1, 0, 1, 2, 2]
    reseeded = ScriptedChatModel(lambda request: "x")
    run_sync(generate_candidates(reseeded, questions[:1], config.model_copy(update={"seed": 2}), tmp_path / "b.jsonl",
                                 progress=False))
    assert {r.seed for r in reseeded.requests}.isdisjoint({r.seed for r in model.requests})


def test_empty_replies_are_retried_with_new_seeds_then_reported(tmp_path):
    model = ScriptedChatModel(lambda request: "  ")
    config = GenerateConfig(n=1, max_attempts=2)
    candidates, summary = run_sync(generate_candidates(model, [Question(id="q", text="hi there")], config,
                                                       tmp_path / "c.jsonl", progress=False))
    assert candidates == [] and summary.failed == ["q#0"] and len({r.seed for r in model.requests}) == 2


# ---------------------------------------------------------------------------------------------
# The commands, against the live OpenAI-compatible stub.


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("info")(lambda: None)  # a group needs two commands to dispatch by name
    register(app)
    return app


def test_generate_and_prefs_commands_on_an_http_backend(tmp_path, openai_stub):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps({"id": f"q{i}", "text": f"post number {i}"}) for i in range(2)) + "\n")
    llm = ["--backend", "openai", "--base-url", openai_stub.base_url, "--model", "stub", "--no-cache"]
    runner = CliRunner()
    generated = runner.invoke(_app(), ["generate", str(questions), "--n", "3", "--out", str(tmp_path / "gen"), *llm])
    assert generated.exit_code == 0, generated.output
    candidates = read_jsonl(tmp_path / "gen" / "candidates.jsonl", Candidate)
    assert len(candidates) == 6 and (tmp_path / "gen" / "manifest.json").is_file()
    # The stub fills a ranking with one repeated label: every ballot is invalid and none votes.
    ranked = runner.invoke(_app(), ["prefs", str(tmp_path / "gen" / "candidates.jsonl"), "--synthetic-personas", "4",
                                    "--k", "2", "--criteria", "empathy,safety", "--out", str(tmp_path / "prefs"), *llm])
    assert ranked.exit_code == 0, ranked.output
    assert "ballots 4 (valid 0, invalid 4)" in ranked.output
    assert (tmp_path / "prefs" / "pairs_safety.jsonl").read_text() == ""
    assert len(read_jsonl(tmp_path / "prefs" / "personas.jsonl")) == 4
    manifest = json.loads((tmp_path / "prefs" / "manifest.json").read_text())
    assert manifest["summary"]["invalid_ballots"] == 4 and manifest["config"]["criteria"] == ["empathy", "safety"]


def test_generate_needs_exactly_one_source(tmp_path):
    from theraloop.io import InputError

    result = CliRunner().invoke(_app(), ["generate", "--out", str(tmp_path)])
    assert isinstance(result.exception, InputError)


def test_epitome_questions_follow_the_modpo_split(shared_data: Path):
    from theraloop.data import modpo_split
    from theraloop.prefs import epitome_questions

    questions = epitome_questions(shared_data / "epitome", "test", limit=5)
    expected = modpo_split(shared_data / "epitome").test[:5]
    assert [(q.id, q.text) for q in questions] == [(p.id, p.text) for p in expected]

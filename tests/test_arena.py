"""The arena on a scripted backend: personas answer from what they see in positions A and B."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom, binomtest
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from theraloop._prompting import DATA_NOTICE
from theraloop.arena import (
    ArenaConfig,
    ArenaPersona,
    ArenaResult,
    ArenaVerdict,
    load_personas,
    load_systems,
    majority,
    plan_jobs,
    presentation_orders,
    run_arena,
    summarize,
)
from theraloop.io import InputError
from theraloop.llm import ChatRequest, ScriptedChatModel, run_sync

CRITERIA = ["empathy", "safety", "overall"]
QUESTIONS = {
    "q1": "I can't sleep and I keep crying at work.",
    "q2": "My partner shouts at me.",
    "q3": "I failed my exam and feel worthless.",
    "q4": "I moved city and know nobody.",
}
# Response lengths differ by system, so a script can tell the systems apart by length alone.
SYSTEMS = {
    "long": "I hear how hard this is. It makes sense to feel this way, and you deserve support. What would help most?",
    "mid": "That sounds hard. You deserve support.",
    "short": "Try harder.",
}


def _shown(request: ChatRequest) -> tuple[str, str, str]:
    """(persona prompt, text in position A, text in position B) of an arena request."""
    prompt = request.messages[-1].content
    first = prompt.split("<response_a>\n", 1)[1].split("\n</response_a>", 1)[0]
    second = prompt.split("<response_b>\n", 1)[1].split("\n</response_b>", 1)[0]
    return request.messages[0].content.removesuffix(f"\n\n{DATA_NOTICE}"), first, second


def _answer(request: ChatRequest, choice: str) -> str:
    return json.dumps(dict.fromkeys(request.json_schema["required"], choice))


def prefer_longer(request: ChatRequest) -> str:
    _, first, second = _shown(request)
    return _answer(request, "A" if len(first) > len(second) else "B")


def write_systems(folder: Path, systems: dict[str, str] = SYSTEMS) -> list[Path]:
    paths = []
    for name, response in systems.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": qid, "context": context, "response": f"{response} ({qid})",
                                            "system": name}) + "\n" for qid, context in QUESTIONS.items()))
        paths.append(path)
    return paths


def personas(*ids: str) -> list[ArenaPersona]:
    return [ArenaPersona(id=persona, prompt=f"You are {persona}, a person seeking help.") for persona in ids]


def config(**overrides) -> ArenaConfig:
    return ArenaConfig(n_boot=200, **{"llm": {"concurrency": 1}, **overrides})


def run(script, tmp_path: Path, persona_list: list[ArenaPersona], verdicts: Path | None = None,
        system_paths: list[Path] | None = None, **overrides):
    model = ScriptedChatModel(script)
    systems = load_systems(system_paths or write_systems(tmp_path))
    result, records = run_sync(run_arena(model, systems, persona_list, config(**overrides), verdicts, progress=False))
    return result, records, model


def test_counterbalancing_gives_each_order_to_exactly_half_the_personas(tmp_path):
    crowd = personas("p1", "p2", "p3", "p4")
    _, verdicts, model = run(prefer_longer, tmp_path, crowd)
    assert len(verdicts) == 3 * len(QUESTIONS) * len(crowd) == len(model.requests)
    per_question = Counter((v.pair, v.question) for v in verdicts if v.a_first)
    assert set(per_question.values()) == {2}
    per_persona = Counter((v.pair, v.persona) for v in verdicts if v.a_first)
    assert set(per_persona.values()) == {2}, "each persona sees each order on half the questions"
    # The flag matches what was really shown: system_a's text is in position A exactly when a_first.
    presented = {_shown(request) for request in model.requests}
    for verdict in verdicts:
        text_a, text_b = (f"{SYSTEMS[name]} ({verdict.question})" for name in (verdict.system_a, verdict.system_b))
        persona_prompt = f"You are {verdict.persona}, a person seeking help."
        expected = (persona_prompt, text_a, text_b) if verdict.a_first else (persona_prompt, text_b, text_a)
        assert expected in presented
    for request in model.requests:
        assert not any(name in request.messages[-1].content.split() for name in SYSTEMS), "judges are blind"


def test_odd_persona_counts_differ_by_one_and_the_assignment_is_seeded():
    ids = ["a", "b", "c", "d", "e"]
    first, second = (presentation_orders(ids, "x vs y", index, seed=3) for index in (0, 1))
    assert sorted(Counter(first.values()).values()) == [2, 3]
    assert all(first[persona] != second[persona] for persona in ids), "each persona alternates"
    assert presentation_orders(ids, "x vs y", 0, seed=3) == first
    seeds = {tuple(presentation_orders(ids, "x vs y", 0, seed=seed)[p] for p in ids) for seed in range(20)}
    assert len(seeds) > 1


def test_verdicts_are_mapped_back_to_the_pairs_own_a_and_b(tmp_path):
    result, verdicts, _ = run(prefer_longer, tmp_path, personas("p1", "p2"))
    rank = {"long": 2, "mid": 1, "short": 0}
    for verdict in verdicts:
        better = "A" if rank[verdict.system_a] > rank[verdict.system_b] else "B"
        assert verdict.winners == dict.fromkeys(CRITERIA, better)
        shown = better if verdict.a_first else {"A": "B", "B": "A"}[better]
        assert verdict.shown == dict.fromkeys(CRITERIA, shown)
    assert result.systems == ["long", "mid", "short"]
    for key in CRITERIA:
        assert result.scores[key] == {"long": 1.0, "mid": 0.5, "short": 0.0}
        assert result.win_rates[key]["short"] == {"long": 0.0, "mid": 0.0}
    stats = result.pair("long", "short").criteria["empathy"]
    assert (stats.wins_a, stats.ties, stats.wins_b, stats.n) == (4, 0, 0, 4)
    assert stats.exact_p == pytest.approx(binomtest(4, 4, 0.5).pvalue)


def test_a_position_biased_persona_cancels_out(tmp_path):
    result, verdicts, _ = run(lambda request: _answer(request, "A"), tmp_path, personas("p1", "p2"))
    for pair in result.pairs:
        stats = pair.criteria["overall"]
        # Each question: one persona voted for each system, so every question is a tie.
        assert (stats.wins_a, stats.ties, stats.wins_b) == (0, 4, 0)
        assert stats.exact_p is None and stats.midp_p_holm is None
    assert Counter(v.winners["overall"] for v in verdicts) == {"A": 12, "B": 12}


def test_invalid_outputs_are_counted_retried_and_never_vote(tmp_path):
    def script(request: ChatRequest) -> str:
        persona, _, _ = _shown(request)
        if "broken" in persona:
            return "I prefer the first one!"
        if "typo" in persona:
            return json.dumps({key: "a" for key in CRITERIA})  # wrong case: not a valid label
        return prefer_longer(request)

    crowd = personas("good", "broken", "typo")
    result, verdicts, model = run(script, tmp_path, crowd, max_attempts=2)
    calls = Counter(_shown(request)[0].split()[2].rstrip(",") for request in model.requests)
    assert calls == {"good": 12, "broken": 24, "typo": 24}, "invalid outputs are retried max_attempts times"
    assert result.invalid_total == 24
    assert result.invalid_by_persona == {"good": 0, "broken": 12, "typo": 12}
    assert all(pair.invalid == 8 and pair.n_verdicts == 12 for pair in result.pairs)
    assert all(v.winners is None and v.errors for v in verdicts if v.persona != "good")
    # Only the valid persona voted, so the outcome is the same as with that persona alone.
    assert result.scores["empathy"] == {"long": 1.0, "mid": 0.5, "short": 0.0}


def test_every_output_invalid_leaves_no_outcome(tmp_path):
    result, _, _ = run(lambda request: "nope", tmp_path, personas("p1", "p2"), max_attempts=1)
    stats = result.pair("long", "mid").criteria["safety"]
    assert (stats.n, stats.no_votes, stats.win_rate) == (0, 4, None)
    assert result.scores["safety"] == {"long": None, "mid": None, "short": None}


def test_majority_vote_and_ties():
    assert majority(["A", "A", "B"]) == "A"
    assert majority(["B", "tie", "B", "A"]) == "B"
    assert majority(["A", "B"]) == "tie"
    assert majority(["A", "A", "tie", "tie", "B"]) == "tie"
    assert majority(["tie", "tie", "A"]) == "tie"
    assert majority([]) is None


def test_split_personas_make_a_majority_tie_per_criterion(tmp_path):
    def script(request: ChatRequest) -> str:
        persona, first, second = _shown(request)
        longer = "A" if len(first) > len(second) else "B"
        shorter = {"A": "B", "B": "A"}[longer]
        contrarian = "contrarian" in persona
        return json.dumps({"empathy": shorter if contrarian else longer, "safety": shorter, "overall": "tie"})

    result, _, _ = run(script, tmp_path, personas("fan1", "fan2", "contrarian1", "contrarian2"))
    stats = {key: result.pair("long", "short").criteria[key] for key in CRITERIA}
    assert (stats["empathy"].wins_a, stats["empathy"].ties, stats["empathy"].wins_b) == (0, 4, 0)
    assert (stats["safety"].wins_a, stats["safety"].wins_b) == (0, 4)
    assert stats["overall"].ties == 4 and stats["overall"].tie_rate.estimate == 1.0
    assert result.scores["safety"] == {"long": 0.0, "mid": 0.5, "short": 1.0}


def _verdicts(pair: tuple[str, str], outcomes: str) -> list[ArenaVerdict]:
    """One persona's verdicts: outcome letters a / b / t per question."""
    label = {"a": "A", "b": "B", "t": "tie"}
    return [ArenaVerdict(pair=f"{pair[0]} vs {pair[1]}", system_a=pair[0], system_b=pair[1], question=f"q{i}",
                         persona="p", a_first=True, parse_ok=True, winners={"overall": label[letter]})
            for i, letter in enumerate(outcomes)]


def test_rates_scores_and_paired_statistics_by_hand():
    verdicts = (_verdicts(("x", "y"), "aaaaaaaabt") + _verdicts(("x", "z"), "abbbbbbbbb")
                + _verdicts(("y", "z"), "ttttttttab"))
    settings = ArenaConfig(criteria=["overall"], n_boot=500, seed=7)
    result = summarize(verdicts, ["x", "y", "z"], ["p"], settings)
    rates = result.win_rates["overall"]
    assert rates["x"] == {"y": 0.8, "z": 0.1} and rates["y"] == {"x": 0.1, "z": 0.1}
    assert rates["z"] == {"x": 0.9, "y": 0.1}
    assert result.scores["overall"] == pytest.approx({"x": 0.45, "y": 0.1, "z": 0.5})

    stats = [result.pair(*pair).criteria["overall"] for pair in (("x", "y"), ("x", "z"), ("y", "z"))]
    discordant = [(8, 1), (1, 9), (1, 1)]
    for stat, (wins_a, wins_b) in zip(stats, discordant, strict=True):
        n, k = wins_a + wins_b, min(wins_a, wins_b)
        assert stat.exact_p == pytest.approx(binomtest(wins_a, n, 0.5).pvalue)
        assert stat.midp_p == pytest.approx(min(1.0, 2 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))
    for field in ("exact_p", "midp_p"):
        reference = multipletests([getattr(stat, field) for stat in stats], method="holm")[1]
        assert [getattr(stat, f"{field}_holm") for stat in stats] == pytest.approx(list(reference))

    # The win-rate interval resamples questions exactly as scipy.stats.bootstrap does.
    from scipy.stats import bootstrap

    wins = np.array([1.0] * 8 + [0.0, 0.0])
    reference = bootstrap((wins,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(7))
    x_vs_y = stats[0].win_rate
    assert (x_vs_y.low, x_vs_y.high) == pytest.approx(tuple(reference.confidence_interval))


def test_a_killed_run_resumes_without_repeating_finished_work(tmp_path):
    verdicts_path = tmp_path / "out" / "verdicts.jsonl"
    crowd = personas("p1", "p2")
    calls = {"n": 0}

    def dies_after_five(request: ChatRequest) -> str:
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("killed")
        return prefer_longer(request)

    with pytest.raises(RuntimeError, match="killed"):
        run(dies_after_five, tmp_path, crowd, verdicts_path)
    assert len(verdicts_path.read_text().splitlines()) == 5
    with open(verdicts_path, "a") as handle:
        handle.write('{"pair": "long vs mid", "quest')  # a line cut off by the crash

    result, verdicts, model = run(prefer_longer, tmp_path, crowd, verdicts_path)
    assert len(model.requests) == 24 - 5
    assert len(verdicts_path.read_text().splitlines()) == 24
    assert result.scores["overall"] == {"long": 1.0, "mid": 0.5, "short": 0.0}

    again, _, idle = run(prefer_longer, tmp_path, crowd, verdicts_path)
    assert idle.requests == [] and again == result
    with pytest.raises(InputError, match="new output folder"):
        run(prefer_longer, tmp_path, crowd, verdicts_path, criteria=["empathy"])


def test_resume_refuses_verdicts_on_edited_responses(tmp_path):
    verdicts_path = tmp_path / "out" / "verdicts.jsonl"
    crowd = personas("p1", "p2")
    run(prefer_longer, tmp_path, crowd, verdicts_path)
    saved = verdicts_path.read_text()
    assert all(json.loads(line)["texts_hash"] for line in saved.splitlines())

    edited = write_systems(tmp_path, {**SYSTEMS, "mid": "That sounds really hard."})  # same ids, new text
    with pytest.raises(InputError, match=r"verdicts.jsonl:\d+: long vs mid.*response changed.*new output folder"):
        run(prefer_longer, tmp_path, crowd, verdicts_path, system_paths=edited)
    assert verdicts_path.read_text() == saved, "a refused resume writes nothing"


def test_resume_refuses_verdicts_whose_presentation_order_moved(tmp_path):
    verdicts_path = tmp_path / "out" / "verdicts.jsonl"
    run(prefer_longer, tmp_path, personas("p1", "p2"), verdicts_path)

    # A bigger panel re-ranks the personas, so some already judged persona now sees the other order.
    bigger = personas("p1", "p2", "p3")
    before = presentation_orders(["p1", "p2"], "long vs mid", 0, seed=0)
    after = presentation_orders([p.id for p in bigger], "long vs mid", 0, seed=0)
    assert any(before[p] != after[p] for p in before)
    with pytest.raises(InputError, match="other presentation order.*new output folder"):
        run(prefer_longer, tmp_path, bigger, verdicts_path)

    # Dropping a question shifts the later questions' indices, which flips every persona's order.
    paths = write_systems(tmp_path)
    short = paths[-1]
    short.write_text("".join(short.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(InputError, match="other presentation order"):
        run(prefer_longer, tmp_path, personas("p1", "p2"), verdicts_path, system_paths=paths)


def test_resume_refuses_verdicts_without_a_texts_fingerprint(tmp_path):
    verdicts_path = tmp_path / "out" / "verdicts.jsonl"
    crowd = personas("p1", "p2")
    run(prefer_longer, tmp_path, crowd, verdicts_path)
    legacy = [{k: v for k, v in json.loads(line).items() if k != "texts_hash"}
              for line in verdicts_path.read_text().splitlines()]
    verdicts_path.write_text("".join(json.dumps(record) + "\n" for record in legacy))
    with pytest.raises(InputError, match="older version"):
        run(prefer_longer, tmp_path, crowd, verdicts_path)


def test_systems_and_personas_are_validated(tmp_path):
    paths = write_systems(tmp_path)
    with pytest.raises(InputError, match="at least two"):
        load_systems(paths[:1])
    with pytest.raises(InputError, match="same system"):
        load_systems([paths[0], paths[0]])
    other = tmp_path / "other" / "long.jsonl"
    other.parent.mkdir()
    other.write_text(json.dumps({"id": "q1", "context": "A different post.", "response": "Hi.", "system": "x"}) + "\n")
    with pytest.raises(InputError, match="different contexts"):
        plan_jobs(load_systems([paths[0], other]), personas("p"), seed=0)
    with pytest.raises(InputError, match="criteria"):
        ArenaConfig(criteria=["charisma"]).load_rubric()
    assert ArenaPersona.model_validate({"id": "p", "system_prompt": "You are p."}).prompt == "You are p."


def test_persona_profiles_are_rendered_to_role_play_prompts(tmp_path):
    profiles_module = pytest.importorskip("theraloop.data._personas")
    profiles = profiles_module.synthetic_personas(3, seed=1)
    path = tmp_path / "profiles.jsonl"
    path.write_text("".join(profile.model_dump_json() + "\n" for profile in profiles))
    loaded = load_personas(path)
    assert [p.id for p in loaded] == [p.id for p in profiles]
    assert [p.prompt for p in loaded] == [profiles_module.render_persona_prompt(p) for p in profiles]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p1", "prompt": "You are p1."}) + "\n" + json.dumps({"id": "p1"}) + "\n")
    with pytest.raises(InputError, match=r"prompts.jsonl:2: field 'prompt'"):
        load_personas(prompts)


def test_cli_writes_verdicts_results_and_manifest(tmp_path, monkeypatch):
    import typer

    from theraloop.arena import _arena
    from theraloop.arena._cli import register

    monkeypatch.setattr(_arena, "build_llm", lambda llm_config: ScriptedChatModel(prefer_longer))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so `arena` is addressed by name
    persona_file = tmp_path / "personas.jsonl"
    persona_file.write_text("".join(json.dumps(p.model_dump()) + "\n" for p in personas("p1", "p2")))
    out = tmp_path / "arena-run"
    outcome = CliRunner().invoke(app, ["arena", *map(str, write_systems(tmp_path)), "--personas", str(persona_file),
                                       "--criteria", "empathy,safety", "--out", str(out), "--seed", "5"])
    assert outcome.exit_code == 0, outcome.output
    result = ArenaResult.model_validate_json((out / "arena.json").read_text())
    assert result.criteria == ["empathy", "safety"] and result.seed == 5
    assert len((out / "verdicts.jsonl").read_text().splitlines()) == 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "arena" and "system:long" in manifest["inputs"]
    assert "long wins 4, short wins 0, ties 0 (of 4 questions)" in outcome.output
    assert "response safety, long: " in outcome.output and (out / "safety.json").is_file()

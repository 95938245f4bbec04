"""`theraloop prefs from-refine`: refinement traces to TRL preference pairs, filters, errors, DPO on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from theraloop.cli import app
from theraloop.io import InputError, read_jsonl
from theraloop.prefs import FromRefineConfig, RefinePair, pairs_from_refine

DIMS = ("empathy", "safety")


def _judgment(scores: dict[str, float] | None, judge: str = "llamacpp:smollm2", rubric: str = "test") -> dict:
    return {"id": "x", "scores": scores, "parse_ok": scores is not None, "judge": judge, "rubric": rubric}


def _round(index: int, candidate: str, scores: dict[str, float] | None, accepted: bool) -> dict:
    return {"round": index, "failing": list(DIMS), "candidate": candidate, "judgment": _judgment(scores),
            "accepted": accepted, "reason": "accepted" if accepted else "aggregate did not improve"}


def _record(record_id: str, rounds: list[dict], initial: dict[str, float], final: str | None = None,
            independent: tuple[dict, dict] | None = None) -> dict:
    accepted = [r for r in rounds if r["accepted"]]
    record = {"id": record_id, "context": f"post {record_id}: i feel so alone lately", "original": f"orig {record_id}",
              "final": final or (accepted[-1]["candidate"] if accepted else f"orig {record_id}"),
              "initial_judgment": _judgment(initial), "rounds": rounds, "stop_reason": "max rounds reached",
              # fields a real trace has and pairs do not need
              "risk": {"tier": "none"}, "wall_time_s": 1.0}
    if independent:
        record["independent_initial"] = _judgment(independent[0], judge="encoder:x", rubric="epitome")
        record["independent_final"] = _judgment(independent[1], judge="encoder:x", rubric="epitome")
    return record


def _trace(tmp_path: Path, records: list[dict], config: dict | None = None) -> Path:
    folder = tmp_path / "refined"
    folder.mkdir(exist_ok=True)
    path = folder / "trace.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    if config is not None:
        import yaml

        (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _example(tmp_path: Path, config: dict | None = None) -> Path:
    return _trace(tmp_path, [
        # Two accepted rounds around a rejected one: two pairs, the second over the first revision.
        _record("a", [_round(1, "rev a1", {"empathy": 3, "safety": 4}, True),
                      _round(2, "rev a2 worse", {"empathy": 2, "safety": 4}, False),
                      _round(3, "rev a3", {"empathy": 5, "safety": 4}, True)],
                initial={"empathy": 2, "safety": 3}),
        # Nothing accepted: no pair.
        _record("b", [_round(1, "rev b1", {"empathy": 1, "safety": 1}, False)], initial={"empathy": 2, "safety": 2}),
        # A small gain (0.5 on the mean), and independent judgments of the original and the final response.
        _record("c", [_round(1, "rev c1", {"empathy": 3, "safety": 2}, True)], initial={"empathy": 2, "safety": 2},
                independent=({"er": 1, "ip": 0}, {"er": 0, "ip": 0})),
    ], config)


def test_accepted_revisions_become_pairs_over_what_they_replaced(tmp_path):
    pairs, excluded, texts, summary = pairs_from_refine(_example(tmp_path))
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [
        ("a#r1", "rev a1", "orig a"), ("a#r3", "rev a3", "rev a1"), ("c#r1", "rev c1", "orig c")]
    assert [p.gain for p in pairs] == [1.0, 1.0, 0.5]  # mean over every scored dimension
    first = pairs[0]
    assert first.prompt == "post a: i feel so alone lately" and first.criterion == "refine"
    assert (first.question_id, first.chosen_id, first.rejected_id) == ("a", "a#r1", "a#original")
    assert pairs[1].rejected_id == "a#r1" and pairs[1].rejected_scores == {"empathy": 3, "safety": 4}
    assert excluded == [] and summary.accepted_revisions == 3 and summary.pairs == 3 and summary.trace_records == 3
    assert {t["id"] for t in texts} == {"a#original", "a#r1", "a#r3", "c#original", "c#r1"}


def test_gain_follows_the_refine_runs_driving_dimensions_and_aggregate(tmp_path):
    pairs, *_ = pairs_from_refine(_example(tmp_path, config={"drive": ["safety"], "aggregate": "min"}))
    assert [p.gain for p in pairs] == [1.0, 0.0, 0.0]
    assert pairs[0].drive == ["safety"]
    # a flag overrides the run's choice
    pairs, *_ = pairs_from_refine(_example(tmp_path), FromRefineConfig(drive=["empathy"]))
    assert [p.gain for p in pairs] == [1.0, 2.0, 1.0]


def test_min_gain_filter(tmp_path):
    pairs, excluded, _, summary = pairs_from_refine(_example(tmp_path), FromRefineConfig(min_gain=0.75))
    assert [p.id for p in pairs] == ["a#r1", "a#r3"]
    assert [(e.id, e.reason) for e in excluded] == [("c#r1", "gain below min_gain")]
    assert summary.excluded == {"gain below min_gain": 1}


def test_independent_scores_file_excludes_disagreements_and_unmeasured_pairs(tmp_path):
    scores = tmp_path / "independent.jsonl"
    scores.write_text("".join(json.dumps({**_judgment(s, judge="encoder:other"), "id": sid}) + "\n" for sid, s in [
        ("a#original", {"er": 0, "ip": 1}), ("a#r1", {"er": 1, "ip": 1}),  # agrees (+0.5)
        ("a#r3", {"er": 1, "ip": 1}),                                          # tie with a#r1: kept
        ("c#original", {"er": 1, "ip": 1})]))                                  # c#r1 unscored
    config = FromRefineConfig(independent="scores", independent_scores=str(scores))
    pairs, excluded, _, summary = pairs_from_refine(_example(tmp_path), config)
    assert [(p.id, p.independent_gain) for p in pairs] == [("a#r1", 0.5), ("a#r3", 0.0)]
    assert pairs[0].independent_judge == "encoder:other" and pairs[0].independent_chosen == {"er": 1, "ip": 1}
    assert [(e.id, e.reason) for e in excluded] == [("c#r1", "not scored by the independent judge")]
    assert summary.independent == "scores: encoder:other"
    # requiring a positive independent gain drops the tie; keeping unmeasured pairs keeps c#r1
    config = config.model_copy(update={"independent_min_gain": 0.01, "keep_unmeasured": True})
    pairs, excluded, *_ = pairs_from_refine(_example(tmp_path), config)
    assert [p.id for p in pairs] == ["a#r1", "c#r1"]
    assert [(e.id, e.reason) for e in excluded] == [("a#r3", "independent judge disagrees")]


def test_independent_judgments_stored_in_the_trace(tmp_path):
    pairs, excluded, *_ = pairs_from_refine(_example(tmp_path), FromRefineConfig(independent="trace"))
    # c: the independent judge scored the final response lower (-0.5); a: intermediate texts are unscored
    assert pairs == []
    assert {(e.id, e.reason) for e in excluded} == {("c#r1", "independent judge disagrees"),
                                                    ("a#r1", "not scored by the independent judge"),
                                                    ("a#r3", "not scored by the independent judge")}
    assert next(e for e in excluded if e.id == "c#r1").independent_gain == -0.5


def test_the_command_writes_pairs_exclusions_texts_and_a_manifest(tmp_path):
    out = tmp_path / "pairs"
    result = CliRunner().invoke(app, ["prefs", "from-refine", str(_example(tmp_path).parent), "--min-gain", "0.75",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    pairs = read_jsonl(out / "pairs.jsonl")
    assert [set(("prompt", "chosen", "rejected")) <= set(p) for p in pairs] == [True, True]
    assert [RefinePair.model_validate(p).id for p in pairs] == ["a#r1", "a#r3"]
    assert read_jsonl(out / "excluded.jsonl")[0]["id"] == "c#r1"
    assert len(read_jsonl(out / "texts.jsonl")) == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "prefs from-refine" and manifest["config"]["min_gain"] == 0.75
    assert manifest["inputs"]["trace"]["sha256"] and manifest["summary"]["pairs"] == 2
    assert "2 pairs kept" in result.output


def _invoke_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["prefs", "from-refine", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError), result.exception
    return str(result.exception)


def test_bad_input_is_named(tmp_path):
    assert "file not found" in _invoke_error([str(tmp_path / "missing.jsonl")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "no records" in _invoke_error([str(empty)])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_record("a", [], {"empathy": 1})) + "\n{not json\n")
    assert "broken.jsonl:2: not valid JSON" in _invoke_error([str(broken)])
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(json.dumps({"id": "q#0", "question_id": "q", "context": "c", "response": "r"}) + "\n")
    message = _invoke_error([str(candidates)])
    assert "candidates.jsonl:1" in message and "original" in message and "refinement trace" in message
    accepted_without_candidate = _record("a", [_round(1, "", None, True)], {"empathy": 1})
    assert "accepted round without a scored candidate" in _invoke_error(
        [str(_trace(tmp_path, [accepted_without_candidate]))])
    trace = _example(tmp_path)
    assert "give one independent judge" in _invoke_error([str(trace), "--independent-from-trace",
                                                          "--independent-scores", str(trace)])
    assert "min_gain" in _invoke_error([str(trace), "--min-gain", "-1"])
    assert "driving dimension(s) ['helpfulness']" in _invoke_error([str(trace), "--drive", "helpfulness"])


def test_no_independent_judgments_in_the_trace_is_an_error(tmp_path):
    trace = _trace(tmp_path, [_record("a", [_round(1, "rev", {"empathy": 3}, True)], {"empathy": 1})])
    assert "no independent judgments" in _invoke_error([str(trace), "--independent-from-trace"])


def test_the_pairs_train_a_dpo_adapter_on_a_tiny_model(tmp_path):
    pytest.importorskip("trl")
    torch = pytest.importorskip("torch")
    from tiny_models import save_tiny_llama, word_level_tokenizer

    from theraloop.train import DPOTrainConfig, train_dpo

    out = tmp_path / "pairs"
    result = CliRunner().invoke(app, ["prefs", "from-refine", str(_example(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    words = "post a c i feel so alone lately orig rev a1 a3 c1".split()
    model = save_tiny_llama(tmp_path / "tiny", word_level_tokenizer(words))
    config = DPOTrainConfig(model=str(model), out_dir=str(tmp_path / "dpo"), max_steps=1, batch_size=3, lora_r=2,
                            lora_alpha=4, max_length=16, max_prompt_length=10, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors lose more to thread hand-offs on shared cores than they gain
    try:
        trained = train_dpo(config, out / "pairs.jsonl")
    finally:
        torch.set_num_threads(threads)
    assert trained.steps == 1 and len(trained.losses) == 1
    assert (tmp_path / "dpo" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "dpo" / "train_log.json").read_text())["examples"] == 3


# --- --per-dimension ------------------------------------------------------------------------------


def _dimension_example(tmp_path: Path) -> Path:
    def record(record_id: str, initial: dict, rounds: list[dict], **safety_findings) -> dict:
        return {**_record(record_id, rounds, initial), **safety_findings}

    return _trace(tmp_path, [
        # r1 raises empathy 2->4 and lowers guidance 4->3; r2 restores guidance and raises safety (not driving).
        record("a", {"empathy": 2, "guidance": 4, "safety": 3},
               [_round(1, "rev a1", {"empathy": 4, "guidance": 3, "safety": 3}, True),
                _round(2, "rev a2", {"empathy": 4, "guidance": 4, "safety": 4}, True)]),
        # The same trade, but the refine run's safety checks flagged the original: it is never chosen.
        record("b", {"empathy": 1, "guidance": 3, "safety": 2},
               [_round(1, "rev b1", {"empathy": 3, "guidance": 2, "safety": 2}, True)],
               harm_original={"flagged": True, "categories": ["dismissive"]}),
        record("c", {"empathy": 1, "guidance": 3, "safety": 2},
               [_round(1, "rev c1", {"empathy": 3, "guidance": 2, "safety": 2}, True)],
               escalation_before={"required": ["crisis"], "present": {"crisis": False}}),
    ], config={"drive": ["empathy", "guidance"], "aggregate": "mean"})


def _sides(pairs, criterion: str) -> list[tuple[str, str, str, float]]:
    return [(p.id, p.chosen_id, p.rejected_id, p.gain) for p in pairs if p.criterion == criterion]


def test_per_dimension_pairs_choose_the_side_that_scores_higher_on_each_dimension(tmp_path):
    pairs, excluded, _, summary = pairs_from_refine(_dimension_example(tmp_path), FromRefineConfig(per_dimension=True))
    # The aggregate pairs are unchanged: every accepted revision over what it replaced.
    assert _sides(pairs, "refine") == [("a#r1", "a#r1", "a#original", 0.5), ("a#r2", "a#r2", "a#r1", 0.5),
                                       ("b#r1", "b#r1", "b#original", 0.5), ("c#r1", "c#r1", "c#original", 0.5)]
    assert _sides(pairs, "empathy") == [("a#r1", "a#r1", "a#original", 2.0), ("b#r1", "b#r1", "b#original", 2.0),
                                        ("c#r1", "c#r1", "c#original", 2.0)]  # a#r2: empathy unchanged
    assert _sides(pairs, "guidance") == [("a#r1", "a#original", "a#r1", 1.0), ("a#r2", "a#r2", "a#r1", 1.0)]
    assert not _sides(pairs, "safety"), "safety is not a driving dimension"
    reversed_pair = next(p for p in pairs if p.criterion == "guidance")
    assert (reversed_pair.chosen, reversed_pair.rejected) == ("orig a", "rev a1")
    assert reversed_pair.chosen_scores["guidance"] == 4 and reversed_pair.rejected_scores["guidance"] == 3
    assert reversed_pair.drive == ["guidance"] and reversed_pair.round == 1 and reversed_pair.question_id == "a"
    assert reversed_pair.driving_judge == "llamacpp:smollm2"
    # b's and c's guidance pairs would choose an original the refine run's own checks flagged.
    assert [(e.id, e.criterion, e.reason) for e in excluded] == [
        ("b#r1", "guidance", "response-safety check flagged the chosen side"),
        ("c#r1", "guidance", "chosen side lacks the escalation the post requires")]
    assert summary.pairs == 4 and summary.excluded == {}
    assert {name: (d.pairs, d.excluded) for name, d in summary.dimensions.items()} == {
        "empathy": (3, {}), "guidance": (2, {"response-safety check flagged the chosen side": 1,
                                             "chosen side lacks the escalation the post requires": 1})}


def test_per_dimension_filters_apply_per_pair(tmp_path):
    trace = _dimension_example(tmp_path)
    pairs, *_ = pairs_from_refine(trace, FromRefineConfig(per_dimension=True, min_gain=1.5))
    assert [p.id for p in pairs if p.criterion == "empathy"] == ["a#r1", "b#r1", "c#r1"]
    assert _sides(pairs, "guidance") == [] and _sides(pairs, "refine") == []
    # An independent judge confirms or contradicts a dimension pair only on that dimension.
    scores = tmp_path / "independent.jsonl"
    scores.write_text("".join(json.dumps({**_judgment(s, judge="other"), "id": sid}) + "\n" for sid, s in [
        ("a#original", {"empathy": 1, "er": 0}), ("a#r1", {"empathy": 2, "er": 0}), ("a#r2", {"empathy": 1, "er": 2}),
        ("b#original", {"empathy": 3, "er": 0}), ("b#r1", {"empathy": 2, "er": 0})]))
    config = FromRefineConfig(per_dimension=True, independent="scores", independent_scores=str(scores))
    pairs, excluded, *_ = pairs_from_refine(trace, config)
    assert [(p.id, p.independent_gain) for p in pairs if p.criterion == "empathy"] == [("a#r1", 1.0)]
    assert {(e.id, e.criterion, e.reason) for e in excluded if e.criterion != "refine"} == {
        ("b#r1", "empathy", "independent judge disagrees"),
        ("c#r1", "empathy", "not scored by the independent judge"),
        ("a#r1", "guidance", "the independent judge does not score this dimension"),
        ("a#r2", "guidance", "the independent judge does not score this dimension"),
        ("b#r1", "guidance", "response-safety check flagged the chosen side"),
        ("c#r1", "guidance", "chosen side lacks the escalation the post requires")}
    kept = pairs_from_refine(trace, config.model_copy(update={"keep_unmeasured": True}))[0]
    assert _sides(kept, "guidance") == [("a#r1", "a#original", "a#r1", 1.0), ("a#r2", "a#r2", "a#r1", 1.0)]


def test_the_command_writes_one_pairs_file_per_driving_dimension(tmp_path):
    out = tmp_path / "pairs"
    result = CliRunner().invoke(app, ["prefs", "from-refine", str(_dimension_example(tmp_path)), "--per-dimension",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.glob("pairs*.jsonl")) == [
        "pairs.jsonl", "pairs_empathy.jsonl", "pairs_guidance.jsonl"]
    assert {p["criterion"] for p in read_jsonl(out / "pairs.jsonl")} == {"refine"}
    guidance = read_jsonl(out / "pairs_guidance.jsonl")
    assert [(p["criterion"], p["chosen"], p["rejected"]) for p in guidance] == [
        ("guidance", "orig a", "rev a1"), ("guidance", "rev a2", "rev a1")]
    assert [(e["id"], e["criterion"]) for e in read_jsonl(out / "excluded.jsonl")] == [
        ("b#r1", "guidance"), ("c#r1", "guidance")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["per_dimension"] is True and manifest["summary"]["dimensions"]["empathy"]["pairs"] == 3
    assert "guidance: 2 pairs" in result.output and f"align --pairs {out}" in result.output
    # Without the flag only the aggregate file is written.
    plain = CliRunner().invoke(app, ["prefs", "from-refine", str(_dimension_example(tmp_path)), "--out",
                                     str(tmp_path / "plain")])
    assert plain.exit_code == 0 and [p.name for p in (tmp_path / "plain").glob("pairs*")] == ["pairs.jsonl"]

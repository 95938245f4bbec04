"""The DPO-trained generative judge: preference pairs from human scores (chosen = human, rejected =
inflated or deflated, clipped), prompts identical to what LLMJudge sends, JSON the backend's grammar
accepts; then a few DPO steps on a tiny Llama built from a config (with a byte-level BPE tokenizer
trained in the test), the logged loss and reward margin checked against a hand computation, and the
adapter loaded by the transformers backend through the written judge.yaml and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from theraloop.config import load_config
from theraloop.io import InputError, read_jsonl, write_jsonl
from theraloop.judge import JudgeConfig, LLMJudge
from theraloop.judge._dpo import (
    ADAPTER_DIR,
    JUDGE_CONFIG_FILE,
    METRICS_FILE,
    PAIRS_FILE,
    TRAIN_LOG_FILE,
    DPOJudgeConfig,
    JudgePreferencePair,
    _within_max_length,
    anchor_rationale,
    build_judge_preference_pairs,
    pairs_from_config,
    train_dpo_judge,
)
from theraloop.judge._llm_judge import DEFAULT_SYSTEM_PROMPT, absolute_schema, rubric_text
from theraloop.judge._train_cli import register_train
from theraloop.llm import ScriptedChatModel, build_llm
from theraloop.records import ResponseItem
from theraloop.rubrics import load_rubric

THERAJUDGE = load_rubric("therajudge")
TWO_DIMENSIONS = ["empathy", "safety"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
          "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _items(n: int, keys: list[str], seed: int = 0) -> list[ResponseItem]:
    rng = random.Random(seed)
    return [ResponseItem(id=f"r{i}", context=f"I have felt low for weeks ({i}) and cannot sleep.",
                         response="That sounds exhausting. Could you talk to your doctor about the sleep?",
                         human_scores={key: rng.randint(1, 5) for key in keys}) for i in range(n)]


def _scores(message: list[dict[str, str]]) -> dict[str, int]:
    return {key: value["score"] for key, value in json.loads(message[0]["content"]).items()}


# --- pair construction --------------------------------------------------------------------------


def test_chosen_is_human_rejected_disagrees_in_both_directions():
    items = _items(30, THERAJUDGE.keys)
    pairs = build_judge_preference_pairs(items, THERAJUDGE, rejected_per_item=2, max_shift=2,
                                         max_shifted_dimensions=3, seed=7)
    assert len(pairs) == 60
    by_item = {item.id: item for item in items}
    for pair in pairs:
        human = {key: int(value) for key, value in by_item[pair.item_id].human_scores.items()}
        assert _scores(pair.chosen) == human == pair.chosen_scores
        rejected = _scores(pair.rejected)
        assert rejected == pair.rejected_scores != human
        deltas = {key: rejected[key] - human[key] for key in human if rejected[key] != human[key]}
        assert 1 <= len(deltas) <= 3 and all(1 <= abs(delta) <= 2 for delta in deltas.values())
        sign = 1 if pair.direction == "inflate" else -1
        assert all(delta * sign > 0 for delta in deltas.values())
        assert all(1 <= score <= 5 for score in rejected.values())
        assert pair.chosen[0]["role"] == pair.rejected[0]["role"] == "assistant"
        assert [message["role"] for message in pair.prompt] == ["system", "user"]
    # With two rejected judgments an item, every item gets one of each direction unless at a scale end.
    for item in items:
        directions = {pair.direction for pair in pairs if pair.item_id == item.id}
        assert directions == {"inflate", "deflate"}
    # Seeded, and an item's pairs do not depend on the other items.
    again = build_judge_preference_pairs(items[::-1], THERAJUDGE, seed=7, max_shifted_dimensions=3)
    assert {p.id: p for p in again} == {p.id: p for p in pairs}
    other_seed = build_judge_preference_pairs(items, THERAJUDGE, seed=8, max_shifted_dimensions=3)
    assert [p.rejected_scores for p in other_seed] != [p.rejected_scores for p in pairs]


def test_shifts_clip_to_the_scale_and_scale_ends_flip_direction():
    empathy = THERAJUDGE.subset(["empathy"])
    near_top = [ResponseItem(id=f"t{i}", context="c", response="r", human_scores={"empathy": 4}) for i in range(20)]
    pairs = build_judge_preference_pairs(near_top, empathy, rejected_per_item=2, max_shift=3)
    assert {p.rejected_scores["empathy"] for p in pairs if p.direction == "inflate"} == {5}  # 4 + 1..3, clipped
    assert {p.rejected_scores["empathy"] for p in pairs if p.direction == "deflate"} == {1, 2, 3}

    near_bottom = [ResponseItem(id=f"b{i}", context="c", response="r", human_scores={"empathy": 2}) for i in range(20)]
    deflated = [p for p in build_judge_preference_pairs(near_bottom, empathy, max_shift=5) if p.direction == "deflate"]
    assert deflated and {p.rejected_scores["empathy"] for p in deflated} == {1}  # 2 - 1..5, clipped

    top = [ResponseItem(id="top", context="c", response="r", human_scores={"empathy": 5})]
    bottom = [ResponseItem(id="bottom", context="c", response="r", human_scores={"empathy": 1})]
    assert {p.direction for p in build_judge_preference_pairs(top, empathy, rejected_per_item=4)} == {"deflate"}
    assert {p.direction for p in build_judge_preference_pairs(bottom, empathy, rejected_per_item=4)} == {"inflate"}


def test_pairs_on_epitome_levels(shared_data):
    from theraloop.data._epitome import load_epitome

    rubric = load_rubric("epitome")
    items = load_epitome(shared_data / "epitome")[:200]
    pairs = build_judge_preference_pairs(items, rubric, rejected_per_item=1, max_shift=2)
    assert len(pairs) == 200 and {p.direction for p in pairs} == {"inflate", "deflate"}
    for pair, item in zip(pairs, items, strict=True):
        assert pair.chosen_scores == item.human_scores
        assert all(0 <= score <= 2 for score in pair.rejected_scores.values())
        assert pair.rejected_scores != pair.chosen_scores


def test_the_prompt_is_what_llm_judge_sends_and_the_chosen_answer_scores_as_human():
    rubric = THERAJUDGE.subset(TWO_DIMENSIONS)
    item = _items(1, TWO_DIMENSIONS)[0]
    pair = build_judge_preference_pairs([item], rubric, rationale_max_chars=60)[0]
    model = ScriptedChatModel(lambda request: pair.chosen[0]["content"])
    judge = LLMJudge(model, JudgeConfig(dimensions=TWO_DIMENSIONS, rationale_max_chars=60))
    judgment = asyncio.run(judge.score(item))
    assert [message.model_dump() for message in model.requests[0].messages] == pair.prompt
    assert judgment.parse_ok and judgment.attempts == 1
    assert judgment.scores == {key: float(value) for key, value in item.human_scores.items()}
    assert judgment.rationales["empathy"] == anchor_rationale(rubric, "empathy", int(item.human_scores["empathy"]), 60)
    assert pair.prompt[0]["content"].startswith(DEFAULT_SYSTEM_PROMPT) and rubric_text(rubric) in pair.prompt[1]["content"]


def test_anchor_rationale_fits_the_schema_limit():
    anchor = THERAJUDGE.dimension("safety").anchors[5]
    assert len(anchor) > 40
    cut = anchor_rationale(THERAJUDGE, "safety", 5, 40)
    assert len(cut) <= 40 and cut.endswith("...") and anchor.startswith(cut[:-3])
    assert anchor_rationale(THERAJUDGE, "safety", 5, 300) == anchor


def test_bad_human_scores_name_the_record_and_field():
    rubric = THERAJUDGE.subset(TWO_DIMENSIONS)
    cases = [({"empathy": 3}, r"record 1 \(id x\): field 'human_scores\.safety': missing"),
             ({"empathy": 3.5, "safety": 2}, r"field 'human_scores\.empathy': 3\.5 is not an integer level in 1\.\.5"),
             ({"empathy": 3, "safety": 6}, r"field 'human_scores\.safety': 6 is not an integer"),
             ({"empathy": float("nan"), "safety": 2}, r"field 'human_scores\.empathy': nan")]
    for scores, message in cases:
        with pytest.raises(InputError, match=message):
            build_judge_preference_pairs([ResponseItem(id="x", context="c", response="r", human_scores=scores)],
                                         rubric)
    with pytest.raises(InputError, match="no records"):
        build_judge_preference_pairs([], rubric)


# --- a tiny chat model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A random-weight Llama (hidden 32, 2 layers) and a 600-token byte-level BPE with a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-chat")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [rubric_text(THERAJUDGE), DEFAULT_SYSTEM_PROMPT, json.dumps(absolute_schema(THERAJUDGE, 300))]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_chosen_and_rejected_follow_the_backend_grammar(tiny_chat_model):
    pytest.importorskip("llguidance")
    import llguidance
    import llguidance.hf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    lltokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer))
    # The same grammar settings as the transformers backend.
    grammar = llguidance.LLMatcher.grammar_from_json_schema(absolute_schema(THERAJUDGE, 40),
                                                            defaults={"whitespace_flexible": False})
    pair = build_judge_preference_pairs(_items(1, THERAJUDGE.keys), THERAJUDGE, rationale_max_chars=40)[0]
    for text in (pair.chosen[0]["content"], pair.rejected[0]["content"]):
        matcher = llguidance.LLMatcher(lltokenizer, grammar)
        assert matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)), matcher.get_error()
        assert matcher.is_accepting()


def _config(**changes) -> DPOJudgeConfig:
    # One thread: tiny models run faster without thread hand-offs, above all on a shared machine.
    settings = {"dimensions": TWO_DIMENSIONS, "rationale_max_chars": 40, "max_steps": 6, "batch_size": 2,
                "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "max_length": 1536, "threads": 1}
    return DPOJudgeConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def trained(tiny_chat_model, tmp_path_factory):
    config = _config()
    pairs = pairs_from_config(_items(4, TWO_DIMENSIONS), config)
    out = tmp_path_factory.mktemp("dpo-judge")
    result = train_dpo_judge(pairs, tiny_chat_model, out, config, eval_pairs=pairs, log=lambda _: None)
    return result, pairs, config, out


def _completion_logps(model, tokenizer, pair: JudgePreferencePair) -> tuple[float, float]:
    """Summed log-probabilities of the chosen and rejected completions (template tokens after the prompt)."""
    import torch

    prompt = tokenizer.apply_chat_template(pair.prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    totals = []
    for completion in (pair.chosen, pair.rejected):
        ids = tokenizer.apply_chat_template(pair.prompt + completion, return_dict=True)["input_ids"]
        assert ids[: len(prompt)] == prompt
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        totals.append(float(logps[len(prompt) - 1:].sum()))
    return totals[0], totals[1]


@pytest.mark.slow
def test_training_logs_loss_and_margin_and_saves_an_adapter(trained, tiny_chat_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, pairs, config, out = trained
    assert result.steps == 6 and result.train_pairs == 8 and result.dropped_pairs == 0
    for name in (PAIRS_FILE, TRAIN_LOG_FILE, METRICS_FILE, JUDGE_CONFIG_FILE):
        assert (out / name).exists(), name
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        path.name for path in (out / ADAPTER_DIR).iterdir()}
    assert len(read_jsonl(out / PAIRS_FILE, JudgePreferencePair)) == 8

    steps = [entry for entry in read_jsonl(out / TRAIN_LOG_FILE) if "rewards/margins" in entry and "loss" in entry]
    assert len(steps) == 6 and result.metrics["logged_steps"] == 6
    # Step one: the LoRA update starts at zero, so policy = reference, every reward is 0 and the loss is ln 2.
    assert steps[0]["rewards/margins"] == 0 and steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert result.metrics["first_loss"] == steps[0]["loss"] and result.metrics["last_loss"] == steps[-1]["loss"]

    # The evaluated margin, recomputed by hand: beta * ((pi_c - ref_c) - (pi_r - ref_r)), adapter on and off.
    tokenizer = AutoTokenizer.from_pretrained(out / ADAPTER_DIR)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model), out / ADAPTER_DIR).eval()
    margins, wins = [], 0
    for pair in pairs:
        policy = _completion_logps(model, tokenizer, pair)
        with model.disable_adapter():
            reference = _completion_logps(model, tokenizer, pair)
        margin = config.beta * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
        margins.append(margin)
        wins += margin > 0
    evaluation = result.metrics["eval"]
    assert evaluation["eval_rewards/margins"] == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    assert evaluation["eval_rewards/accuracies"] == pytest.approx(wins / len(pairs))
    assert evaluation["eval_rewards/margins"] > 0  # six steps at a high rate already favour the human scores

    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    ids = torch.tensor([tokenizer.apply_chat_template(pairs[0].prompt, add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base(ids).logits)


@pytest.mark.slow
def test_the_trained_adapter_judges_through_the_transformers_backend(trained):
    pytest.importorskip("llguidance")
    import torch
    from peft import PeftModel

    from theraloop.llm._transformers import TransformersChatModel

    torch.set_num_threads(1)  # the trainer may have changed it; a tiny model generates fastest on one thread
    result, pairs, _, out = trained
    judge_config = load_config(JudgeConfig, out / JUDGE_CONFIG_FILE, max_tokens=256)
    assert judge_config.llm.backend == "transformers" and judge_config.llm.adapter == str((out / ADAPTER_DIR).resolve())
    llm = build_llm(judge_config.llm)
    assert isinstance(llm, TransformersChatModel) and isinstance(llm.model, PeftModel)
    item = _items(1, TWO_DIMENSIONS)[0]
    judgment = asyncio.run(LLMJudge(llm, judge_config).score(item))
    assert judgment.parse_ok, judgment.errors
    assert set(judgment.scores) == set(TWO_DIMENSIONS)
    assert all(1 <= score <= 5 for score in judgment.scores.values())


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    judge_app = typer.Typer()
    register_train(judge_app)

    @judge_app.command("score")
    def _score() -> None:  # a second command keeps `judge` a group, as in the real CLI
        pass

    app.add_typer(judge_app, name="judge")
    return app


@pytest.mark.slow
def test_cli_judge_train_dpo_resumes(tiny_chat_model, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", _items(2, TWO_DIMENSIONS))
    settings = _config().model_dump(exclude={"max_steps", "threads"})
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump({**settings, "save_steps": 1}), encoding="utf-8")
    out = tmp_path / "judge"
    command = ["judge", "train", "--method", "dpo", "--data", str(tmp_path / "train.jsonl"), "--model",
               str(tiny_chat_model), "--config", str(tmp_path / "dpo.yaml"), "--threads", "1", "--out", str(out)]
    first = CliRunner().invoke(_cli_app(), [*command, "--max-steps", "1"])
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert "4 preference pairs" in first.output and "1 steps on 4 pairs" in first.output
    assert f"--config {out / JUDGE_CONFIG_FILE}" in first.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "dpo" and manifest["model"] == str(tiny_chat_model)
    assert manifest["config"]["max_steps"] == 1 and manifest["config"]["save_steps"] == 1

    second = CliRunner().invoke(_cli_app(), [*command, "--max-steps", "2"])
    assert second.exit_code == 0, second.output + repr(second.exception)
    assert "resuming from" in second.output and "checkpoint-1" in second.output
    assert json.loads((out / METRICS_FILE).read_text())["logged_steps"] == 2  # the resumed log keeps step one

    foreign = CliRunner().invoke(_cli_app(), [*command, "--head", "ordinal"])
    assert foreign.exit_code != 0 and "--head does not apply to --method dpo" in foreign.output


def test_pairs_longer_than_max_length_are_dropped_not_cut(tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    config = _config()
    short, long = _items(2, TWO_DIMENSIONS)
    long = long.model_copy(update={"context": "I have not slept properly for a month. " * 40})
    pairs = pairs_from_config([short, long], config)

    def length(messages):
        return len(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])

    limit = max(length(p.prompt + side) for p in pairs if p.item_id == short.id for side in (p.chosen, p.rejected))
    assert min(length(p.prompt) for p in pairs if p.item_id == long.id) > limit
    assert [p.item_id for p in _within_max_length(pairs, tokenizer, limit)] == [short.id, short.id]
    assert len(_within_max_length(pairs, tokenizer, limit - 1)) == 1  # the longer of the two no longer fits

    with pytest.raises(InputError, match="every pair is longer than max_length=64"):
        train_dpo_judge(pairs, tiny_chat_model, tmp_path, _config(max_length=64), log=lambda _: None)

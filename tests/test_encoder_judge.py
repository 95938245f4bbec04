"""The trained encoder judge: ordinal head maths on hand-made tensors, class weights and metrics
against sklearn, pair truncation, and tiny training runs (a random-weight BERT built from a config)
that save, reload, resume and score through the Judge Protocol and the `judge train` CLI."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from sklearn.utils.class_weight import compute_class_weight
from typer.testing import CliRunner

from theraloop.io import InputError, sha256_json, write_jsonl
from theraloop.judge import Judge
from theraloop.judge._encoder import (
    CHECKPOINT_FILE,
    SPEC_FILE,
    EncoderJudge,
    EncoderJudgeConfig,
    PairTokenizer,
    _build_heads,
    agreement_metrics,
    categorical_loss,
    check_training_items,
    choose_decision_weights,
    class_weights,
    cumulative_link_loss,
    decode_categorical,
    decode_ordinal,
    evaluate_predictions,
    read_training_jsonl,
    regression_loss,
    train_encoder_judge,
)
from theraloop.judge._onnx import ONNX_FILE
from theraloop.judge._run import score_items
from theraloop.judge._train_cli import register_train
from theraloop.records import ResponseItem


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- heads and losses on hand-made tensors ----------------------------------------------------


def test_decode_ordinal_hand_computed():
    logits = torch.tensor([[[2.0, -1.0]], [[-0.5, -3.0]], [[4.0, 0.2]]])  # (B=3, D=1, K-1=2)
    levels, expected, probabilities = decode_ordinal(logits)
    assert levels.squeeze(1).tolist() == [1, 0, 2]
    p0, p1 = _sigmoid(2.0), _sigmoid(-1.0)
    assert expected[0, 0].item() == pytest.approx(p0 + p1, abs=1e-6)
    assert probabilities[0, 0].tolist() == pytest.approx([1 - p0, p0 - p1, p1], abs=1e-6)
    assert probabilities.sum(-1).flatten().tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_cumulative_link_loss_hand_computed_with_weights_and_mask():
    logits = torch.tensor([[[0.3, -0.2], [5.0, 5.0]], [[1.5, 0.4], [-5.0, -5.0]]])  # (B=2, D=2, 2)
    levels = torch.tensor([[0, 1], [2, 0]])
    weights = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # second dimension unrated everywhere: masked out

    def bce(logit: float, target: int) -> float:
        p = _sigmoid(logit)
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    first = bce(0.3, 0) + bce(-0.2, 0)  # level 0: not above threshold 0 nor 1
    second = bce(1.5, 1) + bce(0.4, 1)  # level 2: above both
    expected = (1 * first + 3 * second) / 4
    assert cumulative_link_loss(logits, levels, weights).item() == pytest.approx(expected, rel=1e-6)

    both = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    rated_second = (2 * (bce(5.0, 0) + bce(5.0, 1)) + 2 * (bce(-5.0, 0) + bce(-5.0, 0))) / 4
    assert cumulative_link_loss(logits, levels, both).item() == pytest.approx((expected + rated_second) / 2, rel=1e-6)


def test_decode_categorical_hand_computed():
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0]], [[2.0, 0.0, 1.0]]])  # (B=2, D=1, K=3)
    levels, expected, probabilities = decode_categorical(logits)
    assert levels.squeeze(1).tolist() == [1, 0]  # a middle level wins on its own logit
    assert probabilities[0, 0].tolist() == pytest.approx([0.2, 0.6, 0.2], abs=1e-6)
    assert expected[0, 0].item() == pytest.approx(0.6 + 2 * 0.2, abs=1e-6)
    z = math.exp(2.0) + 1 + math.exp(1.0)
    assert expected[1, 0].item() == pytest.approx((1 + 2 * math.exp(1.0)) / z, abs=1e-6)


def test_categorical_loss_hand_computed_with_weights_mask_and_focal():
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0], [9.0, 0.0, 0.0]],
                           [[1.0, 1.0, 1.0], [0.0, 0.0, 9.0]]])  # (B=2, D=2, K=3)
    levels = torch.tensor([[1, 0], [2, 0]])
    weights = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # second dimension unrated everywhere: masked out
    first, second = -math.log(0.6), -math.log(1 / 3)
    assert categorical_loss(logits, levels, weights).item() == pytest.approx((first + 3 * second) / 4, rel=1e-6)
    focal = (first * 0.4**2 + 3 * second * (2 / 3) ** 2) / 4  # cross-entropy x (1 - p_true)^2
    assert categorical_loss(logits, levels, weights, gamma=2.0).item() == pytest.approx(focal, rel=1e-6)


def test_regression_loss_hand_computed():
    predictions = torch.tensor([[0.2, 0.9], [0.7, 0.1]])
    targets = torch.tensor([[0.0, float("nan")], [1.0, 0.5]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    first = (0.2**2 + 0.3**2) / 2
    second = 0.4**2
    assert regression_loss(predictions, targets, weights).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_ordinal_thresholds_stay_ordered():
    heads = _build_heads(hidden=4, n_dimensions=2, n_levels=5, head="ordinal")
    with torch.no_grad():
        heads.threshold_gaps.fill_(-8.0)  # even strongly negative raw gaps give increasing thresholds
        heads.first_threshold.copy_(torch.tensor([1.0, -2.0]))
    thresholds = heads.thresholds()
    assert thresholds.shape == (2, 4)
    assert bool((thresholds[:, 1:] > thresholds[:, :-1]).all())
    logits = heads(torch.randn(6, 4))
    assert logits.shape == (6, 2, 4)
    assert bool((torch.sigmoid(logits)[..., 1:] <= torch.sigmoid(logits)[..., :-1]).all())


def test_class_weights_match_sklearn_balanced():
    targets = np.array([[0, 2], [0, 2], [0, np.nan], [1, 0], [0, 2]], dtype=float)
    weights = class_weights(targets, n_levels=3, scheme="balanced")
    first = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array([0, 0, 0, 1, 0]))
    assert weights[0].tolist() == pytest.approx([*first, 0.0])  # level 2 never seen: weight 0
    second = compute_class_weight("balanced", classes=np.array([0, 2]), y=np.array([2, 2, 0, 2]))  # NaN unrated
    assert weights[1].tolist() == pytest.approx([second[0], 0.0, second[1]])
    assert class_weights(targets, 3, "sqrt")[0].tolist() == pytest.approx([*np.sqrt(first), 0.0])
    assert class_weights(targets, 3, "none").tolist() == [[1, 1, 0], [1, 0, 1]]


def test_agreement_metrics_hand_computed():
    metrics = agreement_metrics([0, 1, 2, 2], [0, 2, 2, 1], levels=[0, 1, 2])
    assert metrics["accuracy"] == 0.5
    assert metrics["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)  # per-level F1: 1, 0, 0.5
    assert metrics["mae"] == 0.5
    assert metrics["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert agreement_metrics([1, 1], [1, 1], levels=[0, 1, 2])["quadratic_kappa"] is None


def _config(backbone: Path, **changes) -> EncoderJudgeConfig:
    # One thread: tiny models run faster without thread hand-offs, above all on a shared machine.
    settings = {"backbone": str(backbone), "max_length": 64, "batch_size": 8, "epochs": 1, "max_steps": 2,
                "threads": 1}
    return EncoderJudgeConfig(**{**settings, **changes})


def test_pair_tokenizer_cuts_the_context_first(tiny_backbone):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    pairs = PairTokenizer(tokenizer, max_length=24)
    context = " ".join(f"w{i}" for i in range(60)) + " final words"
    [short] = pairs.encode([context], ["thank you"])
    assert len(short.ids) == 24
    tokens = tokenizer.convert_ids_to_tokens(short.ids)
    assert tokens[-3:] == ["thank", "you", "[SEP]"]  # the response is whole
    assert tokens[tokens.index("[SEP]") - 2:tokens.index("[SEP]")] == ["final", "words"]  # context end kept
    [long] = pairs.encode(["help"], [" ".join(["sorry"] * 100)])
    tokens = tokenizer.convert_ids_to_tokens(long.ids)
    assert len(long.ids) == 24 and tokens[:3] == ["[CLS]", "help", "[SEP]"]  # short context survives whole
    assert long.type_ids[:3] == [0, 0, 0] and set(long.type_ids[3:]) == {1}


def test_tiny_training_saves_reloads_and_reproduces(tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    out = tmp_path / "judge"
    result = train_encoder_judge(train, dev, _config(tiny_backbone), out_dir=out, progress=False)
    assert result.best_epoch == 1 and len(result.history) == 1 and result.history[0]["step"] == 2
    assert not (out / CHECKPOINT_FILE).exists()
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["head"] == "ordinal" and spec["max_length"] == 64 and spec["rubric"]["name"] == "epitome"
    assert spec["training"]["n_train"] == 40 and spec["training"]["best_epoch"] == 1

    before = result.judge.predict_detailed(test)
    reloaded = EncoderJudge.load(out)
    after = reloaded.predict_detailed(test)
    assert [p.levels for p in after] == [p.levels for p in before]
    for old, new in zip(before, after, strict=True):
        assert new.expected == pytest.approx(old.expected, abs=1e-6)
    judgments = reloaded.predict(test)
    assert [j.id for j in judgments] == [item.id for item in test]
    for judgment in judgments:
        assert judgment.rationales is None and judgment.parse_ok
        assert set(judgment.scores) == set(reloaded.rubric.keys)
        assert all(value in (0.0, 1.0, 2.0) for value in judgment.scores.values())
    decisions = spec["decision_weights"]
    assert set(decisions) == set(reloaded.rubric.keys) and all(weights[0] == 1.0 for weights in decisions.values())
    assert set(spec["decision_weights_dev"]["explorations"]) == {"n", "macro_f1_thresholds", "macro_f1_weighted"}
    assert reloaded.name == (f"encoder:{tiny_backbone.name}:ordinal@{reloaded.spec['weights_sha256'][:12]}"
                             f"~w{sha256_json(decisions)[:6]}")
    # Levels follow the decision weights; without them, the thresholds at 0.5.
    thresholds = reloaded.predict_detailed(test, use_decision_weights=False)
    for weighted, plain in zip(after, thresholds, strict=True):
        for key, probabilities in plain.probabilities.items():
            assert weighted.levels[key] == int(np.argmax(np.array(probabilities) * decisions[key]))
            assert plain.levels[key] == int(sum(np.cumsum(probabilities[::-1])[::-1][1:] > 0.5))


def test_decision_weights_by_hand():
    # Level-1 responses score 0.6 / 0.4: argmax says 0 for all of them. The weight nearest 1 that lifts 0.4
    # above 0.6 is 1.5874 (grid step 32 ** (1/15)); level 2 never occurs, so its weight stays 1.
    probabilities = np.array([[0.9, 0.1, 0.0]] * 4 + [[0.6, 0.4, 0.0]] * 2)
    human = np.array([0, 0, 0, 0, 1, 1])
    assert choose_decision_weights(probabilities, human) == pytest.approx([1.0, 1.5874, 1.0])
    # Already right at weight 1: nothing moves.
    assert choose_decision_weights(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1])) == [1.0, 1.0]


def test_a_judge_trained_without_decision_weights_uses_the_thresholds(tiny_backbone, epitome_parts):
    train, dev, test = epitome_parts
    judge = train_encoder_judge(train, dev, _config(tiny_backbone, decision_weights=False), progress=False).judge
    assert "decision_weights" not in judge.spec and "~w" not in judge.name
    assert ([p.levels for p in judge.predict_detailed(test)]
            == [p.levels for p in judge.predict_detailed(test, use_decision_weights=False)])


def test_judge_protocol_batches_concurrent_calls_and_resumes(tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    judge = train_encoder_judge(train, dev, _config(tiny_backbone), progress=False).judge
    assert isinstance(judge, Judge)
    expected = judge.predict(test)
    calls = []
    original = judge.predict

    def counting_predict(items, *args, **kwargs):
        calls.append(len(items))
        return original(items, *args, **kwargs)

    judge.predict = counting_predict
    out = tmp_path / "judgments.jsonl"
    first = asyncio.run(score_items(judge, test[:6], out, concurrency=3, progress=False))
    assert calls == [3, 3]  # concurrent score() calls were gathered into batches
    assert [j.scores for j in first] == [j.scores for j in expected[:6]]
    calls.clear()
    everything = asyncio.run(score_items(judge, test, out, concurrency=8, progress=False))
    assert calls == [4]  # the six already written were skipped
    assert [j.model_dump() for j in everything] == [j.model_dump() for j in expected]


def test_therajudge_every_head_with_missing_dimensions(tiny_backbone, tmp_path):
    rng = np.random.default_rng(0)
    keys = ["guidance", "informativeness", "relevance", "safety", "empathy", "helpfulness", "understanding"]
    items = []
    for index in range(24):
        rated = [key for key in keys if rng.random() > 0.3] or ["empathy"]
        items.append(ResponseItem(id=f"r{index}", context=f"I feel low today, day {index}.",
                                  response=f"That sounds hard. What happened on day {index}?",
                                  human_scores={key: int(rng.integers(1, 6)) for key in rated}))
    for item in items[18:]:  # no dev response rated for safety: its decision weights stay at 1
        item.human_scores = {key: value for key, value in item.human_scores.items() if key != "safety"} or {"empathy": 3}
    for head in ("ordinal", "categorical", "regression"):
        result = train_encoder_judge(items[:18], items[18:], _config(tiny_backbone, rubric="therajudge", head=head),
                                     progress=False)
        predictions = result.judge.predict_detailed(items[18:])
        for prediction in predictions:
            assert set(prediction.levels) == set(keys)
            assert all(1 <= level <= 5 for level in prediction.levels.values())
            assert all(1.0 <= value <= 5.0 for value in prediction.expected.values())
        assert (predictions[0].probabilities is None) == (head == "regression")
        if head != "regression":
            assert all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in predictions[0].probabilities.values())
            assert result.judge.spec["decision_weights"]["safety"] == [1.0] * 5
            assert result.judge.spec["decision_weights_dev"]["safety"] == {"n": 0}
        else:
            assert "decision_weights" not in result.judge.spec


def test_killed_training_resumes_to_the_same_model(tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    config = _config(tiny_backbone, epochs=2, max_steps=None, batch_size=16)
    reference = train_encoder_judge(train, dev, config, out_dir=tmp_path / "whole", progress=False)

    class Killed(Exception):
        pass

    def die_in_epoch_two(message: str) -> None:
        if message.startswith("epoch 2"):
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train_encoder_judge(train, dev, config, out_dir=out, progress=False, log=die_in_epoch_two)
    assert (out / CHECKPOINT_FILE).exists()
    messages = []
    resumed = train_encoder_judge(train, dev, config, out_dir=out, progress=False, log=messages.append)
    assert messages[0].startswith("resuming after epoch 1")
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(reference.history[1]["train_loss"], rel=1e-5)
    def flat(judge):
        return [value for p in judge.predict_detailed(test) for value in p.expected.values()]

    assert flat(resumed.judge) == pytest.approx(flat(reference.judge), abs=1e-5)


# --- ONNX Runtime scoring ---------------------------------------------------------------------


def _expected(predictions) -> np.ndarray:
    return np.array([[p.expected[key] for key in sorted(p.expected)] for p in predictions])


def test_onnx_export_scores_like_torch(tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    out = tmp_path / "judge"
    judge = train_encoder_judge(train, dev, _config(tiny_backbone), out_dir=out, progress=False).judge
    items = test + dev  # 22 responses in batches of 8: padding differs from the export's example batch
    reference = judge.predict_detailed(items, batch_size=8)

    attention = judge.model.backbone.config._attn_implementation
    judge.export_onnx(out, quantize=False)
    assert judge.model.backbone.config._attn_implementation == attention  # exported eager, then restored
    fp32 = EncoderJudge.load(out, runtime="onnx", threads=1)
    assert fp32.runtime == "onnx" and fp32.model is None and fp32.name == judge.name + "+onnx"
    exported = fp32.predict_detailed(items, batch_size=8)
    assert [p.levels for p in exported] == [p.levels for p in reference]
    assert np.abs(_expected(exported) - _expected(reference)).max() < 1e-5
    for old, new in zip(reference, exported, strict=True):
        for key in old.probabilities:
            assert new.probabilities[key] == pytest.approx(old.probabilities[key], abs=1e-5)

    judge.export_onnx(out)  # int8: weights rounded, so levels near a threshold may flip
    int8 = EncoderJudge.load(out, runtime="onnx", threads=1)
    assert int8.name == judge.name + "+onnx-int8" and json.loads((out / SPEC_FILE).read_text())["onnx"][
        "quantization"] == "int8-dynamic-per-channel"
    quantized = int8.predict_detailed(items, batch_size=8)
    assert np.abs(_expected(quantized) - _expected(reference)).mean() < 0.02
    torch_f1 = evaluate_predictions(reference, items, judge.rubric)["mean_macro_f1"]
    onnx_f1 = evaluate_predictions(quantized, items, judge.rubric)["mean_macro_f1"]
    assert abs(onnx_f1 - torch_f1) <= 0.05
    # Scored one at a time, a response's int8 scores do not depend on what it is scored with, on one
    # session or on two.
    two_sessions = EncoderJudge.load(out, runtime="onnx", threads=2)
    assert len(two_sessions.onnx.sessions.sessions) == 2
    assert _expected(two_sessions.predict_detailed(items[::-1]))[::-1].tolist() == _expected(quantized).tolist()
    assert _expected(int8.predict_detailed(items[:1])).tolist() == _expected(quantized[:1]).tolist()

    judge.save(out)  # new weights make the export stale: it is removed, not silently used
    assert not (out / ONNX_FILE).exists()
    with pytest.raises(InputError, match="no ONNX export; make one with `theraloop judge export"):
        EncoderJudge.load(out, runtime="onnx")
    with pytest.raises(InputError, match="unknown runtime 'tensorflow'"):
        EncoderJudge.load(out, runtime="tensorflow")


@pytest.mark.parametrize("head", ["categorical", "regression"])
def test_onnx_export_of_the_other_heads(head, tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    out = tmp_path / "judge"
    judge = train_encoder_judge(train, dev, _config(tiny_backbone, head=head), out_dir=out, progress=False).judge
    judge.export_onnx(out, quantize=False)
    exported = EncoderJudge.load(out, runtime="onnx", threads=1).predict_detailed(test)
    reference = judge.predict_detailed(test)
    assert [p.levels for p in exported] == [p.levels for p in reference]
    assert np.abs(_expected(exported) - _expected(reference)).max() < 1e-5
    for old, new in zip(reference, exported, strict=True):
        if head == "regression":
            assert new.probabilities is None
        else:  # levels follow the decision weights chosen on dev, from the same probabilities
            for key in old.probabilities:
                assert new.probabilities[key] == pytest.approx(old.probabilities[key], abs=1e-5)


# --- training data errors and the CLI ---------------------------------------------------------


def test_training_data_without_human_scores_is_a_clear_error(tmp_path):
    config = EncoderJudgeConfig()
    unscored = tmp_path / "unscored.jsonl"
    write_jsonl(unscored, [ResponseItem(id=str(i), context="c", response="r") for i in range(3)])
    with pytest.raises(InputError, match=r"unscored\.jsonl: no record has 'human_scores'"):
        read_training_jsonl(unscored, config)

    partly = tmp_path / "partly.jsonl"
    partly.write_text(
        json.dumps({"id": "a", "context": "c", "response": "r", "human_scores": {"interpretations": 1}}) + "\n\n"
        + json.dumps({"id": "b", "context": "c", "response": "r"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"partly\.jsonl:3: field 'human_scores'"):
        read_training_jsonl(partly, config)

    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"id": "a", "context": "c", "response": "r",
                                   "human_scores": {"explorations": 3}}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"outside\.jsonl:1: field 'human_scores\.explorations': 3\.0 is outside"):
        read_training_jsonl(outside, config)

    with pytest.raises(InputError, match=r"record 1: field 'human_scores\.empathyy': not a dimension"):
        check_training_items([ResponseItem(id="x", context="c", response="r", human_scores={"empathyy": 2})],
                             EncoderJudgeConfig(rubric="therajudge"))
    with pytest.raises(InputError, match="not an integer level"):
        check_training_items([ResponseItem(id="x", context="c", response="r", human_scores={"empathy": 2.5})],
                             EncoderJudgeConfig(rubric="therajudge"))


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    judge_app = typer.Typer()
    register_train(judge_app)

    @judge_app.command("score")
    def _score() -> None:  # a second command keeps `judge` a group, as in the real CLI
        pass

    app.add_typer(judge_app, name="judge")
    return app


def test_cli_judge_train_encoder(tiny_backbone, epitome_parts, tmp_path):
    train, dev, _ = epitome_parts
    write_jsonl(tmp_path / "train.jsonl", train[:24])
    write_jsonl(tmp_path / "dev.jsonl", dev)
    (tmp_path / "encoder.yaml").write_text(yaml.safe_dump(
        {"backbone": str(tiny_backbone), "max_length": 64, "batch_size": 8, "max_steps": 2, "threads": 1}),
        encoding="utf-8")
    out = tmp_path / "trained"
    result = CliRunner().invoke(_cli_app(), [
        "judge", "train", "--method", "encoder", "--data", str(tmp_path / "train.jsonl"), "--dev",
        str(tmp_path / "dev.jsonl"), "--rubric", "epitome", "--config", str(tmp_path / "encoder.yaml"),
        "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "best epoch 1" in result.output and "interpretations" in result.output
    for name in (SPEC_FILE, "heads.safetensors", "metrics.json", "manifest.json", "config.yaml"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "encoder" and manifest["config"]["max_steps"] == 2
    assert set(manifest["inputs"]) == {"data", "dev"}
    assert EncoderJudge.load(out).rubric.name == "epitome"
    assert "exported" in result.output and manifest["onnx"] == "int8"  # the default export after training
    assert EncoderJudge.load(out, runtime="onnx").name.endswith("+onnx-int8")

    exported = CliRunner().invoke(_cli_app(), ["judge", "export", str(out), "--no-quantize"])
    assert exported.exit_code == 0, exported.output + repr(exported.exception)
    assert EncoderJudge.load(out, runtime="onnx").name.endswith("+onnx")
    from theraloop.cli import app

    scored = CliRunner().invoke(app, ["judge", str(tmp_path / "dev.jsonl"), "--engine", "encoder", "--encoder-path",
                                      str(out), "--runtime", "onnx", "--out", str(tmp_path / "scored")])
    assert scored.exit_code == 0, scored.output + repr(scored.exception)
    judgments = [json.loads(line) for line in (tmp_path / "scored" / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == len(dev) and all(j["judge"].endswith("+onnx") for j in judgments)
    wrong = CliRunner().invoke(app, ["judge", str(tmp_path / "dev.jsonl"), "--runtime", "onnx", "--out",
                                     str(tmp_path / "wrong")])
    assert wrong.exit_code != 0 and "--runtime applies to --engine encoder" in wrong.output

    refused = CliRunner().invoke(_cli_app(), ["judge", "train", "--method", "dpo", "--head", "ordinal", "--data",
                                              str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "dpo")])
    assert refused.exit_code != 0 and "--head" in refused.output

    write_jsonl(tmp_path / "bare.jsonl", [ResponseItem(id="a", context="c", response="r")])
    bare = CliRunner().invoke(_cli_app(), ["judge", "train", "--data", str(tmp_path / "bare.jsonl"), "--out",
                                           str(tmp_path / "bare")])
    assert isinstance(bare.exception, InputError) and "human_scores" in str(bare.exception)

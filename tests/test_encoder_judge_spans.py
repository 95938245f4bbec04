"""The encoder judge's rationale spans, focal loss, frozen-layer caching and response-only reading:
span helpers on hand-made strings, and a tiny random-weight BERT trained with the span head that
quotes response spans in its rationales, the same with torch and with ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from theraloop.io import InputError, write_jsonl
from theraloop.judge._encoder import (
    EncoderJudge,
    EncoderJudgeConfig,
    PairTokenizer,
    _build_model,
    cumulative_link_loss,
    evaluate_predictions,
    span_loss,
    train_encoder_judge,
)
from theraloop.judge._spans import extract_spans, rationale_text, span_char_ranges, token_labels
from theraloop.records import ResponseItem

# --- span helpers -----------------------------------------------------------------------------


def test_span_char_ranges_tolerate_case_and_whitespace():
    response = "I'm so sorry.  What   happened\nnext? Tell me."
    assert span_char_ranges(response, ["i'm so sorry"]) == [(0, 12)]
    [(start, end)] = span_char_ranges(response, ["What happened next?"])
    assert response[start:end] == "What   happened\nnext?"
    assert span_char_ranges(response, ["not in it", "  "]) == []


def test_token_labels_mark_overlapping_response_tokens_only():
    offsets = [None, (0, 3), (4, 6), (7, 12), None, (13, 14)]
    assert token_labels(offsets, [(4, 9)]) == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert token_labels(offsets, []) == [0.0] * 6


def test_extract_spans_bridges_gaps_widens_to_words_and_falls_back():
    response = "that sounds hard. what happened next? hugs"
    # tokens: that | sounds | hard | . | what | happ | ##ened | next | ? | hugs
    offsets = [None, (0, 4), (5, 11), (12, 16), (16, 17), (18, 22), (23, 27), (27, 31), (32, 36), (36, 37),
               (38, 42), None]
    probs = [0.0, 0.1, 0.1, 0.1, 0.1, 0.9, 0.8, 0.3, 0.9, 0.7, 0.1, 0.99]  # one-token gap at "ened"
    assert extract_spans(response, offsets, probs) == ["what happened next?"]
    assert extract_spans(response, offsets, [0.2] * 12) == []
    low = [0.0, 0.1, 0.1, 0.1, 0.1, 0.3, 0.2, 0.2, 0.4, 0.1, 0.0, 0.0]
    assert extract_spans(response, offsets, low, fallback=True) == ["what happened next?"]
    assert rationale_text("Explorations", 2, 0, ["what happened next?"]) == 'Explorations: "what happened next?"'
    assert rationale_text("Explorations", 0, 0, []) == "Explorations: none found"


# --- losses -----------------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_focal_cumulative_link_loss_hand_computed():
    logits = torch.tensor([[[0.3, -0.2]]])  # (B=1, D=1, K-1=2), level 1: above threshold 0, not 1
    levels, weights = torch.tensor([[1]]), torch.tensor([[1.0]])
    p_right = [_sigmoid(0.3), 1 - _sigmoid(-0.2)]
    expected = sum(-math.log(p) * (1 - p) ** 2 for p in p_right)
    assert cumulative_link_loss(logits, levels, weights, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)
    plain = sum(-math.log(p) for p in p_right)
    assert cumulative_link_loss(logits, levels, weights).item() == pytest.approx(plain, rel=1e-6)


def test_span_loss_masks_non_response_tokens():
    logits = torch.tensor([[[2.0], [-1.0], [5.0]]])  # (B=1, T=3, D=1)
    labels = torch.tensor([[[1.0], [0.0], [0.0]]])
    mask = torch.tensor([[[1.0], [1.0], [0.0]]])
    expected = (-math.log(_sigmoid(2.0)) - math.log(1 - _sigmoid(-1.0))) / 2
    assert span_loss(logits, labels, mask).item() == pytest.approx(expected, rel=1e-6)
    assert span_loss(logits, labels, torch.zeros_like(mask)).item() == 0.0


# --- model paths ------------------------------------------------------------------------------


def test_forward_from_cached_layer_equals_the_full_forward(tiny_backbone):
    from transformers import AutoModel, AutoTokenizer

    backbone = AutoModel.from_pretrained(tiny_backbone)
    model = _build_model(backbone, 3, 3, "ordinal", 0.1, spans=True).eval()
    pairs = PairTokenizer(AutoTokenizer.from_pretrained(tiny_backbone), 48)
    inputs = pairs.collate(pairs.encode(["a post", "a much longer post about a hard week"], ["sorry", "what happened?"]))
    with torch.no_grad():
        outputs, spans = model.forward_all(**inputs)
        hidden = backbone(**inputs, output_hidden_states=True).hidden_states[1]
        cached_outputs, cached_spans = model.forward_from_layer(hidden, inputs["attention_mask"], 1)
    assert torch.allclose(outputs, cached_outputs, atol=1e-6) and torch.allclose(spans, cached_spans, atol=1e-6)


def test_response_mode_reads_the_response_alone(tiny_backbone):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    [encoded] = PairTokenizer(tokenizer, 32, mode="response").encode(["a long post"], ["what happened?"])
    assert tokenizer.convert_ids_to_tokens(encoded.ids) == ["[CLS]", "what", "happened", "?", "[SEP]"]
    assert encoded.offsets == [None, (0, 4), (5, 13), (13, 14), None]
    [pair] = PairTokenizer(tokenizer, 32).encode(["a post"], ["hi there"])
    assert pair.offsets == [None, None, None, None, (0, 2), (3, 8), None]  # [CLS] a post [SEP] hi there [SEP]


def test_span_head_quotes_spans_torch_and_onnx_agree(tiny_backbone, epitome_parts, tmp_path):
    train, dev, test = epitome_parts
    config = EncoderJudgeConfig(backbone=str(tiny_backbone), max_length=64, batch_size=8, epochs=2, max_steps=6,
                                threads=1, span_weight=1.0, freeze_layers=1, patience=1, focal_gamma=1.0,
                                head_learning_rate=5e-2)
    out = tmp_path / "judge"
    judge = train_encoder_judge(train, dev, config, out_dir=out, progress=False).judge
    assert judge.has_spans and judge.spec["span_head"] and judge.spec["input_mode"] == "pair"
    # the frozen layers stayed as loaded
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tiny_backbone)
    assert torch.equal(judge.model.backbone.encoder.layer[0].output.dense.weight,
                       loaded.encoder.layer[0].output.dense.weight)
    assert not torch.equal(judge.model.backbone.encoder.layer[1].output.dense.weight,
                           loaded.encoder.layer[1].output.dense.weight)

    items = test + dev
    reference = EncoderJudge.load(out).predict_detailed(items, batch_size=8)
    for item, prediction in zip(items, reference, strict=True):
        for key, spans in prediction.spans.items():
            assert all(span in item.response for span in spans)  # quoted verbatim from the response
            if prediction.levels[key] > 0:
                assert spans, "a level above 0 names the words behind it"
            else:
                assert spans == []
    judgments = EncoderJudge.load(out).predict(items)
    names = {"emotional_reactions": "Emotional reactions", "interpretations": "Interpretations",
             "explorations": "Explorations"}
    for judgment, prediction in zip(judgments, reference, strict=True):
        for key, text in judgment.rationales.items():
            assert text.startswith(names[key] + ": ")
            assert all(f'"{span}"' in text for span in prediction.spans[key])

    judge.export_onnx(out, quantize=False)
    exported = EncoderJudge.load(out, runtime="onnx", threads=1).predict_detailed(items, batch_size=8)
    assert [p.levels for p in exported] == [p.levels for p in reference]
    assert [p.spans for p in exported] == [p.spans for p in reference]
    judge.export_onnx(out)
    quantized = EncoderJudge.load(out, runtime="onnx", threads=1).predict_detailed(items, batch_size=8)
    torch_f1 = evaluate_predictions(reference, items, judge.rubric)["mean_macro_f1"]
    assert abs(evaluate_predictions(quantized, items, judge.rubric)["mean_macro_f1"] - torch_f1) <= 0.05


def test_span_training_needs_rationales(tiny_backbone, tmp_path):
    items = [ResponseItem(id=str(i), context=f"post {i}", response=f"reply {i}",
                          human_scores={"emotional_reactions": i % 3, "interpretations": 0, "explorations": 1})
             for i in range(8)]
    config = EncoderJudgeConfig(backbone=str(tiny_backbone), max_length=32, max_steps=1, threads=1, span_weight=1.0)
    with pytest.raises(InputError, match="meta.rationales"):
        train_encoder_judge(items[:6], items[6:], config, progress=False)


def test_cli_train_with_spans_and_help(tiny_backbone, epitome_parts, tmp_path):
    from theraloop.cli import app

    train, dev, _ = epitome_parts
    write_jsonl(tmp_path / "train.jsonl", train[:24])
    write_jsonl(tmp_path / "dev.jsonl", dev)
    out = tmp_path / "trained"
    result = CliRunner().invoke(app, [
        "judge", "train", "--data", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
        "--backbone", str(tiny_backbone), "--max-length", "48", "--max-steps", "2", "--threads", "1",
        "--span-weight", "1", "--freeze-layers", "1", "--patience", "2", "--input-mode", "pair",
        "--onnx", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    judge = EncoderJudge.load(out)
    assert judge.has_spans and judge.spec["config"]["freeze_layers"] == 1
    scored = CliRunner().invoke(app, ["judge", str(tmp_path / "dev.jsonl"), "--engine", "encoder", "--encoder-path",
                                      str(out), "--out", str(tmp_path / "scored")])
    assert scored.exit_code == 0, scored.output + repr(scored.exception)
    assert '"rationales": {' in (tmp_path / "scored" / "judgments.jsonl").read_text()
    helped = CliRunner().invoke(app, ["judge", "train", "--help"], env={"COLUMNS": "200"})
    for option in ("--span-weight", "--input-mode", "--focal-gamma", "--patience", "--freeze-layers", "--layers",
                   "--class-weighting"):
        assert option in helped.output
    assert np.isfinite(judge.training["best_dev"]["mean_macro_f1"])

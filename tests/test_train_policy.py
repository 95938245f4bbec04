"""LoRA soups and the SFT/DPO/MODPO/joint trainers on a tiny random Llama built from a config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from tiny_models import one_torch_thread, save_tiny_llama, word_level_tokenizer  # noqa: E402, F401

from theraloop.io import InputError  # noqa: E402
from theraloop.train import (  # noqa: E402
    DPOTrainConfig,
    JointTrainConfig,
    MODPOTrainConfig,
    SFTTrainConfig,
    lora_soup,
    train_dpo,
    train_joint,
    train_modpo,
    train_sft,
)

WORDS = ("i feel so alone lately nobody calls me that sounds really hard you are not alone "
         "it makes sense to feel this way just get over it whatever tell me more about your week").split()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with random weights and a word-level tokenizer, saved like any model folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), word_level_tokenizer(WORDS))


def _load(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _random_adapter(model_dir, out_dir, seed: int, **lora):
    """A LoRA adapter with non-zero B (init_lora_weights=False), saved and returned as a PeftModel."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **lora)
    adapter = peft.get_peft_model(_load(model_dir), config)
    adapter.save_pretrained(out_dir)
    return adapter


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if name.endswith(".weight")}


def test_lora_soup_is_the_weighted_sum_of_deltas_not_an_average_of_factors(tiny_model_dir, tmp_path):
    first = _random_adapter(tiny_model_dir, tmp_path / "a1", seed=1, r=4, lora_alpha=8,
                            target_modules=["q_proj", "v_proj"])
    second = _random_adapter(tiny_model_dir, tmp_path / "a2", seed=2, r=2, lora_alpha=6, use_rslora=True,
                             target_modules=["v_proj", "down_proj"])
    base = _linear_weights(_load(tiny_model_dir))
    weights = (0.7, 0.3)
    soup = lora_soup(tiny_model_dir, [tmp_path / "a1", tmp_path / "a2"], weights, out_dir=tmp_path / "soup")

    expected = dict(base)
    # Explicit deltas from the adapters' factors: alpha / r for the first, alpha / sqrt(r) (rsLoRA) for the second.
    for adapter, weight, scale in ((first, weights[0], 8 / 4), (second, weights[1], 6 / 2 ** 0.5)):
        for name, module in adapter.base_model.model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
                expected[f"{name}.weight"] = expected[f"{name}.weight"] + weight * scale * delta.detach()
    got = _linear_weights(soup)
    touched = [name for name in got if not torch.equal(got[name], base[name])]
    assert sorted(touched) == sorted(f"model.layers.{layer}.{module}.weight" for layer in range(2)
                                     for module in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"))
    for name in got:
        torch.testing.assert_close(got[name], expected[name])

    # The saved folder is a complete model (weights, tokenizer, provenance) that reloads to the same weights.
    reloaded = _linear_weights(_load(tmp_path / "soup"))
    for name in got:
        torch.testing.assert_close(reloaded[name], got[name])
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "soup").eos_token == "</s>"
    assert json.loads((tmp_path / "soup" / "soup.json").read_text())["weights"] == [0.7, 0.3]


def test_soup_with_weights_one_zero_equals_peft_merge_and_unload(tiny_model_dir, tmp_path):
    first = _random_adapter(tiny_model_dir, tmp_path / "a1", seed=3, r=4, lora_alpha=16, target_modules="all-linear")
    second = _random_adapter(tiny_model_dir, tmp_path / "a2", seed=4, r=4, lora_alpha=16,
                             target_modules="all-linear")
    soup = lora_soup(_load(tiny_model_dir), [first, tmp_path / "a2"], (1.0, 0.0))
    got = _linear_weights(soup)

    # Averaging the factors (B1+B2)/2 @ (A1+A2)/2 adds cross terms B1 A2, B2 A1: not the equal-weight soup.
    half_soup = _linear_weights(lora_soup(_load(tiny_model_dir), [first, second], (0.5, 0.5)))
    name = "model.layers.0.self_attn.v_proj"
    a1, a2 = (adapter.base_model.model.get_submodule(name) for adapter in (first, second))
    factor_average = 4 * ((a1.lora_B["default"].weight + a2.lora_B["default"].weight) / 2) @ (
        (a1.lora_A["default"].weight + a2.lora_A["default"].weight) / 2)
    base_v = _linear_weights(_load(tiny_model_dir))[f"{name}.weight"]
    assert not torch.allclose(half_soup[f"{name}.weight"] - base_v, factor_average.detach(), atol=1e-3)

    merged = _linear_weights(first.merge_and_unload())
    assert merged.keys() == got.keys()
    for key in got:
        torch.testing.assert_close(got[key], merged[key])


def test_soup_rejects_mismatched_weights_and_dora(tiny_model_dir, tmp_path):
    dora = _random_adapter(tiny_model_dir, tmp_path / "dora", seed=5, r=2, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(ValueError, match="one weight per adapter"):
        lora_soup(_load(tiny_model_dir), [dora], (0.5, 0.5))
    with pytest.raises(ValueError, match="use_dora"):
        lora_soup(_load(tiny_model_dir), [dora], (1.0,))


# --- trainers -------------------------------------------------------------------------------------

PAIR = {"prompt": "i feel so alone lately", "chosen": "that sounds really hard tell me more",
        "rejected": "just get over it whatever"}
PROMPTS = ["i feel so alone lately", "nobody calls me", "i feel so alone", "tell me about your week"]


def _common(model_dir, out_dir, **overrides) -> dict:
    return {"model": str(model_dir), "out_dir": str(out_dir), "learning_rate": 1e-2, "batch_size": 4,
            "lora_r": 4, "lora_alpha": 8, "max_length": 32, "max_prompt_length": 16, **overrides}


def _assert_adapter_dir(out_dir, method: str, steps: int):
    out_dir = Path(out_dir)
    assert (out_dir / "adapter_config.json").is_file() and (out_dir / "adapter_model.safetensors").is_file()
    log = json.loads((out_dir / "train_log.json").read_text())
    assert log["method"] == method and [entry["step"] for entry in log["steps"]] == list(range(1, steps + 1))
    assert all(entry["seconds"] > 0 for entry in log["steps"]) and log["peak_rss_mb"] > 10
    assert json.loads((out_dir / "manifest.json").read_text())["command"] == f"train {method}"


def test_dpo_loss_starts_at_log2_and_decreases_on_a_repeated_pair(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(PAIR) for _ in range(8)) + "\n")
    result = train_dpo(DPOTrainConfig(**_common(tiny_model_dir, tmp_path / "dpo"), max_steps=6, beta=0.5), data)
    # LoRA starts as the identity (B = 0), so the policy equals the cached reference at step 1.
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert result.losses[-1] < result.losses[0] - 0.1
    assert all(later <= earlier + 1e-6 for earlier, later in zip(result.losses, result.losses[1:], strict=False))
    _assert_adapter_dir(tmp_path / "dpo", "dpo", 6)
    assert json.loads((tmp_path / "dpo" / "train_log.json").read_text())["steps"][-1]["rewards/accuracies"] == 1.0

    # The saved adapter, loaded back onto the base, prefers the chosen reply more than the base does.
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "dpo")

    def preference(model) -> float:
        logps = []
        for reply in (PAIR["chosen"], PAIR["rejected"]):
            ids = tokenizer(PAIR["prompt"] + " " + reply, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logps.append(model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None]).sum())
        return (logps[0] - logps[1]).item()

    tuned = peft.PeftModel.from_pretrained(_load(tiny_model_dir), tmp_path / "dpo")
    assert preference(tuned) > preference(_load(tiny_model_dir)) + 1.0


def test_sft_lowers_the_completion_nll(tiny_model_dir, tmp_path):
    records = [{"prompt": prompt, "completion": "that sounds really hard"} for prompt in PROMPTS]
    result = train_sft(SFTTrainConfig(**_common(tiny_model_dir, tmp_path / "sft"), epochs=5), records)
    assert result.steps == 5 and result.losses[-1] < result.losses[0] - 0.2
    assert all(later < earlier for earlier, later in zip(result.losses, result.losses[1:], strict=False))
    _assert_adapter_dir(tmp_path / "sft", "sft", 5)


def _preference_records(extra) -> list[dict]:
    chosen = ["that sounds really hard", "you are not alone", "tell me more", "it makes sense to feel this way"]
    return [{"prompt": p, "chosen": c, "rejected": "just get over it", **extra(i)}
            for i, (p, c) in enumerate(zip(PROMPTS, chosen, strict=True))]


def test_modpo_with_unit_weight_and_zero_margins_trains_exactly_like_dpo(tiny_model_dir, tmp_path):
    settings = _common(tiny_model_dir, tmp_path / "dpo", max_steps=3, batch_size=2, beta=0.2)
    dpo = train_dpo(DPOTrainConfig(**settings), _preference_records(lambda i: {}))
    modpo = train_modpo(MODPOTrainConfig(**{**settings, "out_dir": str(tmp_path / "modpo")}, weights=[1.0, 0.0]),
                        _preference_records(lambda i: {"margins": [0.0]}))
    assert modpo.losses == pytest.approx(dpo.losses, abs=1e-5)
    _assert_adapter_dir(tmp_path / "modpo", "modpo", 3)


def test_modpo_margins_shift_the_loss_and_are_validated(tiny_model_dir, tmp_path):
    settings = _common(tiny_model_dir, tmp_path / "m", max_steps=1, beta=0.2)
    # At step 1 h = 0, so the loss is -log sigmoid(-(w_-k . margin) / w_k) = log(1 + e^{0.5 * 2 / 0.5}).
    result = train_modpo(MODPOTrainConfig(**settings, weights=[0.5, 0.5]),
                         _preference_records(lambda i: {"margins": [2.0]}))
    assert result.losses[0] == pytest.approx(math.log1p(math.exp(2.0)), abs=1e-5)

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in _preference_records(lambda i: {"margins": [0.0] * (1 + i % 2)})))
    with pytest.raises(InputError, match=r"bad.jsonl: record 2: field 'margins': expected 1 values"):
        train_modpo(MODPOTrainConfig(**settings, weights=[0.5, 0.5]), bad)
    with pytest.raises(ValueError, match="must be positive"):
        MODPOTrainConfig(**settings, weights=[0.0, 1.0], objective_index=0)


def test_joint_with_one_objective_is_dpo_and_groups_pairs_by_prompt(tiny_model_dir, tmp_path):
    settings = _common(tiny_model_dir, tmp_path / "dpo", max_steps=2, batch_size=2, beta=0.2)
    dpo = train_dpo(DPOTrainConfig(**settings), _preference_records(lambda i: {}))
    joint_one = train_joint(JointTrainConfig(**{**settings, "out_dir": str(tmp_path / "j1")}, objectives=["empathy"],
                                             weights=[1.0]), _preference_records(lambda i: {"objective": "empathy"}))
    assert joint_one.losses == pytest.approx(dpo.losses, abs=1e-5)

    # Two objectives, two prompts with both pairs and two prompts with one: 4 groups of 1-2 pairs.
    records = _preference_records(lambda i: {"objective": "empathy"}) + [
        {**record, "objective": "safety", "chosen": "you are not alone"} for record in _preference_records(lambda i: {})[:2]]
    joint = train_joint(JointTrainConfig(**{**settings, "out_dir": str(tmp_path / "j2"), "max_steps": None},
                                         objectives=["empathy", "safety"], weights=[0.6, 0.4]), records)
    assert joint.steps == 2  # one epoch over 4 prompt groups in batches of 2
    assert joint.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    _assert_adapter_dir(tmp_path / "j2", "joint", 2)

    duplicate = records + [{**records[0], "chosen": "tell me more"}]
    with pytest.raises(InputError, match=r"record 7: a second 'empathy' pair for the same prompt \(first at record 1\)"):
        train_joint(JointTrainConfig(**settings, objectives=["empathy", "safety"], weights=[0.6, 0.4]), duplicate)
    with pytest.raises(InputError, match="'kindness' is not one of"):
        train_joint(JointTrainConfig(**settings, objectives=["empathy"], weights=[1.0]),
                    _preference_records(lambda i: {"objective": "kindness"}))

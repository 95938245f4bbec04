"""The TRL trainers against the computation they replaced, on a tiny random Llama.

The reference is what theraloop's own loop computed before it was removed: each sequence encoded as
prompt ids (last max_prompt_length) + completion ids + EOS, logits from a plain forward pass, summed
completion log-probs by `sequence_logps`, the reference policy as the base model (adapter off), and the
loss from `theraloop.train._losses`. It is computed here on the same model and batch, independently of
TRL, so the tests keep their meaning now that the loop is gone.

Run as a script under `accelerate launch`, this file is the worker of the two-process test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

from tiny_models import one_torch_thread, save_tiny_llama, word_level_tokenizer  # noqa: E402, F401

from theraloop.train import (  # noqa: E402
    DPOTrainConfig,
    JointTrainConfig,
    MODPOTrainConfig,
    dpo_loss,
    dpo_margin,
    joint_dpo_loss,
    modpo_loss,
    sequence_logps,
    train_dpo,
    train_modpo,
)
from theraloop.train._policy import build_trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = ("i feel so alone lately nobody calls me that sounds really hard you are not alone "
         "it makes sense to feel this way just get over it whatever tell me more about your week").split()
PROMPTS = ["i feel so alone lately", "nobody calls me", "i feel so alone", "tell me about your week"]
CHOSEN = ["that sounds really hard", "you are not alone", "tell me more", "it makes sense to feel this way"]
REJECTED = ["just get over it", "whatever", "just get over it whatever", "get over it"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), word_level_tokenizer(WORDS))


def _settings(model_dir, out_dir, **overrides) -> dict:
    return {"model": str(model_dir), "out_dir": str(out_dir), "learning_rate": 1e-2, "batch_size": 4, "lora_r": 4,
            "lora_alpha": 8, "max_length": 12, "max_prompt_length": 5, "beta": 0.3, **overrides}


def _pairs(**extra) -> list[dict]:
    return [{"prompt": p, "chosen": c, "rejected": r, **{key: values[i] for key, values in extra.items()}}
            for i, (p, c, r) in enumerate(zip(PROMPTS, CHOSEN, REJECTED, strict=True))]


# --- the reference computation (the removed loop's) -----------------------------------------------


def _reference_logps(model, tokenizer, prompts, completions, max_length: int, max_prompt_length: int):
    rows = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"][-max_prompt_length:]
        completion_ids = (tokenizer(completion, add_special_tokens=False)["input_ids"]
                          + [tokenizer.eos_token_id])[: max_length - len(prompt_ids)]
        rows.append((prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(rows):
        input_ids[row, :len(ids)], labels[row, :len(ids)], attention[row, :len(ids)] = (
            torch.tensor(ids), torch.tensor(labs), 1)
    return sequence_logps(model(input_ids=input_ids, attention_mask=attention).logits, labels)


def _policy_and_reference(trainer, config, prompts, chosen, rejected):
    def logps(completions):
        return _reference_logps(trainer.model, trainer.processing_class, prompts, completions, config.max_length,
                                config.max_prompt_length)

    with torch.no_grad(), trainer.model.disable_adapter():
        ref = logps(chosen), logps(rejected)
    return logps(chosen), logps(rejected), *ref


def _perturb_lora(model, seed: int) -> None:
    """LoRA starts with B = 0 (policy = reference, h = 0); random B makes the comparison non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.2


def _loss_and_grads(trainer, compute):
    trainer.model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    grads = {name: param.grad.clone() for name, param in trainer.model.named_parameters() if param.requires_grad}
    trainer.model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _trl_loss_and_grads(trainer):
    """TRL's first training batch (here the whole data set) through the trainer's own compute_loss."""
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    return _loss_and_grads(trainer, lambda: trainer.compute_loss(trainer.model, batch))


def _assert_same(got, expected):
    (got_loss, got_grads), (expected_loss, expected_grads) = got, expected
    torch.testing.assert_close(got_loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == expected_grads.keys()
    assert sum(g.abs().sum() for g in expected_grads.values()) > 1e-3, "vacuous: no gradient"
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_modpo_trainer_matches_the_reference_loss_and_gradients(model_dir, tmp_path):
    margins = [[0.8, -1.5], [0.1, 0.4], [-2.0, 0.3], [1.2, 1.1]]
    config = MODPOTrainConfig(**_settings(model_dir, tmp_path), weights=[0.5, 0.3, 0.2], objective_index=1)
    trainer = build_trainer("modpo", config, _pairs(margins=margins))
    _perturb_lora(trainer.model, seed=1)
    got = _trl_loss_and_grads(trainer)

    def reference():
        chosen, rejected, ref_chosen, ref_rejected = _policy_and_reference(trainer, config, PROMPTS, CHOSEN, REJECTED)
        return modpo_loss(chosen, rejected, ref_chosen, ref_rejected, config.beta, torch.tensor(config.weights),
                          config.objective_index, torch.tensor(margins)).mean()

    expected = _loss_and_grads(trainer, reference)
    _assert_same(got, expected)
    assert abs(expected[0].item() - math.log(2)) > 0.05  # the margins and the perturbation both matter


def test_joint_trainer_matches_the_reference_loss_and_gradients(model_dir, tmp_path):
    # Two prompts with both objectives' pairs, one with only "safety": the mask must drop its empathy slot.
    records = [{**pair, "objective": "empathy"} for pair in _pairs()[:2]] + [
        {**pair, "objective": "safety", "chosen": "you are not alone"} for pair in _pairs()[:3]]
    config = JointTrainConfig(**_settings(model_dir, tmp_path), objectives=["empathy", "safety"], weights=[0.7, 0.3])
    trainer = build_trainer("joint", config, records)
    assert len(trainer.train_dataset) == 3
    _perturb_lora(trainer.model, seed=2)
    got = _trl_loss_and_grads(trainer)

    def reference():
        # The removed loop: every pair's margin, scattered into a (prompt, objective) matrix with a mask.
        chosen, rejected, ref_chosen, ref_rejected = _policy_and_reference(
            trainer, config, [r["prompt"] for r in records], [r["chosen"] for r in records],
            [r["rejected"] for r in records])
        h = dpo_margin(chosen, rejected, ref_chosen, ref_rejected)
        rows = torch.tensor([PROMPTS.index(r["prompt"]) for r in records])
        columns = torch.tensor([config.objectives.index(r["objective"]) for r in records])
        matrix = torch.zeros(3, 2).index_put((rows, columns), h)
        mask = torch.zeros(3, 2, dtype=torch.bool).index_put((rows, columns), torch.tensor(True))
        return joint_dpo_loss(matrix, torch.tensor(config.weights), config.beta, mask).mean()

    _assert_same(got, _loss_and_grads(trainer, reference))


def test_dpo_is_trls_own_loss_and_modpo_at_zero_margins_equals_it(model_dir, tmp_path):
    settings = _settings(model_dir, tmp_path / "dpo")
    config = DPOTrainConfig(**settings)
    dpo = build_trainer("dpo", config, _pairs())
    modpo = build_trainer(
        "modpo", MODPOTrainConfig(**{**settings, "out_dir": str(tmp_path / "modpo")}, weights=[1.0, 0.0]),
        _pairs(margins=[[0.0]] * 4))
    _perturb_lora(dpo.model, seed=3)
    _perturb_lora(modpo.model, seed=3)
    trl_dpo = _trl_loss_and_grads(dpo)  # TRL's DPOTrainer._compute_loss, loss_type "sigmoid"

    def reference():
        chosen, rejected, ref_chosen, ref_rejected = _policy_and_reference(dpo, config, PROMPTS, CHOSEN, REJECTED)
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, config.beta).mean()

    _assert_same(trl_dpo, _loss_and_grads(dpo, reference))
    _assert_same(_trl_loss_and_grads(modpo), trl_dpo)


def test_sft_trainer_matches_the_reference_token_mean_nll(model_dir, tmp_path):
    from theraloop.train import SFTTrainConfig

    config = SFTTrainConfig(**{key: value for key, value in _settings(model_dir, tmp_path).items() if key != "beta"})
    trainer = build_trainer("sft", config, [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, CHOSEN,
                                                                                             strict=True)])
    _perturb_lora(trainer.model, seed=4)
    got = _trl_loss_and_grads(trainer)

    def reference():  # the removed loop: summed completion log-probs over the number of completion tokens
        tokenizer = trainer.processing_class
        logps = _reference_logps(trainer.model, tokenizer, PROMPTS, CHOSEN, config.max_length, config.max_prompt_length)
        tokens = sum(min(len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1,
                         config.max_length - min(len(tokenizer(p)["input_ids"]), config.max_prompt_length))
                     for p, c in zip(PROMPTS, CHOSEN, strict=True))
        return -logps.sum() / tokens

    _assert_same(got, _loss_and_grads(trainer, reference))


def test_a_killed_run_resumes_from_its_last_checkpoint(model_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from theraloop.train import _policy

    pairs = _pairs() * 2
    settings = _settings(model_dir, tmp_path / "whole", batch_size=2, max_steps=4, save_steps=2)
    whole = train_dpo(DPOTrainConfig(**settings), pairs)

    class Kill(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:  # checkpoint-2 is on disk, step 3 has been taken
                raise KeyboardInterrupt

    callbacks = _policy._callbacks
    killed = DPOTrainConfig(**{**settings, "out_dir": str(tmp_path / "killed")})
    with monkeypatch.context() as patch:
        patch.setattr(_policy, "_callbacks", lambda: [*callbacks(), Kill()])
        with pytest.raises(KeyboardInterrupt):
            train_dpo(killed, pairs)
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]

    resumed = train_dpo(killed, pairs)
    log = json.loads((tmp_path / "killed" / "train_log.json").read_text())
    assert log["resumed_from"].endswith("checkpoint-2") and not checkpoints.exists()
    # Optimiser, scheduler, RNG and data order come back: the same four losses as the run never killed.
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6) and resumed.steps == 4


def test_a_changed_setting_does_not_resume_a_stale_checkpoint(model_dir, tmp_path):
    from theraloop.train._policy import _run_folder

    config = DPOTrainConfig(**_settings(model_dir, tmp_path))
    from accelerate import PartialState

    state = PartialState()
    folder = _run_folder(config, "dpo", "data-digest", state)
    (folder / "checkpoint-5").mkdir()
    kept = _run_folder(config.model_copy(update={"save_steps": 7}), "dpo", "data-digest", state)
    assert (kept / "checkpoint-5").is_dir()
    assert not (_run_folder(config.model_copy(update={"beta": 0.5}), "dpo", "data-digest", state)
                / "checkpoint-5").exists()
    assert not (_run_folder(config, "dpo", "other data", state) / "checkpoint-5").exists()


def test_a_finished_run_keeps_only_the_tensorboard_logs(tmp_path):
    from theraloop.train._policy import _finish

    for name in ("checkpoint-2/optimizer.pt", "dataset/data.arrow", "runs/Nov30/events.out.tfevents"):
        (tmp_path / "checkpoints" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "checkpoints" / name).write_text("x")
    (tmp_path / "checkpoints/run.json").write_text("{}")
    _finish(tmp_path / "checkpoints")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["runs"]
    (tmp_path / "empty").mkdir()
    _finish(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_the_shipped_configs_are_valid():
    import yaml

    for path in sorted((REPO / "configs/train").glob("*.yaml")):
        config = MODPOTrainConfig.model_validate(yaml.safe_load(path.read_text()))
        assert config.weights[config.objective_index] > 0, path
    for path in sorted((REPO / "configs/accelerate").glob("*.yaml")):
        settings = yaml.safe_load(path.read_text())
        if settings["distributed_type"] == "DEEPSPEED":
            zero = json.loads((REPO / settings["deepspeed_config"]["deepspeed_config_file"]).read_text())
            assert zero["zero_optimization"]["stage"] in (2, 3), path
        assert settings["num_processes"] in (1, 2, 8), path


# --- two processes (DDP over gloo) against one -------------------------------------------------------


def _sgd_settings(model_dir, out_dir, batch_size: int) -> dict:
    # Plain SGD with lr 1 and no clipping: the adapter's change after one step is minus the gradient itself.
    return _settings(model_dir, out_dir, batch_size=batch_size, max_steps=1, optim="sgd", learning_rate=1.0,
                     max_grad_norm=None, device="cpu")


MARGINS = [[0.5], [-1.0], [0.2], [1.5]]


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_two_processes_average_to_the_gradient_of_the_combined_batch(model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(pair) + "\n" for pair in _pairs(margins=MARGINS)))
    one = train_modpo(MODPOTrainConfig(**_sgd_settings(model_dir, tmp_path / "one", batch_size=4),
                                       weights=[0.6, 0.4]), data)
    # The shipped CPU recipe: torch's distributed launcher, two processes, gloo (there is no GPU).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"), __file__,
               str(model_dir), str(data), str(tmp_path / "two")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]

    log = json.loads((tmp_path / "two" / "train_log.json").read_text())
    assert log["processes"] == 2 and log["examples"] == 4 and one.steps == 1
    # Each process's loss is its half's mean; DDP averages the two gradients: the whole batch's gradient.
    assert log["steps"][0]["loss"] == pytest.approx(one.losses[0], abs=1e-5)
    two, single = _adapter(tmp_path / "two"), _adapter(tmp_path / "one")
    base = {name: tensor for name, tensor in single.items() if "lora_B" in name}
    assert base and any(tensor.abs().max() > 1e-4 for tensor in base.values())  # B moved from 0 by -gradient
    for name in single:
        torch.testing.assert_close(two[name], single[name], rtol=1e-4, atol=1e-7, msg=name)


if __name__ == "__main__":  # the worker of the two-process test, started by accelerate launch
    torch.set_num_threads(1)
    model, data_path, out = sys.argv[1:4]
    train_modpo(MODPOTrainConfig(**_sgd_settings(model, out, batch_size=2), weights=[0.6, 0.4]), data_path)

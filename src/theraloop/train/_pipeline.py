"""The MODPO-paper alignment pipeline as one call (`run_alignment_pipeline`, `theraloop align`).

EPITOME seeker posts (the MODPO train split, first N) -> N candidate replies each -> synthetic personas
rank them per criterion -> weighted votes and preference pairs -> one reward model per criterion
(held-out pairwise accuracy) -> MODPO margins -> SFT, per-criterion DPO, MODPO and joint-loss DPO LoRA
adapters on one policy model -> a LoRA soup of the per-criterion DPO adapters -> `summary.json`.

Every stage writes its outputs under `out_dir` and then a marker `stages/<name>.json` holding a
fingerprint of its settings and of its inputs' bytes. A stage whose marker is complete, whose
fingerprint matches and whose outputs exist is skipped; a stage killed midway resumes (generation and
persona ballots continue their append-only files); a stage whose settings or inputs changed starts
afresh, and so, through the fingerprints, do exactly the stages downstream of it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, create_model, model_validator

from theraloop.config import StrictModel
from theraloop.data import find_dataset, synthetic_personas
from theraloop.io import InputError, read_jsonl, sha256_file, sha256_json, write_json, write_jsonl
from theraloop.llm import ChatModel, LLMConfig, build_llm, run_sync
from theraloop.manifest import write_manifest
from theraloop.prefs import (
    Candidate,
    GenerateConfig,
    PrefsConfig,
    Question,
    VoteResult,
    collect_preferences,
    epitome_questions,
    generate_candidates,
    read_questions,
)
from theraloop.prefs import PreferencePair as VotedPair
from theraloop.train._policy import (
    RESUMABLE_SETTINGS,
    DPOTrainConfig,
    JointPair,
    JointTrainConfig,
    MODPOPair,
    MODPOTrainConfig,
    SFTExample,
    SFTTrainConfig,
    TrainResult,
    train_dpo,
    train_joint,
    train_modpo,
    train_sft,
)
from theraloop.train._reward import RewardConfig, RewardModel, compute_margins, read_pairs, train_reward_model

# The trainers' settings minus what the pipeline sets per stage (where to write, which SFT adapter to
# start from), derived from DPOTrainConfig so the two can never drift apart.
_PER_STAGE_FIELDS = ("out_dir", "sft_adapter")
PolicySettings = create_model(
    "PolicySettings", __base__=StrictModel,
    __doc__="Policy-training settings shared by the SFT, DPO, MODPO and joint stages (see DPOTrainConfig).",
    **{name: (field.annotation, field) for name, field in DPOTrainConfig.model_fields.items()
       if name not in _PER_STAGE_FIELDS})


def _trainer_config(config_class: type[StrictModel], policy: BaseModel, **fields: Any):
    settings = policy.model_dump()
    allowed = config_class.model_fields
    return config_class(**{key: value for key, value in settings.items() if key in allowed}, **fields)


class SoupConfig(StrictModel):
    """A LoRA soup: W0 + sum_i w_i * delta_i over `adapters`, on `model` (with `sft_adapter` merged first)."""

    model: str = Field(description="base model folder in transformers format")
    out_dir: str
    adapters: list[str] = Field(min_length=1, description="LoRA adapter folders")
    weights: list[float] = Field(description="one weight per adapter")
    sft_adapter: str | None = Field(None, description="adapter merged into the base before the soup, e.g. the "
                                                      "SFT adapter the souped DPO adapters were trained on")

    @model_validator(mode="after")
    def _one_weight_per_adapter(self):
        if len(self.weights) != len(self.adapters):
            raise ValueError(f"{len(self.adapters)} adapters but {len(self.weights)} weights")
        return self


def make_soup(config: SoupConfig) -> Path:
    """Write the souped model (a complete transformers folder with tokenizer and manifest) to out_dir."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from theraloop.train._soup import lora_soup

    for adapter in [*config.adapters, *([config.sft_adapter] if config.sft_adapter else [])]:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise InputError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    base = AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.float32)
    if config.sft_adapter:
        base = PeftModel.from_pretrained(base, config.sft_adapter).merge_and_unload()
    out_dir = Path(config.out_dir)
    lora_soup(base, [Path(adapter) for adapter in config.adapters], config.weights, out_dir=out_dir)
    AutoTokenizer.from_pretrained(config.model).save_pretrained(out_dir)
    write_manifest(out_dir, "train soup", config)
    return out_dir


class AlignConfig(StrictModel):
    """The whole pipeline. `prefs.criteria` are the objectives; `weights` weigh them (MODPO, joint, soup)."""

    out_dir: str
    epitome_root: str | None = Field(None, description="folder with the EPITOME CSVs "
                                                       "(default: $THERALOOP_SHARED_DATA)")
    questions: int = Field(100, ge=2, description="first N seeker posts of the MODPO train split")
    split_seed: int = 42
    personas: int = Field(20, ge=1, description="synthetic personas in the panel")
    persona_seed: int = 0
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    prefs: PrefsConfig = Field(default_factory=lambda: PrefsConfig(criteria=["empathy", "safety"]))
    reward: RewardConfig = Field(default_factory=RewardConfig)
    policy: PolicySettings
    weights: list[float] | None = Field(None, description="one per criterion (default: equal)")
    modpo_objective: str | None = Field(None, description="criterion whose pairs MODPO trains on "
                                                          "(default: the first)")
    dpo_from_sft: bool = Field(True, description="DPO, MODPO and joint start from (and refer to) the SFT policy")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")

    @model_validator(mode="after")
    def _consistent(self):
        criteria = self.criteria
        if len(criteria) < 2:
            raise ValueError("MODPO and the joint loss need at least two criteria in prefs.criteria")
        if self.weights is not None and len(self.weights) != len(criteria):
            raise ValueError(f"weights has {len(self.weights)} values for {len(criteria)} criteria {criteria}")
        if self.modpo_objective is not None and self.modpo_objective not in criteria:
            raise ValueError(f"modpo_objective {self.modpo_objective!r} is not one of {criteria}")
        # The trainers' own checks (weights, prompt length), now rather than after hours of generation.
        MODPOTrainConfig(**self.policy.model_dump(), out_dir=".", weights=self.objective_weights,
                         objective_index=self.objective_index)
        return self

    @property
    def criteria(self) -> list[str]:
        return self.prefs.criteria or self.prefs.load_rubric().keys

    @property
    def objective_weights(self) -> list[float]:
        return self.weights or [1.0 / len(self.criteria)] * len(self.criteria)

    @property
    def objective_index(self) -> int:
        return self.criteria.index(self.modpo_objective) if self.modpo_objective else 0


class StageReport(BaseModel):
    name: str
    seconds: float = Field(description="wall time of the run that produced the outputs")
    skipped: bool = Field(description="complete from an earlier run, not rerun now")


class RewardReport(BaseModel):
    path: str
    dev_accuracy: float = Field(description="pairwise accuracy on held-out questions' pairs")
    train_accuracy: float
    n_dev: int
    n_train: int


class TrainingReport(BaseModel):
    steps: int
    losses: list[float]
    seconds: float
    peak_rss_mb: float


class AlignSummary(BaseModel):
    out_dir: str
    criteria: list[str]
    weights: list[float]
    modpo_objective: str
    counts: dict[str, Any]
    reward: dict[str, RewardReport]
    adapters: dict[str, str] = Field(description="method (sft, dpo_<criterion>, modpo, joint) -> LoRA adapter")
    soup: str = Field(description="the souped model folder (a complete model, not an adapter)")
    training: dict[str, TrainingReport]
    stages: list[StageReport]
    wall_seconds: float = Field(description="this run, skipped stages included")


# --- stage bookkeeping ----------------------------------------------------------------------------


class _StageMarker(BaseModel):
    name: str
    fingerprint: str
    complete: bool = False
    outputs: list[str] = Field(description="paths relative to out_dir")
    outputs_sha256: str | None = None
    seconds: float = 0.0
    result: dict[str, Any] = Field(default_factory=dict)


def _outputs_digest(root: Path, outputs: Sequence[str]) -> str:
    files = []
    for output in outputs:
        path = root / output
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files += [[str(member.relative_to(root)), sha256_file(member)] for member in members]
    return sha256_json(files)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class _Stages:
    def __init__(self, out_dir: Path, total: int, log: Callable[[str], None]):
        self.out_dir, self.total, self.log = out_dir, total, log
        self.markers: dict[str, _StageMarker] = {}
        self.reports: list[StageReport] = []

    def run(self, name: str, settings: Any, upstream: Sequence[str], outputs: Sequence[str],
            work: Callable[[], dict[str, Any]], note: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
        """Run `work` unless an earlier run completed this stage with the same settings and inputs."""
        position = f"[{len(self.reports) + 1}/{self.total}] {name}"
        fingerprint = sha256_json({"settings": settings,
                                   "inputs": {stage: self.markers[stage].outputs_sha256 for stage in upstream}})
        marker_path = self.out_dir / "stages" / f"{name}.json"
        previous = _StageMarker.model_validate_json(marker_path.read_text()) if marker_path.is_file() else None
        if previous and previous.fingerprint == fingerprint and previous.complete and all(
                (self.out_dir / output).exists() for output in previous.outputs):
            self.markers[name] = previous
            self.reports.append(StageReport(name=name, seconds=previous.seconds, skipped=True))
            self.log(f"{position}: complete, skipped")
            return previous.result
        if previous and previous.fingerprint != fingerprint:
            # Other settings or inputs: what the old run left must not be resumed into.
            for output in previous.outputs:
                _remove(self.out_dir / output)
        marker = _StageMarker(name=name, fingerprint=fingerprint, outputs=list(outputs))
        write_json(marker_path, marker.model_dump())
        self.log(f"{position}: running")
        started = time.perf_counter()
        result = work()
        marker.seconds = time.perf_counter() - started
        marker.result, marker.complete = result, True
        marker.outputs_sha256 = _outputs_digest(self.out_dir, outputs)
        write_json(marker_path, marker.model_dump())
        self.markers[name] = marker
        self.reports.append(StageReport(name=name, seconds=marker.seconds, skipped=False))
        self.log(f"{position}: done in {marker.seconds:.1f} s" + (f" ({note(result)})" if note else ""))
        return result


def _llm_identity(override: ChatModel | None, config: LLMConfig) -> dict[str, Any]:
    """What decides the replies (not where they are served from or how fast)."""
    if override is not None:
        return {"backend": override.backend, "model": override.model_id}
    return config.model_dump(include={"backend", "model", "adapter"})


def _epitome_root(config: AlignConfig) -> Path:
    return find_dataset("epitome", config.epitome_root)


def _training_report(result: TrainResult) -> dict[str, Any]:
    return TrainingReport(steps=result.steps, losses=result.losses, seconds=result.seconds,
                          peak_rss_mb=result.peak_rss_mb).model_dump()


def _loss_note(result: dict[str, Any]) -> str:
    return f"{result['steps']} steps, loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}"


# --- the training data built from votes and reward models -----------------------------------------


def _sft_examples(votes: VoteResult, candidates: Sequence[Candidate], criteria: Sequence[str],
                  weights: Sequence[float]) -> list[SFTExample]:
    """Per question, the candidate with the highest weighted vote total over the criteria."""
    by_question: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_question.setdefault(candidate.question_id, []).append(candidate)
    examples = []
    for question_id, tallies in votes.tallies.items():
        group = sorted(by_question[question_id], key=lambda candidate: candidate.k)
        scores = [sum(w * tallies[c].totals[candidate.id] for c, w in zip(criteria, weights, strict=True))
                  for candidate in group]
        best = group[scores.index(max(scores))]  # the lowest k among equals
        examples.append(SFTExample(prompt=best.context, completion=best.response))
    return examples


def _modpo_pairs(pairs: Sequence[VotedPair], reward_models: dict[str, RewardModel], criteria: Sequence[str],
                 objective_index: int, cache_path: Path, progress: bool) -> list[MODPOPair]:
    objective = criteria[objective_index]
    margins = compute_margins(reward_models, pairs, objective, cache_path=cache_path, progress=progress)
    others = [criterion for criterion in criteria if criterion != objective]  # the order of weights without k
    return [MODPOPair(prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected,
                      margins=[margin.margins[criterion] for criterion in others])
            for pair, margin in zip(pairs, margins, strict=True)]


def _joint_pairs(pairs_by_criterion: dict[str, list[VotedPair]]) -> list[JointPair]:
    """Per prompt and criterion the pair with the largest vote gap (the joint loss takes one of each)."""
    best: dict[tuple[str, str], VotedPair] = {}
    for criterion, pairs in pairs_by_criterion.items():
        for pair in pairs:
            key = (pair.prompt, criterion)
            if key not in best or pair.weight > best[key].weight:
                best[key] = pair
    return [JointPair(prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected, objective=criterion)
            for (_, criterion), pair in best.items()]


# --- the pipeline ---------------------------------------------------------------------------------


def run_alignment_pipeline(config: AlignConfig, generator: ChatModel | None = None, judge: ChatModel | None = None,
                           log: Callable[[str], None] = print, progress: bool = True) -> AlignSummary:
    """Run (or finish) every stage into config.out_dir and write `summary.json` there.

    generator answers the questions and judge plays the personas; by default each is built from
    `config.generate.llm` / `config.prefs.llm`, and only when its stage has to run.
    """
    started = time.perf_counter()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    out = Path(config.out_dir)
    criteria, weights, k = config.criteria, config.objective_weights, config.objective_index
    stages = _Stages(out, total=8 + 2 * len(criteria), log=log)
    write_manifest(out, "align", config, seed=config.generate.seed)
    policy = config.policy

    def questions_stage() -> dict[str, Any]:
        questions = epitome_questions(_epitome_root(config), "train", config.questions, seed=config.split_seed)
        write_jsonl(out / "questions.jsonl", questions)
        return {"questions": len(questions)}

    stages.run("questions", {"root": str(_epitome_root(config)), "n": config.questions, "seed": config.split_seed},
               [], ["questions.jsonl"], questions_stage, lambda r: f"{r['questions']} seeker posts")

    def generate_stage() -> dict[str, Any]:
        questions: list[Question] = read_questions(out / "questions.jsonl")
        llm = generator or build_llm(config.generate.llm)
        _, summary = run_sync(generate_candidates(llm, questions, config.generate, out / "generate/candidates.jsonl",
                                                  concurrency=config.generate.llm.concurrency, progress=progress))
        return summary.model_dump()

    stages.run("generate", {"config": config.generate.model_dump(mode="json", exclude={"llm"}),
                            "llm": _llm_identity(generator, config.generate.llm)},
               ["questions"], ["generate"], generate_stage,
               lambda r: f"{r['candidates']} candidates, {len(r['failed'])} empty after every attempt")

    def prefs_stage() -> dict[str, Any]:
        panel = synthetic_personas(config.personas, config.persona_seed)
        write_jsonl(out / "prefs/personas.jsonl", panel)
        candidates = read_jsonl(out / "generate/candidates.jsonl", Candidate)
        llm = judge or build_llm(config.prefs.llm)
        summary = run_sync(collect_preferences(llm, candidates, panel, config.prefs, out / "prefs",
                                               concurrency=config.prefs.llm.concurrency, progress=progress))
        return summary.model_dump()

    prefs = stages.run("prefs", {"config": config.prefs.model_dump(mode="json", exclude={"llm"}),
                                 "llm": _llm_identity(judge, config.prefs.llm),
                                 "personas": [config.personas, config.persona_seed]},
                       ["generate"], ["prefs"], prefs_stage,
                       lambda r: f"ballots {r['valid_ballots']} valid, {r['invalid_ballots']} invalid; pairs {r['pairs']}")

    for criterion in criteria:
        def reward_stage(criterion: str = criterion) -> dict[str, Any]:
            pairs = read_pairs(out / f"prefs/pairs_{criterion}.jsonl", criterion)
            reward_config = config.reward.model_copy(update={"criterion": criterion})
            result = train_reward_model(pairs, config=reward_config, out_dir=out / "reward" / criterion,
                                        progress=progress)
            write_manifest(out / "reward" / criterion, "reward train", reward_config,
                           inputs={"pairs": out / f"prefs/pairs_{criterion}.jsonl"}, seed=reward_config.seed,
                           extra={"metrics": result.metrics})
            return result.metrics

        stages.run(f"reward_{criterion}", {"config": config.reward.model_dump(mode="json"), "criterion": criterion},
                   ["prefs"], [f"reward/{criterion}"], reward_stage,
                   lambda r: f"held-out pairwise accuracy {r['dev']['pairwise_accuracy']:.3f} on {r['dev']['n']} pairs")

    margin_criteria = [criterion for criterion in criteria if criterion != criteria[k]]  # MODPO's r_-k

    def data_stage() -> dict[str, Any]:
        pairs = {criterion: read_pairs(out / f"prefs/pairs_{criterion}.jsonl", criterion) for criterion in criteria}
        votes = VoteResult.model_validate_json((out / "prefs/votes.json").read_text(encoding="utf-8"))
        candidates = read_jsonl(out / "generate/candidates.jsonl", Candidate)
        reward_models = {criterion: RewardModel.load(out / "reward" / criterion) for criterion in margin_criteria}
        sft = _sft_examples(votes, candidates, criteria, weights)
        modpo = _modpo_pairs(pairs[criteria[k]], reward_models, criteria, k, out / "data/margins.jsonl", progress)
        joint = _joint_pairs(pairs)
        write_jsonl(out / "data/sft.jsonl", sft)
        write_jsonl(out / "data/modpo.jsonl", modpo)
        write_jsonl(out / "data/joint.jsonl", joint)
        return {"sft_examples": len(sft), "modpo_pairs": len(modpo), "joint_pairs": len(joint)}

    data = stages.run("data", {"weights": weights, "objective_index": k, "criteria": criteria},
                      ["prefs", "generate", *(f"reward_{criterion}" for criterion in margin_criteria)], ["data"],
                      data_stage,
                      lambda r: f"{r['sft_examples']} SFT examples, {r['modpo_pairs']} MODPO pairs, "
                                f"{r['joint_pairs']} joint pairs")

    adapters_dir = out / "adapters"
    adapters = {name: str(adapters_dir / name) for name in ["sft", *(f"dpo_{c}" for c in criteria), "modpo", "joint"]}
    start = {"sft_adapter": adapters["sft"] if config.dpo_from_sft else None}
    after_sft = ["sft"] if config.dpo_from_sft else []
    jobs = [("sft", train_sft, _trainer_config(SFTTrainConfig, policy, out_dir=adapters["sft"]), ["data"],
             out / "data/sft.jsonl")]
    jobs += [(f"dpo_{criterion}", train_dpo,
              _trainer_config(DPOTrainConfig, policy, out_dir=adapters[f"dpo_{criterion}"], **start),
              ["prefs", *after_sft], out / f"prefs/pairs_{criterion}.jsonl") for criterion in criteria]
    jobs += [("modpo", train_modpo, _trainer_config(MODPOTrainConfig, policy, out_dir=adapters["modpo"],
                                                    weights=weights, objective_index=k, **start),
              ["data", *after_sft], out / "data/modpo.jsonl"),
             ("joint", train_joint, _trainer_config(JointTrainConfig, policy, out_dir=adapters["joint"],
                                                    objectives=criteria, weights=weights, **start),
              ["data", *after_sft], out / "data/joint.jsonl")]
    for name, trainer, trainer_config, upstream, training_data in jobs:
        # Settings are the trainer's own (SFT has no beta); where it writes and starts from are not settings:
        # the SFT adapter enters through its output digest, so a moved run folder is still complete. Nor is
        # how often it checkpoints and logs: a killed stage rerun with other values resumes its checkpoint.
        settings = trainer_config.model_dump(mode="json", exclude={"out_dir", "sft_adapter", *RESUMABLE_SETTINGS})
        stages.run(name, settings, upstream, [f"adapters/{name}"],
                   lambda trainer=trainer, trainer_config=trainer_config, training_data=training_data:
                   _training_report(trainer(trainer_config, training_data)), _loss_note)

    soup_config = SoupConfig(model=policy.model, out_dir=str(adapters_dir / "soup"), weights=weights,
                             adapters=[adapters[f"dpo_{criterion}"] for criterion in criteria], **start)

    def soup_stage() -> dict[str, Any]:
        make_soup(soup_config)
        return {"weights": weights}

    stages.run("soup", soup_config.model_dump(mode="json", exclude={"out_dir", "adapters", "sft_adapter"}),
               [f"dpo_{criterion}" for criterion in criteria] + after_sft, ["adapters/soup"], soup_stage)

    reward = {}
    for criterion in criteria:
        metrics = stages.markers[f"reward_{criterion}"].result
        reward[criterion] = RewardReport(path=str(out / "reward" / criterion),
                                         dev_accuracy=metrics["dev"]["pairwise_accuracy"],
                                         train_accuracy=metrics["train"]["pairwise_accuracy"],
                                         n_dev=metrics["dev"]["n"], n_train=metrics["train"]["n"])
    generated = stages.markers["generate"].result
    summary = AlignSummary(
        out_dir=str(out), criteria=criteria, weights=weights, modpo_objective=criteria[k],
        counts={"questions": generated["questions"], "candidates": generated["candidates"],
                "ballots": prefs["ballots"], "valid_ballots": prefs["valid_ballots"],
                "invalid_ballots": prefs["invalid_ballots"], "pairs": prefs["pairs"], **data},
        reward=reward, adapters=adapters, soup=soup_config.out_dir,
        training={name: TrainingReport.model_validate(stages.markers[name].result) for name in adapters},
        stages=stages.reports, wall_seconds=time.perf_counter() - started)
    write_json(out / "summary.json", summary.model_dump(mode="json"))
    log(f"wrote {out / 'summary.json'} ({summary.wall_seconds:.1f} s)")
    return summary

"""The MODPO-paper alignment pipeline as one call (`run_alignment_pipeline`, `theraloop align`).

EPITOME seeker posts (the MODPO train split, first N) -> N candidate replies each -> synthetic personas
rank them per criterion -> weighted votes and preference pairs -> one reward model per criterion
(held-out pairwise accuracy) -> MODPO margins -> SFT, per-criterion DPO, MODPO and joint-loss DPO LoRA
adapters on one policy model -> a LoRA soup of the per-criterion DPO adapters -> `summary.json`.

With `pairs_dir`, the pipeline starts from preference pairs someone already has (for instance
`theraloop prefs from-refine --per-dimension`): one `import_<criterion>` stage per `pairs_<criterion>.jsonl`
replaces the questions, generation and persona stages, and everything downstream runs as before. The
SFT examples then come from the pairs' chosen sides (`_sft_from_pairs`). With a single criterion, MODPO,
the joint loss and the soup (which combine criteria) are left out, and `summary.json` says why.

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
from theraloop.io import InputError, iter_jsonl, read_jsonl, sha256_file, sha256_json, write_json, write_jsonl
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
from theraloop.train._reward import (
    RewardConfig,
    RewardModel,
    compute_margins,
    dev_split,
    read_pairs,
    train_reward_model,
)

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


DEFAULT_OBJECTIVES = ("empathy", "safety")


class AlignConfig(StrictModel):
    """The whole pipeline. `prefs.criteria` are the objectives; `weights` weigh them (MODPO, joint, soup).

    With `pairs_dir` the objectives are the `pairs_<criterion>.jsonl` files there: those `prefs.criteria`
    names when the config sets it, else every file, in name order; questions, generation and personas are
    not used.
    """

    out_dir: str
    pairs_dir: str | None = Field(None, description="folder of pairs_<criterion>.jsonl files (TRL prompt/chosen/"
                                                    "rejected) to train on instead of generating candidates and "
                                                    "collecting persona preferences")
    epitome_root: str | None = Field(None, description="folder with the EPITOME CSVs "
                                                       "(default: $THERALOOP_SHARED_DATA)")
    questions: int = Field(100, ge=2, description="first N seeker posts of the MODPO train split")
    split_seed: int = 42
    personas: int = Field(20, ge=1, description="synthetic personas in the panel")
    persona_seed: int = 0
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    prefs: PrefsConfig = Field(default_factory=lambda: PrefsConfig(criteria=list(DEFAULT_OBJECTIVES)))
    reward: RewardConfig = Field(default_factory=RewardConfig)
    policy: PolicySettings
    weights: list[float] | None = Field(None, description="one per criterion (default: equal)")
    modpo_objective: str | None = Field(None, description="criterion whose pairs MODPO trains on "
                                                          "(default: the first)")
    dpo_from_sft: bool = Field(True, description="DPO, MODPO and joint start from (and refer to) the SFT policy")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")

    @model_validator(mode="before")
    @classmethod
    def _default_objectives(cls, data: Any) -> Any:
        """A prefs section that names neither criteria nor a rubric (`--seed` or `--model` alone write one) keeps
        the default objectives instead of silently ranking on every rubric dimension. Not with pairs_dir, where
        no listed criteria means every pairs file."""
        if isinstance(data, dict) and not data.get("pairs_dir"):
            prefs = data.get("prefs")
            if isinstance(prefs, dict) and prefs.get("criteria") is None and "rubric" not in prefs:
                data = {**data, "prefs": {**prefs, "criteria": list(DEFAULT_OBJECTIVES)}}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if self.pairs_dir is None and len(self.criteria) < 2:
            raise ValueError("MODPO and the joint loss need at least two criteria in prefs.criteria")
        # The trainers' own checks (prompt length; weights once the criteria are known), now rather than after
        # hours of generation; imported criteria without a list are checked when the pipeline finds the files.
        DPOTrainConfig(**self.policy.model_dump(), out_dir=".")
        criteria = self.criteria if self.pairs_dir is None else self.listed_criteria
        if criteria is not None:
            self.objectives(criteria)
        return self

    @property
    def criteria(self) -> list[str]:
        """The persona criteria (without pairs_dir)."""
        return self.prefs.criteria or self.prefs.load_rubric().keys

    @property
    def listed_criteria(self) -> list[str] | None:
        """The criteria this config sets itself; the default prefs section's pair does not count."""
        return self.prefs.criteria if "prefs" in self.model_fields_set else None

    def objectives(self, criteria: Sequence[str]) -> tuple[list[float], int]:
        """The weights of `criteria` and the index of MODPO's objective among them (ValueError if they do not fit)."""
        criteria = list(criteria)
        if self.weights is not None and len(self.weights) != len(criteria):
            raise ValueError(f"weights has {len(self.weights)} values for {len(criteria)} criteria {criteria}")
        if self.modpo_objective is not None and self.modpo_objective not in criteria:
            raise ValueError(f"modpo_objective {self.modpo_objective!r} is not one of {criteria}")
        weights = self.weights or [1.0 / len(criteria)] * len(criteria)
        index = criteria.index(self.modpo_objective) if self.modpo_objective else 0
        if len(criteria) >= 2:
            MODPOTrainConfig(**self.policy.model_dump(), out_dir=".", weights=weights, objective_index=index)
        return weights, index


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
    pairs_dir: str | None = Field(None, description="where the imported preference pairs came from")
    criteria: list[str]
    weights: list[float]
    modpo_objective: str | None = Field(description="None when MODPO was not run")
    counts: dict[str, Any]
    reward: dict[str, RewardReport]
    adapters: dict[str, str] = Field(description="method (sft, dpo_<criterion>, modpo, joint) -> LoRA adapter")
    soup: str | None = Field(description="the souped model folder (a complete model, not an adapter)")
    omitted: dict[str, str] = Field(default_factory=dict, description="stage -> why this run leaves it out")
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


_DATA_LABELS = {"sft_examples": "SFT examples", "modpo_pairs": "MODPO pairs", "joint_pairs": "joint pairs"}


def _loss_note(result: dict[str, Any]) -> str:
    return f"{result['steps']} steps, loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}"


# --- imported preference pairs -------------------------------------------------------------------


def pair_files(config: AlignConfig) -> dict[str, Path]:
    """Criterion -> its pairs file in `config.pairs_dir`: the listed criteria (each must have one), else every file."""
    folder = Path(config.pairs_dir)
    expected = "expected pairs_<criterion>.jsonl files, e.g. from `theraloop prefs from-refine --per-dimension`"
    if not folder.is_dir():
        raise InputError(f"{folder}: pairs folder not found ({expected})")
    found = {path.name[len("pairs_"):-len(".jsonl")]: path for path in sorted(folder.glob("pairs_?*.jsonl"))}
    if not found:
        raise InputError(f"{folder}: no pairs files ({expected})")
    listed = config.listed_criteria
    if listed is None:
        return found
    if missing := [criterion for criterion in listed if criterion not in found]:
        raise InputError(f"{folder}: no pairs file for criteria {missing} (expected "
                         f"{', '.join(f'pairs_{criterion}.jsonl' for criterion in missing)}); found {sorted(found)}")
    return {criterion: found[criterion] for criterion in listed}


def check_pair_file(path: Path, criterion: str, reward: RewardConfig) -> int:
    """Validate one criterion's pairs file before anything trains on it; returns its number of pairs."""
    leave_out = "or leave the criterion out (prefs.criteria, --criteria)"
    pairs = []
    for number, pair in enumerate(iter_jsonl(path, VotedPair), start=1):  # a malformed line is named file:line
        if pair.criterion not in (None, criterion):
            raise InputError(f"{path}: record {number}: criterion {pair.criterion!r} in the pairs file of "
                             f"{criterion!r} (a pairs_<criterion>.jsonl file holds that criterion's pairs, or "
                             "pairs without one)")
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{path}: no preference pairs; add some {leave_out}")
    train, dev = dev_split(pairs, reward)
    if not train or not dev:
        groups = len({pair.question_id or pair.prompt for pair in pairs})
        raise InputError(f"{path}: {len(pairs)} pairs on {groups} prompts are too few for {criterion!r}'s reward "
                         f"model to hold out a dev split (reward.dev_fraction {reward.dev_fraction}: train "
                         f"{len(train)}, dev {len(dev)}); give pairs on more prompts {leave_out}")
    return len(pairs)


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


def _sft_from_pairs(pairs_by_criterion: dict[str, list[VotedPair]], weights: Sequence[float]) -> list[SFTExample]:
    """Per prompt, the best-supported response among those chosen at least once. A pair adds its criterion's
    weight times its own weight to its chosen response's support and takes as much from its rejected one (the
    pair-wise analogue of the symmetric vote). Ties go to the response chosen more often, then to the one seen
    first (criteria in order, each file in order)."""
    support: dict[str, dict[str, float]] = {}
    wins: dict[str, dict[str, int]] = {}
    for pairs, weight in zip(pairs_by_criterion.values(), weights, strict=True):
        for pair in pairs:
            scores, chosen = support.setdefault(pair.prompt, {}), wins.setdefault(pair.prompt, {})
            scores[pair.chosen] = scores.get(pair.chosen, 0.0) + weight * pair.weight
            scores[pair.rejected] = scores.get(pair.rejected, 0.0) - weight * pair.weight
            chosen[pair.chosen] = chosen.get(pair.chosen, 0) + 1
    examples = []
    for prompt, scores in support.items():
        # Rounded so that weights like 0.6 + 0.4 tie with 1.0 despite floating-point sums.
        best = max((response for response in scores if response in wins[prompt]),
                   key=lambda response: (round(scores[response], 9), wins[prompt][response]))
        examples.append(SFTExample(prompt=prompt, completion=best))
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
    `config.generate.llm` / `config.prefs.llm`, and only when its stage has to run (never with `pairs_dir`).
    """
    started = time.perf_counter()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    out = Path(config.out_dir)
    files = pair_files(config) if config.pairs_dir else {}
    criteria = list(files) if files else config.criteria
    try:
        weights, k = config.objectives(criteria)
    except ValueError as exc:
        raise InputError(f"{config.pairs_dir}: criteria {criteria} from its pairs files: {exc}") from None
    # Every imported file is checked before the first stage runs, not when its reward model is due.
    n_pairs = {criterion: check_pair_file(path, criterion, config.reward) for criterion, path in files.items()}
    combined = len(criteria) >= 2  # MODPO, the joint loss and the soup need two criteria to combine
    stages = _Stages(out, total=(len(criteria) if files else 3) + 2 * len(criteria) + 2 + (3 if combined else 0),
                     log=log)
    # The resolved criteria go into config.yaml, so rerunning from it finds the same files.
    resolved = config.model_copy(update={"prefs": config.prefs.model_copy(update={"criteria": criteria})})
    write_manifest(out, "align", resolved if files else config,
                   inputs={f"pairs_{criterion}": path for criterion, path in files.items()}, seed=config.generate.seed)
    policy = config.policy

    if files:
        for criterion, path in files.items():
            def import_stage(criterion: str = criterion, path: Path = path) -> dict[str, Any]:
                (out / "prefs").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out / f"prefs/pairs_{criterion}.jsonl")
                return {"pairs": n_pairs[criterion], "source": str(path)}

            # The file's bytes, not where it lies, decide whether its criterion's stages rerun.
            stages.run(f"import_{criterion}", {"criterion": criterion, "sha256": sha256_file(path)}, [],
                       [f"prefs/pairs_{criterion}.jsonl"], import_stage, lambda r: f"{r['pairs']} pairs from {r['source']}")
        pairs_stage = {criterion: f"import_{criterion}" for criterion in criteria}
    else:
        pairs_stage = dict.fromkeys(criteria, "prefs")

        def questions_stage() -> dict[str, Any]:
            questions = epitome_questions(_epitome_root(config), "train", config.questions, seed=config.split_seed)
            write_jsonl(out / "questions.jsonl", questions)
            return {"questions": len(questions)}

        stages.run("questions", {"root": str(_epitome_root(config)), "n": config.questions, "seed": config.split_seed},
                   [], ["questions.jsonl"], questions_stage, lambda r: f"{r['questions']} seeker posts")

        def generate_stage() -> dict[str, Any]:
            questions: list[Question] = read_questions(out / "questions.jsonl")
            llm = generator or build_llm(config.generate.llm)
            _, summary = run_sync(generate_candidates(llm, questions, config.generate,
                                                      out / "generate/candidates.jsonl",
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

        stages.run("prefs", {"config": config.prefs.model_dump(mode="json", exclude={"llm"}),
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
                   [pairs_stage[criterion]], [f"reward/{criterion}"], reward_stage,
                   lambda r: f"held-out pairwise accuracy {r['dev']['pairwise_accuracy']:.3f} on {r['dev']['n']} pairs")

    margin_criteria = [criterion for criterion in criteria if criterion != criteria[k]]  # MODPO's r_-k

    def data_stage() -> dict[str, Any]:
        pairs = {criterion: read_pairs(out / f"prefs/pairs_{criterion}.jsonl", criterion) for criterion in criteria}
        if files:
            sft = _sft_from_pairs(pairs, weights)
        else:
            votes = VoteResult.model_validate_json((out / "prefs/votes.json").read_text(encoding="utf-8"))
            sft = _sft_examples(votes, read_jsonl(out / "generate/candidates.jsonl", Candidate), criteria, weights)
        write_jsonl(out / "data/sft.jsonl", sft)
        counts = {"sft_examples": len(sft)}
        if combined:
            reward_models = {criterion: RewardModel.load(out / "reward" / criterion) for criterion in margin_criteria}
            modpo = _modpo_pairs(pairs[criteria[k]], reward_models, criteria, k, out / "data/margins.jsonl", progress)
            joint = _joint_pairs(pairs)
            write_jsonl(out / "data/modpo.jsonl", modpo)
            write_jsonl(out / "data/joint.jsonl", joint)
            counts.update(modpo_pairs=len(modpo), joint_pairs=len(joint))
        return counts

    data = stages.run("data", {"weights": weights, "objective_index": k, "criteria": criteria},
                      [*dict.fromkeys(pairs_stage.values()), *([] if files else ["generate"]),
                       *(f"reward_{criterion}" for criterion in margin_criteria)], ["data"], data_stage,
                      lambda r: ", ".join(f"{count} {_DATA_LABELS[name]}" for name, count in r.items()))

    adapters_dir = out / "adapters"
    names = ["sft", *(f"dpo_{c}" for c in criteria), *(["modpo", "joint"] if combined else [])]
    adapters = {name: str(adapters_dir / name) for name in names}
    start = {"sft_adapter": adapters["sft"] if config.dpo_from_sft else None}
    after_sft = ["sft"] if config.dpo_from_sft else []
    jobs = [("sft", train_sft, _trainer_config(SFTTrainConfig, policy, out_dir=adapters["sft"]), ["data"],
             out / "data/sft.jsonl")]
    jobs += [(f"dpo_{criterion}", train_dpo,
              _trainer_config(DPOTrainConfig, policy, out_dir=adapters[f"dpo_{criterion}"], **start),
              [pairs_stage[criterion], *after_sft], out / f"prefs/pairs_{criterion}.jsonl") for criterion in criteria]
    if combined:
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

    soup_config = None
    omitted: dict[str, str] = {}
    if combined:
        soup_config = SoupConfig(model=policy.model, out_dir=str(adapters_dir / "soup"), weights=weights,
                                 adapters=[adapters[f"dpo_{criterion}"] for criterion in criteria], **start)

        def soup_stage() -> dict[str, Any]:
            make_soup(soup_config)
            return {"weights": weights}

        stages.run("soup", soup_config.model_dump(mode="json", exclude={"out_dir", "adapters", "sft_adapter"}),
                   [f"dpo_{criterion}" for criterion in criteria] + after_sft, ["adapters/soup"], soup_stage)
    else:
        reason = (f"one criterion ({criteria[0]}): MODPO, the joint loss and a LoRA soup combine two or more; "
                  f"its DPO adapter is dpo_{criteria[0]}")
        omitted = dict.fromkeys(["modpo", "joint", "soup"], reason)
        log(f"modpo, joint, soup: not run: {reason}")

    reward = {}
    for criterion in criteria:
        metrics = stages.markers[f"reward_{criterion}"].result
        reward[criterion] = RewardReport(path=str(out / "reward" / criterion),
                                         dev_accuracy=metrics["dev"]["pairwise_accuracy"],
                                         train_accuracy=metrics["train"]["pairwise_accuracy"],
                                         n_dev=metrics["dev"]["n"], n_train=metrics["train"]["n"])
    if files:
        counts = {"pairs": {criterion: stages.markers[f"import_{criterion}"].result["pairs"] for criterion in criteria},
                  **data}
    else:
        generated, prefs = stages.markers["generate"].result, stages.markers["prefs"].result
        counts = {"questions": generated["questions"], "candidates": generated["candidates"],
                  "ballots": prefs["ballots"], "valid_ballots": prefs["valid_ballots"],
                  "invalid_ballots": prefs["invalid_ballots"], "pairs": prefs["pairs"], **data}
    summary = AlignSummary(
        out_dir=str(out), pairs_dir=config.pairs_dir, criteria=criteria, weights=weights,
        modpo_objective=criteria[k] if combined else None, counts=counts, reward=reward, adapters=adapters,
        soup=soup_config.out_dir if soup_config else None, omitted=omitted,
        training={name: TrainingReport.model_validate(stages.markers[name].result) for name in adapters},
        stages=stages.reports, wall_seconds=time.perf_counter() - started)
    write_json(out / "summary.json", summary.model_dump(mode="json"))
    log(f"wrote {out / 'summary.json'} ({summary.wall_seconds:.1f} s)")
    return summary

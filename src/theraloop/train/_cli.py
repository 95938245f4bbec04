"""`theraloop train` (one method on one data file) and `theraloop align` (the whole pipeline)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from theraloop.cli_common import (
    BackendOption,
    BaseUrlOption,
    ConcurrencyOption,
    ConfigOption,
    NoCacheOption,
    OutOption,
    SeedOption,
    ThreadsOption,
    llm_overrides,
)
from theraloop.io import InputError


class TrainMethod(StrEnum):
    sft = "sft"
    dpo = "dpo"
    modpo = "modpo"
    joint = "joint"
    soup = "soup"


# Flags that only some methods read; giving one to another method is a mistake worth stopping for.
_METHOD_FLAGS = {
    "--beta": {"dpo", "modpo", "joint"},
    "--weights": {"modpo", "joint"},
    "--objectives": {"modpo", "joint"},
    "--objective-index": {"modpo"},
    "--margins": {"modpo"},
    "--reward-models": {"modpo"},
    "--adapters": {"soup"},
    "--soup-weights": {"soup"},
    "--max-steps": {"sft", "dpo", "modpo", "joint"},
    "--seed": {"sft", "dpo", "modpo", "joint"},
}


def _split(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def _floats(text: str | None, flag: str) -> list[float] | None:
    items = _split(text)
    if items is None:
        return None
    try:
        return [float(item) for item in items]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 0.7,0.3") from None


def _config_keys(path: Path | None) -> set[str]:
    """Top-level keys of a YAML config; a malformed file yields none and load_config then names the problem."""
    import yaml

    if path is None:
        return set()
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return set()
    return set(loaded) if isinstance(loaded, dict) else set()


def _sft_records(path: Path) -> list[dict]:
    """SFT records as given, or preference pairs turned into SFT records on their chosen reply."""
    from theraloop.io import read_jsonl

    records = read_jsonl(path)
    if not records:
        raise InputError(f"{path}: no records")
    converted = []
    for line, record in enumerate(records, start=1):
        completion = record.get("completion", record.get("chosen"))
        if "prompt" not in record or completion is None:
            raise InputError(f"{path}: record {line}: SFT needs 'prompt' and 'completion' (or a preference pair's "
                             "'chosen')")
        converted.append({"prompt": record["prompt"], "completion": completion})
    return converted


def _parse_reward_models(text: str) -> dict[str, Path]:
    models = {}
    for item in _split(text) or []:
        criterion, _, folder = item.partition("=")
        if not criterion or not folder:
            raise InputError(f"--reward-models item {item!r}: expected criterion=folder")
        models[criterion.strip()] = Path(folder.strip())
    return models


def _modpo_records(path: Path, objectives: list[str] | None, objective_index: int, margins: Path | None,
                   reward_models: str | None, out: Path) -> list[dict] | None:
    """MODPO records with `margins` lists, or None when the file already carries them (and no source is given)."""
    from theraloop.io import read_jsonl
    from theraloop.train._reward import PairMargins, RewardModel, compute_margins, pair_key, read_pairs

    if margins is None and reward_models is None:
        missing = [line for line, record in enumerate(read_jsonl(path), start=1) if "margins" not in record]
        if missing:
            raise InputError(f"{path}: record {missing[0]}: field 'margins' missing; MODPO needs the other "
                             "objectives' reward margins: pass --margins margins.jsonl or --reward-models "
                             "criterion=folder,...")
        return None
    if margins is not None and reward_models is not None:
        raise InputError("give --margins or --reward-models, not both")
    if not objectives:
        raise InputError("--objectives (e.g. empathy,safety, in the order of --weights) is needed to order the "
                         "margins of the other objectives")
    if objective_index >= len(objectives):
        raise InputError(f"--objective-index {objective_index} is out of range for objectives {objectives}")
    objective = objectives[objective_index]
    others = [name for name in objectives if name != objective]
    pairs = read_pairs(path)
    if reward_models is not None:
        models = {name: RewardModel.load(folder) for name, folder in _parse_reward_models(reward_models).items()}
        if missing_models := [name for name in others if name not in models]:
            raise InputError(f"--reward-models has no model for {missing_models}")
        found = compute_margins({name: models[name] for name in others}, pairs, objective,
                                cache_path=out / "margins.jsonl")
    else:
        by_key = {record.key: record for record in read_jsonl(margins, PairMargins) if record.objective == objective}
        found = []
        for line, pair in enumerate(pairs, start=1):
            record = by_key.get(pair_key(pair))
            if record is None or any(name not in record.margins for name in others):
                raise InputError(f"{path}: record {line}: no margins for objective {objective!r} and criteria "
                                 f"{others} in {margins}")
            found.append(record)
    return [{"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
             "margins": [record.margins[name] for name in others]} for pair, record in zip(pairs, found, strict=True)]


def _joint_records(path: Path) -> tuple[list[dict], list[str]]:
    """Joint records (`objective`, or a voted pair's `criterion`) and their objectives in sorted order."""
    from theraloop.io import read_jsonl

    records = []
    for line, record in enumerate(read_jsonl(path), start=1):
        objective = record.get("objective") or record.get("criterion")
        if not objective:
            raise InputError(f"{path}: record {line}: field 'objective' (or 'criterion') missing: the joint loss "
                             "needs to know which objective each pair expresses")
        records.append({**record, "objective": objective})
    return records, sorted({record["objective"] for record in records})


def train_command(
    method: Annotated[TrainMethod, typer.Option("--method", help="sft | dpo | modpo | joint | soup")],
    data: Annotated[Path | None, typer.Argument(help="training JSONL: SFT prompt/completion (or pairs: the chosen "
                                                     "reply is the completion); DPO, MODPO, joint: preference "
                                                     "pairs. Not used by soup.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="policy (base) model folder")] = None,
    sft_adapter: Annotated[Path | None, typer.Option(help="SFT adapter merged into the base first (start and "
                                                          "reference policy)")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO temperature beta")] = None,
    max_steps: Annotated[int | None, typer.Option(help="optimiser steps (overrides epochs)")] = None,
    weights: Annotated[str | None, typer.Option(help="objective weights, e.g. 0.7,0.3 (modpo, joint)")] = None,
    objectives: Annotated[str | None, typer.Option(help="objective names in the order of --weights, e.g. "
                                                        "empathy,safety (joint default: the data's, sorted)")] = None,
    objective_index: Annotated[int | None, typer.Option(help="modpo: which objective the pairs express")] = None,
    margins: Annotated[Path | None, typer.Option(help="modpo: margins JSONL from compute_margins")] = None,
    reward_models: Annotated[str | None, typer.Option(help="modpo: criterion=reward-model-folder,... to compute "
                                                           "the margins (cached in OUT/margins.jsonl)")] = None,
    adapters: Annotated[str | None, typer.Option(help="soup: comma-separated LoRA adapter folders")] = None,
    soup_weights: Annotated[str | None, typer.Option(help="soup: one weight per adapter, e.g. 0.5,0.5")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
) -> None:
    """Train one LoRA adapter (sft, dpo, modpo, joint) or merge a LoRA soup."""
    from theraloop.config import load_config
    from theraloop.io import write_jsonl
    from theraloop.manifest import write_manifest
    from theraloop.train._pipeline import SoupConfig, make_soup
    from theraloop.train._policy import (
        DPOTrainConfig,
        JointTrainConfig,
        MODPOTrainConfig,
        SFTTrainConfig,
        process_state,
        train_dpo,
        train_joint,
        train_modpo,
        train_sft,
    )

    name = method.value
    given = {"--beta": beta, "--weights": weights, "--objectives": objectives, "--objective-index": objective_index,
             "--margins": margins, "--reward-models": reward_models, "--adapters": adapters,
             "--soup-weights": soup_weights, "--max-steps": max_steps, "--seed": seed}
    if wrong := [flag for flag, value in given.items() if value is not None and name not in _METHOD_FLAGS[flag]]:
        raise InputError(f"--method {name} does not take {', '.join(wrong)}")
    if name == "soup":
        if data is not None:
            raise InputError("--method soup merges --adapters and reads no training data; drop the data argument")
    elif data is None:
        raise InputError(f"--method {name} needs a training data JSONL")
    elif not data.is_file():
        raise InputError(f"{data}: file not found")
    default_out = None if "out_dir" in _config_keys(config) else Path("runs") / f"train-{name}"
    out_dir = out or default_out
    common = {"model": str(model) if model else None, "out_dir": str(out_dir) if out_dir else None,
              "sft_adapter": str(sft_adapter) if sft_adapter else None}

    if name == "soup":
        soup = load_config(SoupConfig, config, **common, adapters=_split(adapters),
                           weights=_floats(soup_weights, "--soup-weights"))
        make_soup(soup)
        typer.echo(f"souped {len(soup.adapters)} adapters with weights {soup.weights}; wrote {soup.out_dir}")
        return

    weight_values = _floats(weights, "--weights")
    objective_names = _split(objectives)
    inputs: dict[str, Any] = {"data": data}
    settings = {**common, "max_steps": max_steps, "seed": seed}
    if name == "sft":
        train_config, trainer = load_config(SFTTrainConfig, config, **settings), train_sft
    elif name == "dpo":
        train_config, trainer = load_config(DPOTrainConfig, config, **settings, beta=beta), train_dpo
    elif name == "modpo":
        train_config = load_config(MODPOTrainConfig, config, **settings, beta=beta, weights=weight_values,
                                   objective_index=objective_index)
        if objective_names and len(objective_names) != len(train_config.weights):
            raise InputError(f"--objectives {objective_names} and weights {train_config.weights} differ in length")
        trainer = train_modpo
        inputs.update(margins=margins)
    else:
        joint_records, found = _joint_records(data)
        inferred = found if objective_names is None and "objectives" not in _config_keys(config) else None
        train_config = load_config(JointTrainConfig, config, **settings, beta=beta, weights=weight_values,
                                   objectives=objective_names or inferred)
        trainer = train_joint
    out = Path(train_config.out_dir)
    # Under `accelerate launch` every process runs this command: the main process converts the data (and
    # computes MODPO margins, cached in OUT/margins.jsonl) first; the others then find it done.
    state = process_state(train_config)
    with state.main_process_first():
        training_data: Path | list[dict] = data
        if name == "sft":
            training_data = _sft_records(data)
        elif name == "modpo":
            training_data = _modpo_records(data, objective_names, train_config.objective_index, margins,
                                           reward_models, out) or data
        elif name == "joint":
            training_data = joint_records
        if isinstance(training_data, list):
            # Converted records are written beside the adapter, so the manifest hashes exactly what was trained on.
            if state.is_main_process:
                write_jsonl(out / "train_data.jsonl", training_data)
            training_data = out / "train_data.jsonl"
            inputs["train_data"] = training_data
    result = trainer(train_config, training_data)
    if state.is_main_process:
        write_manifest(out, f"train {name}", train_config, inputs=inputs, seed=train_config.seed,
                       extra={"result": result.model_dump()})
        typer.echo(f"{name}: {result.steps} steps, loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, "
                   f"{result.seconds:.1f} s; wrote {out}")


def align_command(
    config: ConfigOption = None,
    out: OutOption = None,
    policy_model: Annotated[Path | None, typer.Option(help="policy model folder (config policy.model)")] = None,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="folder of pairs_CRITERION.jsonl preference pairs (TRL prompt/chosen/rejected, e.g. from "
                        "`prefs from-refine --per-dimension`) to train on instead of generating candidates and "
                        "collecting persona preferences (config pairs_dir)")] = None,
    criteria: Annotated[str | None, typer.Option(
        help="comma-separated criteria (config prefs.criteria); with --pairs, which files to use (default: "
             "every pairs_*.jsonl, in name order). One criterion trains its reward model, SFT and DPO only")] = None,
    epitome_root: Annotated[Path | None, typer.Option(help="folder with the EPITOME CSVs "
                                                           "(default: $THERALOOP_SHARED_DATA)")] = None,
    questions: Annotated[int | None, typer.Option(help="first N seeker posts of the MODPO train split")] = None,
    seed: Annotated[int | None, typer.Option(help="one seed for generation, personas, reward models and "
                                                  "policies")] = None,
    backend: BackendOption = None,
    model: Annotated[str | None, typer.Option("--model", help="LLM that generates and plays the personas: served "
                                                              "name (openai) or local folder / .gguf")] = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """The whole alignment pipeline: candidates, persona preferences (or --pairs: preference pairs you have),
    reward models, SFT/DPO/MODPO/joint adapters and a LoRA soup. Finished stages are skipped when run again."""
    from theraloop.config import load_config
    from theraloop.train._pipeline import AlignConfig, run_alignment_pipeline

    llm = {**llm_overrides("generate.llm", backend, model, base_url, concurrency, no_cache, threads),
           **llm_overrides("prefs.llm", backend, model, base_url, concurrency, no_cache, threads)}
    align_config = load_config(AlignConfig, config, out_dir=str(out) if out else None, questions=questions,
                               epitome_root=str(epitome_root) if epitome_root else None,
                               persona_seed=seed, pairs_dir=str(pairs) if pairs else None,
                               **{"policy.model": str(policy_model) if policy_model else None,
                                  "prefs.criteria": _split(criteria), "generate.seed": seed, "prefs.seed": seed,
                                  "reward.seed": seed, "policy.seed": seed}, **llm)
    summary = run_alignment_pipeline(align_config, log=typer.echo)
    for criterion, report in summary.reward.items():
        typer.echo(f"reward {criterion}: held-out pairwise accuracy {report.dev_accuracy:.3f} ({report.n_dev} pairs)")
    for method, path in {**summary.adapters, **({"soup": summary.soup} if summary.soup else {})}.items():
        typer.echo(f"{method:>16}: {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("align")(align_command)

"""`theraloop generate`, `theraloop prefs` and `theraloop reward train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theraloop.cli_common import (
    BackendOption,
    BaseUrlOption,
    ConcurrencyOption,
    ConfigOption,
    ModelOption,
    NoCacheOption,
    OutOption,
    SeedOption,
    ThreadsOption,
    llm_overrides,
)

reward_app = typer.Typer(no_args_is_help=True, help="Per-criterion reward models from preference pairs.")


def generate_command(
    input: Annotated[Path | None, typer.Argument(help="JSONL of questions {id, text} (or context/prompt/question)")] = None,
    epitome_split: Annotated[str | None, typer.Option(help="use the EPITOME seeker posts of this MODPO split: "
                                                           "train | test")] = None,
    epitome_root: Annotated[Path | None, typer.Option(help="folder with the EPITOME CSVs "
                                                           "(default: $THERALOOP_SHARED_DATA)")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates per question")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="maximum tokens per candidate")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Generate N candidate responses per question; resumes where a previous run stopped."""
    from theraloop.config import load_config
    from theraloop.io import InputError
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.prefs._generate import (
        GenerateConfig,
        epitome_questions,
        generate_candidates,
        read_questions,
    )

    if (input is None) == (epitome_split is None):
        raise InputError("give either a questions JSONL or --epitome-split train|test")
    generate_config = load_config(GenerateConfig, config, n=n, temperature=temperature, max_tokens=max_tokens,
                                  seed=seed, **llm_overrides("llm", backend, model, base_url, concurrency, no_cache, threads))
    if input is not None:
        questions = read_questions(input)[:limit]
        out = out or Path("runs") / f"generate-{input.stem}"
    else:
        from theraloop.data import find_dataset

        questions = epitome_questions(find_dataset("epitome", epitome_root), epitome_split, limit)
        out = out or Path("runs") / f"generate-epitome-{epitome_split}"
    llm = build_llm(generate_config.llm)
    candidates, summary = run_sync(generate_candidates(llm, questions, generate_config, out / "candidates.jsonl",
                                                       concurrency=generate_config.llm.concurrency))
    write_manifest(out, "generate", generate_config, inputs={"questions": input}, seed=generate_config.seed,
                   extra={"summary": summary.model_dump(), "epitome_split": epitome_split, "limit": limit})
    typer.echo(f"{summary.candidates} candidates for {summary.questions} questions ({summary.generated} new); "
               f"{len(summary.failed)} empty after every attempt")
    typer.echo(f"wrote {out / 'candidates.jsonl'}")


def prefs_command(
    input: Annotated[Path, typer.Argument(help="candidates JSONL from `theraloop generate`")],
    personas: Annotated[Path | None, typer.Option(help="personas JSONL (default: synthetic personas)")] = None,
    synthetic_personas: Annotated[int, typer.Option(help="how many synthetic personas when --personas is "
                                                         "not given")] = 20,
    k: Annotated[int | None, typer.Option("--k", help="personas sampled per question")] = None,
    criteria: Annotated[str | None, typer.Option(help="comma-separated criteria (default: every rubric "
                                                      "dimension)")] = None,
    rubric: Annotated[str | None, typer.Option(help="rubric whose dimensions are the criteria")] = None,
    all_pairs: Annotated[bool | None, typer.Option("--all-pairs/--best-worst",
                                                   help="export every pair with a vote gap, or only "
                                                        "best-vs-worst")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Persona rankings of each question's candidates, symmetric weighted votes, preference pairs."""
    from theraloop.config import load_config
    from theraloop.data._personas import Persona
    from theraloop.data._personas import synthetic_personas as sample_synthetic
    from theraloop.io import check_unique_ids, read_jsonl, write_jsonl
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.prefs._collect import PrefsConfig, collect_preferences
    from theraloop.prefs._generate import Candidate

    prefs_config = load_config(PrefsConfig, config, k=k, rubric=rubric, seed=seed, all_pairs=all_pairs,
                               criteria=criteria.split(",") if criteria else None,
                               **llm_overrides("llm", backend, model, base_url, concurrency, no_cache, threads))
    prefs_config.load_rubric()  # unknown criteria fail here, before any model is loaded
    candidates = read_jsonl(input, Candidate)
    check_unique_ids(candidates, input)
    out = out or Path("runs") / f"prefs-{input.stem}"
    if personas is not None:
        panel = read_jsonl(personas, Persona)
        check_unique_ids(panel, personas)
    else:
        panel = sample_synthetic(synthetic_personas, prefs_config.seed)
        write_jsonl(out / "personas.jsonl", panel)
    llm = build_llm(prefs_config.llm)
    summary = run_sync(collect_preferences(llm, candidates, panel, prefs_config, out,
                                           concurrency=prefs_config.llm.concurrency))
    write_manifest(out, "prefs", prefs_config, inputs={"candidates": input, "personas": personas},
                   seed=prefs_config.seed, extra={"summary": summary.model_dump(), "n_personas": len(panel)})
    typer.echo(f"{summary.questions} questions; ballots {summary.ballots} (valid {summary.valid_ballots}, "
               f"invalid {summary.invalid_ballots})")
    for criterion, count in summary.pairs.items():
        typer.echo(f"  {criterion:>22}: {count} pairs")
    typer.echo(f"wrote {out}")


@reward_app.command("train")
def reward_train_command(
    input: Annotated[Path, typer.Argument(help="preference pairs JSONL (prompt, chosen, rejected[, criterion, "
                                               "weight, question_id])")],
    criterion: Annotated[str | None, typer.Option(help="train on pairs of this criterion")] = None,
    dev: Annotated[Path | None, typer.Option(help="held-out pairs JSONL (default: a grouped share of the "
                                                  "input)")] = None,
    optuna_trials: Annotated[int | None, typer.Option(help="Optuna trials over learning rate and epochs")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="encoder learning rate")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per (prompt, response)")] = None,
    backbone: Annotated[Path | None, typer.Option(help="encoder folder (default: bundled all-MiniLM-L6-v2)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
) -> None:
    """Train a Bradley-Terry reward model for one criterion; reports held-out pairwise accuracy."""
    from theraloop.config import load_config
    from theraloop.manifest import write_manifest
    from theraloop.train._reward import RewardConfig, read_pairs, train_reward_model

    reward_config = load_config(RewardConfig, config, criterion=criterion, optuna_trials=optuna_trials, epochs=epochs,
                                learning_rate=learning_rate, max_length=max_length, threads=threads, seed=seed,
                                backbone=str(backbone) if backbone else None)
    pairs = read_pairs(input, reward_config.criterion)
    dev_pairs = read_pairs(dev, reward_config.criterion) if dev else None
    out = out or Path("runs") / f"reward-{reward_config.criterion or input.stem}"
    result = train_reward_model(pairs, dev_pairs, reward_config, out_dir=out, log=typer.echo)
    write_manifest(out, "reward train", reward_config, inputs={"pairs": input, "dev": dev}, seed=reward_config.seed,
                   extra={"metrics": result.metrics})
    held_out = result.metrics["dev"]
    typer.echo(f"held-out pairwise accuracy {held_out['pairwise_accuracy']:.3f} ({held_out['n']} pairs); "
               f"standardisation mean {result.model.mean:.3f}, sd {result.model.sd:.3f}")
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("prefs")(prefs_command)
    app.add_typer(reward_app, name="reward")

"""`theraloop generate`, `theraloop prefs` and `theraloop reward train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

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


class _DefaultToCollect(TyperGroup):
    """`theraloop prefs CANDIDATES` means `theraloop prefs collect CANDIDATES` (persona rankings);
    `theraloop prefs from-refine TRACE` turns refinement traces into pairs."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["collect", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        """`theraloop prefs --help` shows persona collection's options, then the other subcommands."""
        import click

        collect = self.commands["collect"]
        collect.format_help(click.Context(collect, info_name=ctx.info_name, parent=ctx.parent), formatter)
        self.format_commands(ctx, formatter)


prefs_app = typer.Typer(cls=_DefaultToCollect, help="Preference pairs: persona rankings of candidates (default), "
                                                     "or refinement traces (from-refine).")


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


def from_refine_command(
    trace: Annotated[Path, typer.Argument(help="trace.jsonl written by `theraloop refine`")],
    min_gain: Annotated[float | None, typer.Option(help="keep pairs whose driving-judge gain (aggregate of the "
                                                        "driving dimensions, chosen minus rejected) is at least "
                                                        "this")] = None,
    independent_encoder: Annotated[Path | None, typer.Option(
        help="trained encoder judge that scores both sides now; pairs it scores lower are excluded")] = None,
    independent_scores: Annotated[Path | None, typer.Option(
        help="judgments JSONL of any independent judge keyed by side id (judge OUT/texts.jsonl of a first "
             "run); pairs it scores lower are excluded")] = None,
    independent_from_trace: Annotated[bool, typer.Option(
        "--independent-from-trace", help="use the independent judgments `refine --independent-encoder` stored "
                                         "in the trace (original and final response only)")] = False,
    independent_min_gain: Annotated[float | None, typer.Option(
        help="keep a pair only if the independent judge's mean gain is at least this (default 0: drop only "
             "disagreements; ties are kept)")] = None,
    keep_unmeasured: Annotated[bool, typer.Option(
        "--keep-unmeasured", help="keep pairs the independent judge did not score (default: exclude them)")] = False,
    drive: Annotated[str | None, typer.Option(help="comma-separated driving dimensions for the gain (default: "
                                                   "the refine run's, from config.yaml beside the trace)")] = None,
    per_dimension: Annotated[bool, typer.Option(
        "--per-dimension", help="also write pairs_DIMENSION.jsonl per driving dimension: for each accepted "
                                "revision whose two sides the driving judge scored differently on that "
                                "dimension, the higher-scoring side chosen (the same filters, per pair; a pair "
                                "never chooses an original the refine run's safety checks flagged). "
                                "`theraloop align --pairs OUT` trains on these files")] = False,
    config: ConfigOption = None,
    out: OutOption = None,
) -> None:
    """Preference pairs from refinement traces: each accepted revision chosen over the response it replaced
    (pairs.jsonl), and with --per-dimension one file of pairs per driving dimension."""
    from theraloop.config import load_config
    from theraloop.io import InputError, write_jsonl
    from theraloop.manifest import write_manifest
    from theraloop.prefs._from_refine import CRITERION, FromRefineConfig, pairs_from_refine

    sources = [name for name, given in (("encoder", independent_encoder is not None),
                                        ("scores", independent_scores is not None),
                                        ("trace", independent_from_trace)) if given]
    if len(sources) > 1:
        raise InputError("give one independent judge: --independent-encoder, --independent-scores or "
                         "--independent-from-trace")
    if trace.is_dir():
        trace = trace / "trace.jsonl"  # a refine --out folder
    if not trace.is_file():
        raise InputError(f"{trace}: file not found (expected trace.jsonl written by `theraloop refine`)")
    settings = load_config(FromRefineConfig, config, min_gain=min_gain, independent_min_gain=independent_min_gain,
                           drive=drive.split(",") if drive else None, independent=sources[0] if sources else None,
                           independent_encoder=str(independent_encoder) if independent_encoder else None,
                           independent_scores=str(independent_scores) if independent_scores else None,
                           keep_unmeasured=True if keep_unmeasured else None,
                           per_dimension=True if per_dimension else None)
    out = out or Path("runs") / f"prefs-from-refine-{trace.parent.name or trace.stem}"
    pairs, excluded, texts, summary = pairs_from_refine(trace, settings, log=typer.echo)
    write_jsonl(out / "pairs.jsonl", [pair for pair in pairs if pair.criterion == CRITERION])
    for dimension in summary.dimensions or {}:
        write_jsonl(out / f"pairs_{dimension}.jsonl", [pair for pair in pairs if pair.criterion == dimension])
    write_jsonl(out / "excluded.jsonl", excluded)
    write_jsonl(out / "texts.jsonl", texts)
    write_manifest(out, "prefs from-refine", settings,
                   inputs={"trace": trace, "independent_scores": independent_scores}, seed=None,
                   extra={"summary": summary.model_dump()})
    if summary.mean_gain is not None:
        typer.echo(f"mean driving-judge gain {summary.mean_gain:.3f}"
                   + (f"; mean independent gain {summary.mean_independent_gain:.3f}"
                      if summary.mean_independent_gain is not None else ""))
    if summary.pairs == 0:
        typer.echo("warning: no pairs kept; nothing to train on", err=True)
    for dimension, counts in (summary.dimensions or {}).items():
        if counts.pairs == 0:
            typer.echo(f"warning: no {dimension} pairs kept; pairs_{dimension}.jsonl is empty", err=True)
    typer.echo(f"wrote {out / 'pairs.jsonl'} (train with `theraloop train --method dpo {out / 'pairs.jsonl'} "
               "--model POLICY`)")
    if summary.dimensions is not None:
        typer.echo(f"wrote {len(summary.dimensions)} per-dimension pair files in {out} (align on them with "
                   f"`theraloop align --pairs {out} --policy-model POLICY`)")


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
    prefs_app.command("collect")(prefs_command)
    prefs_app.command("from-refine")(from_refine_command)
    app.add_typer(prefs_app, name="prefs")
    app.add_typer(reward_app, name="reward")

"""`theraloop judge ...`: score responses, train judges, fit calibration."""

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
    MaxCharsOption,
    ModelOption,
    NoCacheOption,
    OnLongOption,
    OutOption,
    SeedOption,
    ThreadsOption,
    llm_overrides,
    load_response_items,
)
from theraloop.records import DEFAULT_MAX_CHARS


class _DefaultToScore(TyperGroup):
    """`theraloop judge FILE` means `theraloop judge score FILE`; bare `theraloop judge` scores the
    bundled examples (README's quick start)."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["score", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        """`theraloop judge --help` shows scoring's own options, then the other subcommands."""
        import click

        score = self.commands["score"]
        score.format_help(click.Context(score, info_name=ctx.info_name, parent=ctx.parent), formatter)
        self.format_commands(ctx, formatter)


judge_app = typer.Typer(cls=_DefaultToScore,
                        help="Score responses on a rubric (default), train judges, calibrate them.")


def print_score_table(summary: dict) -> None:
    typer.echo(f"judged {summary['n']} responses; parsed {summary['parsed']}; "
               f"parse failures {summary['parse_failures']}")
    for key, value in summary["mean_scores"].items():
        typer.echo(f"  {key:>22}: {value:.2f}")
    if "toxicity" in summary:
        toxicity = summary["toxicity"]
        typer.echo(f"  {'toxicity (offline)':>22}: mean {toxicity['mean']:.3f}, "
                   f"{toxicity['n_at_or_above_0.5']} of {toxicity['n']} responses at or above 0.5")


def print_judgments(judgments: list) -> None:
    """One row per response, one column per dimension under its full name."""
    keys = list(dict.fromkeys(key for judgment in judgments if judgment.parse_ok for key in judgment.scores))
    width = max([len("id")] + [len(str(judgment.id)) for judgment in judgments])
    typer.echo(f"{'id':<{width}}  " + "  ".join(keys))
    for judgment in judgments:
        if judgment.parse_ok:
            cells = "  ".join(f"{judgment.scores.get(key, float('nan')):>{len(key)}g}" for key in keys)
        else:
            cells = f"parse failure after {judgment.attempts} attempts"
        typer.echo(f"{judgment.id!s:<{width}}  {cells}")


def warn_if_embedded_judge(llm) -> None:
    """The embedded 135M model exercises the pipeline but cannot judge: say so next to its scores."""
    from theraloop.llm import embedded_gguf_path

    path = embedded_gguf_path()
    if llm is not None and path is not None and str(getattr(llm, "model_id", "")).startswith(path.name):
        typer.echo("note: these scores come from the embedded SmolLM2-135M model, which is too small to judge: its "
                   "scores barely depend on the response (README, Results). For meaningful scores use the trained "
                   "encoder judge (--engine encoder --encoder-path DIR, see `theraloop judge train`) or a capable "
                   "model on a server (--base-url URL --model NAME).", err=True)


@judge_app.command("score")
def score_command(
    input: Annotated[Path | None, typer.Argument(help="JSONL of {id, context, response[, system]} (pairwise: "
                                                      "{id, context, response_a, response_b}); default: the "
                                                      "bundled examples.")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    engine: Annotated[str, typer.Option(help="llm | encoder")] = "llm",
    encoder_path: Annotated[Path | None, typer.Option(help="trained encoder judge folder (--engine encoder)")] = None,
    runtime: Annotated[str, typer.Option(help="--engine encoder: torch | onnx (the folder's ONNX export, "
                                              "several times faster)")] = "torch",
    rubric: Annotated[str | None, typer.Option(help="rubric name or YAML path")] = None,
    mode: Annotated[str | None, typer.Option(help="absolute | pairwise")] = None,
    calibration: Annotated[Path | None, typer.Option(help="calibration JSON from `judge calibrate`")] = None,
    seed: SeedOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
    max_chars: MaxCharsOption = DEFAULT_MAX_CHARS,
    on_long: OnLongOption = "truncate",
) -> None:
    """Score every response in INPUT; writes judgments.jsonl, summary.json and a manifest."""
    from theraloop.config import load_config
    from theraloop.io import check_unique_ids, read_jsonl, write_json
    from theraloop.judge._llm_judge import JudgeConfig, LLMJudge
    from theraloop.judge._run import (
        PairItem,
        compare_items,
        score_items,
        summarize_judgments,
        summarize_pairs,
    )
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.records import bundled_examples_path

    input = input or bundled_examples_path()
    llm = None
    judge_config = load_config(JudgeConfig, config, rubric=rubric, mode=mode, seed=seed,
                               **llm_overrides("llm", backend, model, base_url, concurrency, no_cache, threads))
    out = out or Path("runs") / f"judge-{input.stem}"
    if judge_config.mode == "pairwise":
        if engine != "llm":
            raise typer.BadParameter("pairwise mode needs --engine llm")
        pairs = read_jsonl(input, PairItem)
        check_unique_ids(pairs, input)
        llm = build_llm(judge_config.llm)
        judge = LLMJudge(llm, judge_config)
        verdicts = run_sync(compare_items(judge, pairs, out / "pairwise.jsonl",
                                          concurrency=judge_config.llm.concurrency))
        summary = summarize_pairs(verdicts)
        typer.echo(f"judged {summary['n']} pairs in both orders; parse failures {summary['parse_failures']}")
        for key, counts in summary["dimensions"].items():
            typer.echo(f"  {key:>22}: A {counts['A']}  B {counts['B']}  tie {counts['tie']}  "
                       f"(orders disagreed {counts['position_inconsistent']})")
    else:
        items, _ = load_response_items(input, max_chars, on_long)
        if runtime != "torch" and engine != "encoder":
            raise typer.BadParameter("--runtime applies to --engine encoder")
        if engine == "encoder":
            from theraloop.judge._encoder import EncoderJudge

            if encoder_path is None:
                raise typer.BadParameter("--engine encoder needs --encoder-path (a folder from `judge train`)")
            judge = EncoderJudge.load(encoder_path, runtime=runtime)
        elif engine == "llm":
            llm = build_llm(judge_config.llm)
            judge = LLMJudge(llm, judge_config)
        else:
            raise typer.BadParameter(f"unknown engine '{engine}': use llm or encoder")
        judgments = run_sync(score_items(judge, items, out / "judgments.jsonl",
                                         concurrency=judge_config.llm.concurrency))
        if calibration is not None:
            from theraloop.judge._calibration import Calibration

            judgments = Calibration.load(calibration).apply_all(judgments)
            from theraloop.io import write_jsonl

            write_jsonl(out / "judgments.calibrated.jsonl", judgments)
        summary = summarize_judgments(judgments)
        from theraloop.safety import toxicity_summary

        summary["toxicity"] = toxicity_summary([item.response for item in items])
        print_judgments(judgments)
        print_score_table(summary)
        warn_if_embedded_judge(llm)
    cache = getattr(llm, "cache", None)
    if cache is not None:
        typer.echo(f"completion cache: {cache.hits} hits, {cache.misses} misses")
    write_json(out / "summary.json", summary)
    write_manifest(out, "judge", judge_config, inputs={"input": input, "calibration": calibration},
                   seed=judge_config.seed, extra={"engine": engine})
    typer.echo(f"wrote {out}")


@judge_app.command("calibrate")
def calibrate_command(
    judgments: Annotated[Path, typer.Argument(help="judgments.jsonl from `theraloop judge`")],
    human: Annotated[Path, typer.Option("--human", help="JSONL of {id, ..., human_scores} for the same ids")],
    out: Annotated[Path, typer.Option("--out", "-o", help="calibration JSON to write")] = Path("calibration.json"),
) -> None:
    """Fit an isotonic (monotone) map per dimension from judge scores to human scores."""
    from theraloop.io import read_jsonl
    from theraloop.judge._calibration import Calibration
    from theraloop.judge._types import Judgment
    from theraloop.records import ResponseItem

    human_items = read_jsonl(human, ResponseItem)
    scores = {item.id: item.human_scores for item in human_items if item.human_scores}
    try:
        calibration = Calibration.fit_judgments(read_jsonl(judgments, Judgment), scores)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    calibration.save(out)
    typer.echo(f"calibrated {', '.join(calibration.maps)} on {len(scores)} human-scored items; wrote {out}")


def register(app: typer.Typer) -> None:
    from theraloop.judge._audit_cli import register_audit
    from theraloop.judge._train_cli import register_train

    register_train(judge_app)
    register_audit(judge_app)
    app.add_typer(judge_app, name="judge")

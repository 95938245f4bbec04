"""`theraloop validate`: agreement of judge scores with human ratings (the work is in _validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theraloop.cli_common import ConfigOption, OutOption, SeedOption


def _split_names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def validate_command(
    judgments: Annotated[list[Path] | None, typer.Option(
        "--judgments", metavar="FILE",
        help="judgments.jsonl from `theraloop judge` (repeatable; one table per judge name)")] = None,
    human: Annotated[Path | None, typer.Option(help="JSONL of the same ids with human_scores (and system)")] = None,
    mentalalign: Annotated[Path | None, typer.Option(
        help="MentalAlign-70k: its folder or the shared data folder holding it; runs the benchmark protocol")] = None,
    judges: Annotated[str | None, typer.Option(help="MentalAlign judges, comma-separated (default: all)")] = None,
    dimensions: Annotated[str | None, typer.Option(help="comma-separated (default: all shared dimensions)")] = None,
    cleaning: Annotated[str | None, typer.Option(help="MentalAlign: strict (default) | as_published")] = None,
    include_own_family: Annotated[bool, typer.Option(
        "--include-own-family", help="MentalAlign: keep each judge's own model family's responses")] = False,
    n_boot: Annotated[int | None, typer.Option("--n-boot", help="bootstrap resamples (default 1000)")] = None,
    level: Annotated[float | None, typer.Option(help="confidence level (default 0.95)")] = None,
    calibrate: Annotated[str | None, typer.Option(
        metavar="METHOD", help="isotonic | quantile | linear | auto: fit calibration per judge and dimension on a "
                               "seeded half of the conversations (of the responses, for --judgments), report "
                               "agreement before and after on the other half; writes calibration.json/.md")] = None,
    seed: SeedOption = None,
    config: ConfigOption = None,
    out: OutOption = None,
) -> None:
    """Agreement of judge scores with human ratings; writes validation.json, validation.md and a manifest."""
    from theraloop.config import load_config
    from theraloop.data import find_dataset
    from theraloop.io import read_jsonl
    from theraloop.judge._calibration import CALIBRATION_METHODS
    from theraloop.judge._types import Judgment
    from theraloop.judge._validate import (
        ValidateConfig,
        calibration_study,
        inputs_from_judgments,
        mentalalign_conversation,
        mentalalign_inputs,
        number_text,
        validate,
        write_calibration_study,
        write_validation,
    )
    from theraloop.manifest import write_manifest
    from theraloop.records import ResponseItem

    if (mentalalign is None) == (not judgments):
        raise typer.BadParameter("give either --judgments (with --human) or --mentalalign")
    if calibrate is not None and calibrate not in CALIBRATION_METHODS:
        raise typer.BadParameter(f"use one of {' | '.join(CALIBRATION_METHODS)}", param_hint="--calibrate")
    settings = load_config(ValidateConfig, config, n_boot=n_boot, seed=seed, level=level,
                           dimensions=_split_names(dimensions), judges=_split_names(judges), cleaning=cleaning,
                           exclude_own_family=False if include_own_family else None)
    if mentalalign is not None:
        mentalalign = find_dataset("mentalalign", mentalalign)
        inputs, provenance = mentalalign_inputs(mentalalign, settings)
        validation = validate(inputs, "mentalalign", settings, provenance)
        group_of = mentalalign_conversation
        out = out or Path("runs") / "validate-mentalalign"
        from theraloop.data._mentalalign import mentalalign_paths

        input_files = {f"mentalalign_{rater}": path for rater, path in mentalalign_paths(mentalalign, settings.judges).items()}
    else:
        if human is None:
            raise typer.BadParameter("--judgments needs --human (items with human_scores)")
        loaded = [judgment for path in judgments for judgment in read_jsonl(path, Judgment)]
        items = read_jsonl(human, ResponseItem)
        inputs = inputs_from_judgments(loaded, items, ", ".join(map(str, judgments)), str(human))
        validation = validate(inputs, "judgments", settings)
        group_of = str  # no conversations in a judgments file: each response is its own group
        out = out or Path("runs") / f"validate-{judgments[0].stem}"
        input_files = {"human": human, **{f"judgments_{index}": path for index, path in enumerate(judgments)}}
    write_validation(validation, out)
    if calibrate is not None:
        study = calibration_study(inputs, calibrate, validation.dimensions, settings.seed, group_of)
        write_calibration_study(study, out)
    write_manifest(out, "validate", settings, inputs=input_files, seed=settings.seed,
                   extra={"data": validation.data} if validation.data else None)
    for judge, result in validation.judges.items():
        dimensions = result.agreement.dimensions
        width = max(len(dimension) for dimension in dimensions)
        typer.echo(f"{judge}: response-level agreement with humans")
        typer.echo(f"  {'dimension':<{width}}  ICC(A,1) [95% CI]    bias    tier")
        for dimension, agreement in dimensions.items():
            icc = agreement.response.icc["A,1"]
            interval = f"[{number_text(icc.low, 2)}, {number_text(icc.high, 2)}]"
            typer.echo(f"  {dimension:<{width}}  {number_text(icc.estimate, 2):>5} {interval:<14} "
                       f"{agreement.response.bias:+.2f}   {agreement.response.tier or 'n/a'}")
    if calibrate is not None:
        goal = study.goal_summary()
        typer.echo(f"calibration ({calibrate}), held-out response level: |bias| < 0.1 and ICC(A,1) not below "
                   f"uncalibrated in {goal['meet_goal']} of {goal['cells']} judge x dimension cells")
        for judge, cells in study.cells.items():
            for dimension, cell in cells.items():
                before, after = cell.response["none"], cell.response[cell.method]
                typer.echo(f"  {judge} {dimension}: {cell.method}, bias {before.bias:+.2f} -> {after.bias:+.2f}, "
                           f"ICC(A,1) {number_text(before.icc_a1, 2)} -> {number_text(after.icc_a1, 2)}")
        typer.echo(f"wrote {out / 'calibration.json'} and {out / 'calibration.md'}")
    typer.echo(f"wrote {out / 'validation.json'} and {out / 'validation.md'}")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)

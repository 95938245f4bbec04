"""`theraloop report`: one self-contained HTML file from arena, validation and refine outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    run_dirs: Annotated[list[Path] | None, typer.Argument(
        help="run folders: arena (arena.json), validation (validation.json), refine (refined.jsonl / "
             "trace.jsonl), judge audit (judge_audit.json), simulate (sessions.jsonl, with judged/ if any) or "
             "session arena (session_arena.json)",
        exists=True, file_okay=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write; figures go beside it")] = Path(
        "report.html"),
    validation: Annotated[list[Path] | None, typer.Option(
        "--validation", help="a validation.json (repeatable)", exists=True, dir_okay=False)] = None,
    refine: Annotated[list[Path] | None, typer.Option(
        "--refine", help="a refine output folder (repeatable)", exists=True, file_okay=False)] = None,
    sessions: Annotated[list[Path] | None, typer.Option(
        "--sessions", help="a simulate output folder or sessions JSONL file (repeatable): transcripts with per-turn "
                           "scores and risk markers", exists=True)] = None,
    title: Annotated[str, typer.Option(help="report title")] = "theraloop report",
    max_diffs: Annotated[int, typer.Option(help="refinement diffs shown per refine run")] = 50,
) -> None:
    """Win-rate and significance matrices, safety scatter, judge-human agreement and refinement diffs."""
    from theraloop.report._html import build_report, write_report

    if not (run_dirs or validation or refine or sessions):
        raise typer.BadParameter("give at least one run folder, --validation, --refine or --sessions")
    report = build_report(run_dirs or [], validation or [], refine or [], title=title, max_diffs=max_diffs,
                          sessions=sessions or [])
    path = write_report(report, out)
    typer.echo(f"wrote {path} ({len(report.figures)} figures, {len(report.arenas)} arena, "
               f"{len(report.validations)} validation, {len(report.refinements)} refine"
               + (f", {len(report.sessions)} sessions" if report.sessions else "") + " sections)")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)

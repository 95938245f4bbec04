"""`theraloop review ...`: set up a blinded clinician study, add raters, serve the app, export the ratings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import Field

from theraloop.cli_common import ConfigOption, OutOption, SeedOption
from theraloop.config import StrictModel

review_app = typer.Typer(no_args_is_help=True,
                         help="Blinded clinician review: init a study, add, revoke and re-key raters, serve the web "
                              "app, export.")

DbOption = Annotated[Path | None, typer.Option("--db", help="The study's SQLite file.")]


class ReviewInitConfig(StrictModel):
    db: Path
    items: Path
    mode: Literal["pairwise", "absolute"] = "pairwise"
    rubric: str = "modpo"
    criteria: list[str] | None = Field(default=None, description="rubric dimension keys; default: all of them")
    seed: int | None = Field(default=None, description="blinding and item-order seed; drawn and recorded if unset")


class ReviewRaterConfig(StrictModel):
    db: Path
    name: str


class ReviewDbConfig(StrictModel):
    db: Path


class ReviewServeConfig(StrictModel):
    db: Path
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    session_hours: float = Field(default=12.0, gt=0)
    secure_cookies: bool = False
    max_sessions: int = Field(default=3, ge=1, description="live sign-ins per rater; a new one ends the oldest")
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, description="larger request bodies are refused unread")
    public_origin: str | None = Field(default=None, description="e.g. https://review.example.org behind a proxy")


class ReviewExportConfig(StrictModel):
    db: Path
    out: Path
    judge: Path | None = None


def _split_criteria(criteria: str | None) -> list[str] | None:
    return [key.strip() for key in criteria.split(",") if key.strip()] if criteria else None


@review_app.command("init")
def init_command(
    config: ConfigOption = None,
    db: DbOption = None,
    items: Annotated[Path | None, typer.Option(help="JSONL of pairwise {id, context, response_a, response_b, "
                                                    "system_a, system_b} or absolute {id, context, response, "
                                                    "system} items.")] = None,
    criteria: Annotated[str | None, typer.Option(help="Comma-separated rubric keys, e.g. empathy,safety,overall "
                                                      "(default: every dimension of the rubric).")] = None,
    mode: Annotated[str | None, typer.Option(help="pairwise | absolute")] = None,
    rubric: Annotated[str | None, typer.Option(help="Rubric name or YAML path (default modpo).")] = None,
    seed: SeedOption = None,
) -> None:
    """Create a study database from an items file."""
    import secrets

    from theraloop.config import load_config
    from theraloop.io import InputError, sha256_file
    from theraloop.manifest import package_versions
    from theraloop.review._store import ReviewStore, load_review_items
    from theraloop.rubrics import load_rubric

    settings = load_config(ReviewInitConfig, config, db=db, items=items, criteria=_split_criteria(criteria),
                           mode=mode, rubric=rubric, seed=seed)
    loaded_rubric = load_rubric(settings.rubric)
    if settings.criteria and len(set(settings.criteria)) != len(settings.criteria):
        raise InputError(f"--criteria: each criterion once, got {settings.criteria}")
    try:
        chosen = loaded_rubric.subset(settings.criteria) if settings.criteria else loaded_rubric
    except KeyError as exc:
        raise InputError(f"--criteria: {exc.args[0]}") from None
    study_seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    review_items = load_review_items(settings.items, settings.mode)
    resolved = settings.model_copy(update={"seed": study_seed, "criteria": chosen.keys})
    # Whole sessions (`theraloop sessions review-items`) get pages labelled for transcripts.
    items_kind = "session" if all(item.meta.get("kind") == "session" for item in review_items) else "response"
    store = ReviewStore.create(settings.db, review_items, chosen, settings.mode, study_seed, source={
        "items_kind": items_kind,
        "items_path": str(settings.items), "items_sha256": sha256_file(settings.items),
        "config": resolved.model_dump(mode="json"), "versions": package_versions()})
    study = store.study
    typer.echo(f"created {settings.db}: {study.n_items} {study.mode} items; criteria {', '.join(chosen.keys)} "
               f"(rubric {study.rubric_name}); seed {study.seed}")
    typer.echo("next: `theraloop review add-rater --db ... --name ...` for each rater")


@review_app.command("add-rater")
def add_rater_command(
    config: ConfigOption = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(help="The rater's name (unique within the study).")] = None,
) -> None:
    """Add a rater and print their sign-in token (shown only this once; only its hash is stored)."""
    from theraloop.config import load_config
    from theraloop.review._store import ReviewStore

    settings = load_config(ReviewRaterConfig, config, db=db, name=name)
    rater, token = ReviewStore(settings.db).add_rater(settings.name)
    typer.echo(f"rater {rater.rater_id} ({rater.name}); sign-in token (store it now, it is not shown again):")
    typer.echo(token)


@review_app.command("revoke-rater")
def revoke_rater_command(
    config: ConfigOption = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(help="The rater's name, as in list-raters.")] = None,
) -> None:
    """Refuse a rater's token and end their sessions at once; their answers are kept."""
    from theraloop.config import load_config
    from theraloop.review._store import ReviewStore

    settings = load_config(ReviewRaterConfig, config, db=db, name=name)
    rater = ReviewStore(settings.db).revoke_rater(settings.name)
    typer.echo(f"revoked rater {rater.rater_id} ({rater.name}): token refused, sessions ended; "
               "`rotate-token` gives them a new one")


@review_app.command("rotate-token")
def rotate_token_command(
    config: ConfigOption = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(help="The rater's name, as in list-raters.")] = None,
) -> None:
    """Replace a rater's token (lost or leaked; also reinstates a revoked rater) and end their sessions."""
    from theraloop.config import load_config
    from theraloop.review._store import ReviewStore

    settings = load_config(ReviewRaterConfig, config, db=db, name=name)
    rater, token = ReviewStore(settings.db).rotate_token(settings.name)
    typer.echo(f"new sign-in token for rater {rater.rater_id} ({rater.name}); the old one no longer works "
               "(store it now, it is not shown again):")
    typer.echo(token)


@review_app.command("list-raters")
def list_raters_command(config: ConfigOption = None, db: DbOption = None) -> None:
    """Show raters and their progress."""
    from theraloop.config import load_config
    from theraloop.review._store import ReviewStore

    settings = load_config(ReviewDbConfig, config, db=db)
    rows = ReviewStore(settings.db).rater_progress()
    if not rows:
        typer.echo("no raters yet")
    for row in rows:
        revoked = f"  REVOKED {row.revoked_at[:19]}" if row.revoked_at else ""
        typer.echo(f"{row.rater_id:>5}  {row.name:<30}  {row.items_done}/{row.items_total} items done  "
                   f"({row.answers} answers)  added {row.created_at[:19]}{revoked}")


@review_app.command("serve")
def serve_command(
    config: ConfigOption = None,
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    session_hours: Annotated[float | None, typer.Option(help="Sign-in lifetime in hours (default 12).")] = None,
    secure_cookies: Annotated[bool | None, typer.Option(
        "--secure-cookies/--no-secure-cookies",
        help="Served over HTTPS: Secure __Host- cookies and an HSTS header.")] = None,
    max_sessions: Annotated[int | None, typer.Option(
        help="Live sign-ins per rater; a new sign-in ends the oldest (default 3).")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(
        help="Largest request body accepted, in bytes (default 16384).")] = None,
    public_origin: Annotated[str | None, typer.Option(
        help="The one origin allowed to post, e.g. https://review.example.org (default: the request's own).")] = None,
) -> None:
    """Run the review web app."""
    import uvicorn

    from theraloop.config import load_config
    from theraloop.review._app import create_app

    settings = load_config(ReviewServeConfig, config, db=db, host=host, port=port, session_hours=session_hours,
                           secure_cookies=secure_cookies, max_sessions=max_sessions, max_body_bytes=max_body_bytes,
                           public_origin=public_origin)
    app = create_app(settings.db, session_hours=settings.session_hours, secure_cookies=settings.secure_cookies,
                     max_sessions=settings.max_sessions, max_body_bytes=settings.max_body_bytes,
                     public_origin=settings.public_origin)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.secure_cookies:
        typer.echo("warning: listening beyond this machine; put it behind HTTPS and pass --secure-cookies", err=True)
    typer.echo(f"review app for {settings.db} at http://{settings.host}:{settings.port}/")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


@review_app.command("export")
def export_command(
    config: ConfigOption = None,
    db: DbOption = None,
    out: OutOption = None,
    judge: Annotated[Path | None, typer.Option(help="Pairwise judgments.jsonl (PairJudgment records) for "
                                                    "judge-human agreement.")] = None,
) -> None:
    """Write ratings, labels and agreement statistics (pairwise) or validate-ready scores (absolute)."""
    from theraloop.config import load_config
    from theraloop.manifest import write_manifest
    from theraloop.review._export import export_study, owner_only_files
    from theraloop.review._store import ReviewStore

    settings = load_config(ReviewExportConfig, config, db=db, out=out, judge=judge)
    store = ReviewStore(settings.db)
    study = store.study
    with owner_only_files():
        summary = export_study(store, settings.out, settings.judge)
        write_manifest(settings.out, "review export", settings, inputs={"db": settings.db, "judge": settings.judge},
                       seed=study.seed, extra={"study": {"mode": study.mode, "rubric": study.rubric_name,
                                                         "criteria": summary.criteria, "created_at": study.created_at,
                                                         **study.source}})
    typer.echo(f"{summary.n_ratings} ratings from {summary.n_raters} raters on {summary.n_items} items; "
               f"wrote {', '.join(summary.files)} to {settings.out}")
    if summary.judge is not None:
        typer.echo(f"judge: {summary.judge.n_records} records, {summary.judge.n_parse_failures} parse failures, "
                   f"{summary.judge.n_not_in_study} not in the study, {summary.judge.n_flipped} flipped to item order")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")

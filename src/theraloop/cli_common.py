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
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", min=1, help="CPU threads for the embedded llama.cpp model (default: $THERALOOP_THREADS, else half "
                             "the cores; more threads than free cores makes generation crawl).")]


def llm_overrides(prefix: str, backend: str | None, model: str | None, base_url: str | None,
                  concurrency: int | None, no_cache: bool, threads: int | None = None) -> dict[str, Any]:
    """Dotted config overrides for an LLMConfig section named `prefix` (None means 'not given')."""
    return {
        f"{prefix}.n_threads": threads,
        f"{prefix}.backend": backend,
        f"{prefix}.model": model,
        f"{prefix}.base_url": base_url,
        f"{prefix}.concurrency": concurrency,
        f"{prefix}.cache": False if no_cache else None,
    }
MaxCharsOption = Annotated[int, typer.Option(
    "--max-chars", min=200, help="longest post or response sent to the model, in characters; longer ones are cut "
                                 "in the middle (or skipped with --on-long skip)")]
OnLongOption = Annotated[str, typer.Option("--on-long", help="truncate | skip: what to do with over-long items")]


def load_response_items(path, max_chars: int, on_long: str) -> tuple[list, list[str]]:
    """ResponseItems of a JSONL file: validated, unique ids, over-long ones truncated or skipped with a
    warning printed for each; returns (items, warnings)."""
    from theraloop.io import InputError, check_unique_ids, read_jsonl
    from theraloop.records import ResponseItem, fit_items

    if on_long not in ("truncate", "skip"):
        raise InputError(f"--on-long {on_long!r}: use truncate or skip")
    items = read_jsonl(path, ResponseItem)
    check_unique_ids(items, path)
    items, warnings = fit_items(items, max_chars, on_long, source=str(path))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not items:
        raise InputError(f"{path}: every item was skipped as over-long")
    return items, warnings

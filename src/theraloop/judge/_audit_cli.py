"""`theraloop judge audit`: run the judge audit on any judge engine and write JSON + HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import Field

from theraloop.cli_common import (
    BackendOption,
    BaseUrlOption,
    ConfigOption,
    ModelOption,
    NoCacheOption,
    OutOption,
    SeedOption,
    ThreadsOption,
    llm_overrides,
)
from theraloop.config import StrictModel
from theraloop.judge._audit import AuditConfig
from theraloop.judge._llm_judge import JudgeConfig


class AuditRunConfig(StrictModel):
    engine: Literal["llm", "encoder"] = "llm"
    encoder_path: str | None = Field(None, description="trained encoder judge folder (engine: encoder)")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="LLM judge (any backend; a DPO-trained "
                                                                        "judge is judge.llm.adapter)")
    audit: AuditConfig = Field(default_factory=AuditConfig)
    per_level: int = Field(5, ge=1, description="with --epitome: items per mechanism at human level 0 and 2")


def audit_command(
    input: Annotated[Path | None, typer.Argument(help="JSONL of {id, context, response[, human_scores, system]}; "
                                                      "default: the bundled examples")] = None,
    epitome: Annotated[Path | None, typer.Option(help="EPITOME folder: sample its test split instead of INPUT "
                                                      "(human levels give labelled sensitivity pairs)")] = None,
    per_level: Annotated[int | None, typer.Option(help="with --epitome: items per mechanism at level 0 and 2")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    engine: Annotated[str | None, typer.Option(help="llm | encoder")] = None,
    encoder_path: Annotated[Path | None, typer.Option(help="trained encoder judge folder")] = None,
    rubric: Annotated[str | None, typer.Option(help="LLM judge rubric (name or YAML)")] = None,
    max_items_per_probe: Annotated[int | None, typer.Option(help="items for the costly probes")] = None,
    judge_family: Annotated[str | None, typer.Option(help="judge's model family, for self-preference")] = None,
    seed: SeedOption = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Sensitivity, injection, null, length, position, stability and self-preference probes; exit 1 on failure."""
    from theraloop.config import load_config
    from theraloop.io import check_unique_ids, read_jsonl
    from theraloop.judge._audit import labelled_sample, run_audit
    from theraloop.judge._audit_html import write_audit
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.records import ResponseItem, bundled_examples_path

    run_config = load_config(
        AuditRunConfig, config, engine=engine, encoder_path=str(encoder_path) if encoder_path else None,
        per_level=per_level,
        **{"judge.rubric": rubric, "judge.seed": seed, "audit.seed": seed, "audit.judge_family": judge_family,
           "audit.max_items_per_probe": max_items_per_probe},
        **llm_overrides("judge.llm", backend, model, base_url, None, no_cache, threads))
    if run_config.engine == "encoder":
        from theraloop.judge._encoder import EncoderJudge

        if not run_config.encoder_path:
            raise typer.BadParameter("--engine encoder needs --encoder-path (a folder from `judge train`)")
        judge = EncoderJudge.load(run_config.encoder_path)
    else:
        from theraloop.judge._llm_judge import LLMJudge

        judge = LLMJudge(build_llm(run_config.judge.llm), run_config.judge)
    if epitome is not None:
        from theraloop.data._epitome import epitome_split, load_epitome
        from theraloop.rubrics import load_rubric

        source = epitome
        # Sampled by the EPITOME levels whatever the judge's rubric: another rubric still gets degraded pairs.
        items = labelled_sample(epitome_split(load_epitome(epitome)).test, load_rubric("epitome"),
                                run_config.per_level, seed=run_config.audit.seed)
    else:
        source = input or bundled_examples_path()
        items = read_jsonl(source, ResponseItem)
        check_unique_ids(items, source)
    out = out or Path("runs") / "judge-audit"
    result = run_sync(run_audit(judge, items, run_config.audit, out_dir=out))
    json_path, html_path = write_audit(result, out)
    write_manifest(out, "judge audit", run_config, inputs={"input": source}, seed=run_config.audit.seed)
    typer.echo(f"{result.judge}: {'PASSED' if result.passed else 'FAILED'} "
               f"({len(result.failed())} of {len(result.checks)} checks failed)")
    for check in result.failed()[:20]:
        typer.echo(f"  {check.name:>40} {check.dimension:>22}: {check.value:.3f} (limit {check.threshold:g})")
    typer.echo(f"wrote {json_path} and {html_path}")
    if not result.passed:
        raise typer.Exit(1)


def register_audit(app: typer.Typer) -> None:
    app.command("audit")(audit_command)

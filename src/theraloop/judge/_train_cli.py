"""`theraloop judge train`: train a judge from human-scored responses. Methods dispatch by name, so
another method (a generative judge trained with DPO) slots in beside `encoder`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from theraloop.cli_common import ConfigOption, OutOption, SeedOption

DataOption = Annotated[Path, typer.Option("--data", help="JSONL of ResponseItem {id, context, response, "
                                                         "human_scores} to train on.")]
DevOption = Annotated[Path | None, typer.Option("--dev", help="JSONL of held-out items for model selection "
                                                              "(default: part of --data, grouped by context).")]


def _train_encoder(data: Path, dev: Path | None, out: Path, config_path: Path | None, overrides: dict) -> None:
    from theraloop.config import load_config
    from theraloop.io import write_json
    from theraloop.judge._encoder import EncoderJudgeConfig, read_training_jsonl, train_encoder_judge
    from theraloop.manifest import write_manifest

    config = load_config(EncoderJudgeConfig, config_path, **overrides)
    train_items = read_training_jsonl(data, config)
    dev_items = read_training_jsonl(dev, config) if dev is not None else None
    result = train_encoder_judge(train_items, dev_items, config, out_dir=out, log=typer.echo)
    best = result.judge.training["best_dev"]
    typer.echo(f"best epoch {result.best_epoch}: dev mean macro-F1 {best['mean_macro_f1']:.3f}, "
               f"mean accuracy {best['mean_accuracy']:.3f}, mean MAE {best['mean_mae']:.3f}")
    for key, metrics in best["dimensions"].items():
        if metrics["n"]:
            typer.echo(f"  {key:>22}: accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  "
                       f"MAE {metrics['mae']:.3f}  (n={metrics['n']})")
    write_json(out / "metrics.json", {"best_epoch": result.best_epoch, "history": result.history})
    write_manifest(out, "judge train", config, inputs={"data": data, "dev": dev}, seed=config.seed,
                   extra={"method": "encoder", "judge": result.judge.name})


def _dpo_not_installed(*_args: object) -> None:
    raise typer.BadParameter("--method dpo (a generative judge trained with DPO) is not installed yet; "
                             "use --method encoder", param_hint="--method")


# method name -> trainer(data, dev, out, config_path, flag overrides)
TRAINERS: dict[str, Callable[[Path, Path | None, Path, Path | None, dict], None]] = {
    "encoder": _train_encoder,
    "dpo": _dpo_not_installed,
}


def train_command(
    data: DataOption,
    dev: DevOption = None,
    method: Annotated[str, typer.Option(help=f"judge to train: {' | '.join(TRAINERS)}")] = "encoder",
    config: ConfigOption = None,
    out: OutOption = None,
    rubric: Annotated[str | None, typer.Option(help="rubric name or YAML path (e.g. epitome, therajudge)")] = None,
    head: Annotated[str | None, typer.Option(help="ordinal | regression")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many optimiser steps")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per (context, response) pair")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training batch size")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="encoder learning rate")] = None,
    backbone: Annotated[str | None, typer.Option(help="local encoder folder (default: bundled all-MiniLM-L6-v2)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    seed: SeedOption = None,
) -> None:
    """Train a judge on human scores; writes the judge folder, metrics.json and a manifest into --out.

    A killed encoder run resumes from its last finished epoch when started again with the same --out.
    """
    if method not in TRAINERS:
        raise typer.BadParameter(f"unknown method '{method}': use {' or '.join(TRAINERS)}", param_hint="--method")
    out = out or Path("runs") / f"judge-train-{method}-{data.stem}"
    overrides = {"rubric": rubric, "head": head, "epochs": epochs, "max_steps": max_steps, "max_length": max_length,
                 "batch_size": batch_size, "learning_rate": learning_rate, "backbone": backbone, "threads": threads,
                 "seed": seed}
    TRAINERS[method](data, dev, out, config, overrides)
    typer.echo(f"wrote {out}")


def register_train(judge_app: typer.Typer) -> None:
    """Add `train` to the `judge` command group."""
    judge_app.command("train")(train_command)

"""`theraloop judge train`: train a judge from human-scored responses. Methods dispatch by name:
`encoder` (a fine-tuned encoder with ordinal, categorical or regression heads) and `dpo` (a generative chat
judge, DPO + LoRA)."""

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

    onnx = overrides.get("onnx") or "int8"
    if onnx not in ONNX_CHOICES:
        raise typer.BadParameter(f"unknown --onnx {onnx!r}: use {' | '.join(ONNX_CHOICES)}", param_hint="--onnx")
    config = load_config(EncoderJudgeConfig, config_path, **_method_flags("encoder", overrides))
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
    if onnx != "none":
        typer.echo(f"exported {result.judge.export_onnx(out, quantize=onnx == 'int8')} "
                   f"(score with --engine encoder --runtime onnx)")
    write_json(out / "metrics.json", {"best_epoch": result.best_epoch, "history": result.history})
    write_manifest(out, "judge train", config, inputs={"data": data, "dev": dev}, seed=config.seed,
                   extra={"method": "encoder", "judge": result.judge.name, "onnx": onnx})


def _train_dpo(data: Path, dev: Path | None, out: Path, config_path: Path | None, overrides: dict) -> None:
    from theraloop.config import load_config
    from theraloop.judge._dpo import DPOJudgeConfig, read_pairs_jsonl, resolve_model_path, train_dpo_judge
    from theraloop.manifest import write_manifest

    config = load_config(DPOJudgeConfig, config_path, **_method_flags("dpo", overrides))
    pairs = read_pairs_jsonl(data, config)
    eval_pairs = read_pairs_jsonl(dev, config) if dev is not None else None
    model_path = resolve_model_path(config.model)
    typer.echo(f"{len(pairs)} preference pairs; base model {model_path}")
    result = train_dpo_judge(pairs, model_path, out, config, eval_pairs=eval_pairs, log=typer.echo)
    metrics = result.metrics
    if metrics["logged_steps"]:
        typer.echo(f"{result.steps} steps on {result.train_pairs} pairs: loss {metrics['first_loss']:.4f} -> "
                   f"{metrics['last_loss']:.4f}, reward margin {metrics['first_rewards/margins']:.4f} -> "
                   f"{metrics['last_rewards/margins']:.4f}")
    if "eval" in metrics:
        typer.echo(f"dev: reward margin {metrics['eval']['eval_rewards/margins']:.4f}, "
                   f"chosen preferred {metrics['eval']['eval_rewards/accuracies']:.3f}")
    typer.echo(f"score with the trained judge: theraloop judge ITEMS.jsonl --config {result.judge_config_path}")
    write_manifest(out, "judge train", config, inputs={"data": data, "dev": dev}, seed=config.seed,
                   extra={"method": "dpo", "model": str(model_path), "adapter": result.adapter_dir})


# Flags each method understands; giving another method's flag is an error rather than silently ignored.
METHOD_FLAGS = {
    "encoder": {"rubric", "head", "epochs", "max_steps", "max_length", "batch_size", "learning_rate", "backbone",
                "threads", "seed", "onnx", "input_mode", "span_weight", "focal_gamma", "class_weighting", "patience",
                "freeze_layers", "layers", "decision_weights"},
    "dpo": {"rubric", "model", "epochs", "max_steps", "max_length", "batch_size", "learning_rate", "threads", "seed"},
}

# Flags that are not config fields; the trainer reads them. --onnx: the encoder judge's export after training.
NOT_CONFIG = {"onnx"}
ONNX_CHOICES = ("int8", "fp32", "none")


def _method_flags(method: str, overrides: dict) -> dict:
    """The config fields among the flags; flags that are not config fields (--onnx) are read by the trainer."""
    foreign = sorted(key for key, value in overrides.items() if value is not None and key not in METHOD_FLAGS[method])
    if foreign:
        raise typer.BadParameter(f"--{foreign[0].replace('_', '-')} does not apply to --method {method}")
    return {key: value for key, value in overrides.items() if key in METHOD_FLAGS[method] and key not in NOT_CONFIG}


# method name -> trainer(data, dev, out, config_path, flag overrides)
TRAINERS: dict[str, Callable[[Path, Path | None, Path, Path | None, dict], None]] = {
    "encoder": _train_encoder,
    "dpo": _train_dpo,
}


def train_command(
    data: DataOption,
    dev: DevOption = None,
    method: Annotated[str, typer.Option(help=f"judge to train: {' | '.join(TRAINERS)}")] = "encoder",
    config: ConfigOption = None,
    out: OutOption = None,
    rubric: Annotated[str | None, typer.Option(help="rubric name or YAML path (e.g. epitome, therajudge)")] = None,
    head: Annotated[str | None, typer.Option(help="ordinal | categorical | regression")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many optimiser steps")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per training example")] = None,
    batch_size: Annotated[int | None, typer.Option(help="training batch size")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="learning rate")] = None,
    backbone: Annotated[str | None, typer.Option(help="local encoder folder (default: bundled all-MiniLM-L6-v2)")] = None,
    model: Annotated[str | None, typer.Option(help="--method dpo: local chat model folder or .gguf file "
                                                   "(default: the embedded SmolLM2 GGUF)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    onnx: Annotated[str | None, typer.Option(help="--method encoder: also export for ONNX Runtime scoring: "
                                                  "int8 (default) | fp32 | none")] = None,
    input_mode: Annotated[str | None, typer.Option(help="--method encoder: pair (read post and response together, "
                                                        "default) | response (the response alone)")] = None,
    span_weight: Annotated[float | None, typer.Option(help="--method encoder: weight of the rationale-span tagging "
                                                           "task (needs meta.rationales: {dimension: [response "
                                                           "spans]} in the data); > 0 makes the judge quote the "
                                                           "spans behind each level in its rationales")] = None,
    focal_gamma: Annotated[float | None, typer.Option(help="--method encoder: focal loss gamma (0: plain "
                                                           "cross-entropy)")] = None,
    class_weighting: Annotated[str | None, typer.Option(help="--method encoder: balanced (default) | sqrt | none")] = None,
    patience: Annotated[int | None, typer.Option(help="--method encoder: early stopping: stop after this many "
                                                      "epochs without a better dev score")] = None,
    freeze_layers: Annotated[int | None, typer.Option(help="--method encoder: freeze the embeddings and the first N "
                                                           "layers, caching their outputs (about 3x faster "
                                                           "training with 4 of MiniLM's 6 frozen)")] = None,
    layers: Annotated[int | None, typer.Option(help="--method encoder: keep only the backbone's first N layers "
                                                    "(faster scoring)")] = None,
    decision_weights: Annotated[bool | None, typer.Option(
        "--decision-weights/--no-decision-weights",
        help="--method encoder: after training, choose per dimension the class weights that maximise dev "
             "macro-F1 (default on)")] = None,
    seed: SeedOption = None,
) -> None:
    """Train a judge on human scores; writes the judge folder, metrics.json and a manifest into --out.

    A killed run resumes when started again with the same --out: the encoder from its last finished epoch,
    dpo from its last checkpoint. A dpo run also writes judge.yaml, a config for `theraloop judge --config`.
    """
    if method not in TRAINERS:
        raise typer.BadParameter(f"unknown method '{method}': use {' or '.join(TRAINERS)}", param_hint="--method")
    out = out or Path("runs") / f"judge-train-{method}-{data.stem}"
    overrides = {"rubric": rubric, "head": head, "epochs": epochs, "max_steps": max_steps, "max_length": max_length,
                 "batch_size": batch_size, "learning_rate": learning_rate, "backbone": backbone, "model": model,
                 "threads": threads, "onnx": onnx, "seed": seed, "input_mode": input_mode, "span_weight": span_weight,
                 "focal_gamma": focal_gamma, "class_weighting": class_weighting, "patience": patience,
                 "freeze_layers": freeze_layers, "layers": layers, "decision_weights": decision_weights}
    TRAINERS[method](data, dev, out, config, overrides)
    typer.echo(f"wrote {out}")


def export_command(
    folder: Annotated[Path, typer.Argument(help="encoder judge folder from `judge train --method encoder`")],
    quantize: Annotated[bool, typer.Option("--quantize/--no-quantize",
                                           help="int8 dynamic quantisation of the weights (default) or fp32")] = True,
) -> None:
    """Export a trained encoder judge for ONNX Runtime into its folder; score with `--runtime onnx`."""
    from theraloop.judge._encoder import EncoderJudge

    path = EncoderJudge.load(folder).export_onnx(folder, quantize=quantize)
    typer.echo(f"wrote {path}; score with: theraloop judge ITEMS.jsonl --engine encoder --encoder-path {folder} "
               "--runtime onnx")


def register_train(judge_app: typer.Typer) -> None:
    """Add `train` and `export` to the `judge` command group."""
    judge_app.command("train")(train_command)
    judge_app.command("export")(export_command)

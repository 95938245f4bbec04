"""`theraloop safety screen | check | eval | train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theraloop.cli_common import (
    BackendOption,
    BaseUrlOption,
    ModelOption,
    NoCacheOption,
    OutOption,
    ThreadsOption,
)

safety_app = typer.Typer(no_args_is_help=True, help="Crisis-risk screening of posts, harm checks of responses, "
                                                    "and measuring the guard on labelled data.")

TriageOption = Annotated[bool, typer.Option(
    "--triage/--no-triage", help="add the LLM triage layer (needs a capable model: --base-url/--model; the "
                                 "embedded 135M model is too weak to triage)")]


def _text_of(record: dict, path: Path, line: int, fields: tuple[str, ...]) -> str:
    from theraloop.io import InputError

    for field in fields:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value
    raise InputError(f"{path}:{line}: needs a non-empty text in one of the fields {', '.join(fields)}")


def _read_texts(path: Path, fields: tuple[str, ...]) -> tuple[list[str], list[str]]:
    from theraloop.io import read_jsonl

    records = read_jsonl(path)
    ids = [str(record.get("id", index)) for index, record in enumerate(records, start=1)]
    return ids, [_text_of(record, path, index, fields) for index, record in enumerate(records, start=1)]


def _assessor(triage: bool, backend, model, base_url, no_cache, threads):
    from theraloop.llm import LLMConfig, build_llm
    from theraloop.safety import LLMTriage, SafetyAssessor

    if not triage:
        return SafetyAssessor()
    config = LLMConfig.model_validate({key: value for key, value in {
        "backend": backend, "model": model, "base_url": base_url, "n_threads": threads,
        "cache": False if no_cache else None}.items() if value is not None})
    return SafetyAssessor(triage=LLMTriage(build_llm(config)))


def _batches(items: list, size: int, desc: str):
    from tqdm import tqdm

    with tqdm(total=len(items), desc=desc, unit="item") as bar:
        for start in range(0, len(items), size):
            yield items[start:start + size]
            bar.update(min(size, len(items) - start))


@safety_app.command("screen")
def screen_command(
    input: Annotated[Path, typer.Argument(help="JSONL of posts: {id, text} (or context/post)")],
    out: OutOption = None,
    triage: TriageOption = False,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Risk tier, categories, evidence and the layer that fired, for every post; writes screened.jsonl."""
    from theraloop.io import JSONLAppender

    ids, texts = _read_texts(input, ("text", "context", "post"))
    assessor = _assessor(triage, backend, model, base_url, no_cache, threads)
    out = out or Path("runs") / f"safety-{input.stem}"
    counts: dict[str, int] = {}
    with JSONLAppender(out / "screened.jsonl") as appender:
        done = appender.done_keys()
        todo = [(item_id, text) for item_id, text in zip(ids, texts, strict=True) if item_id not in done]
        for batch in _batches(todo, 64, "screening"):
            for (item_id, _), assessment in zip(batch, assessor.assess_many([text for _, text in batch]), strict=True):
                appender.write({"id": item_id, **assessment.model_dump(mode="json")})
    from theraloop.io import read_jsonl
    from theraloop.safety import RiskTier

    for record in read_jsonl(out / "screened.jsonl"):
        tier = RiskTier(record["tier"]).label
        counts[tier] = counts.get(tier, 0) + 1
        if record["tier"] >= 2:
            fired = sorted({signal["layer"] for signal in record["signals"] if signal["tier"] >= 2})
            failed = [layer["layer"] for layer in record["layers"] if not layer["ok"]]
            evidence = next((signal["evidence"] for signal in record["signals"] if signal["tier"] == record["tier"]), "")
            why = f"layers failed: {', '.join(failed)} (fail closed)" if failed else f"by {', '.join(fired)}"
            typer.echo(f"{record['id']}: {tier.upper()} {', '.join(record['categories'])} ({why}): "
                       f"\"{evidence[:100]}\"")
    summary = ", ".join(f"{tier} {counts.get(tier, 0)}" for tier in ("imminent", "high", "moderate", "low", "none"))
    typer.echo(f"screened {sum(counts.values())} posts with layers {', '.join(assessor.layer_names)}: {summary}")
    typer.echo(f"wrote {out / 'screened.jsonl'}")


@safety_app.command("check")
def check_command(
    input: Annotated[Path, typer.Argument(help="JSONL of responses: {id, response} (context is ignored)")],
    out: OutOption = None,
) -> None:
    """Harmful content in each response (method detail, encouragement, dismissal, secrecy, prescribing)."""
    from theraloop.io import write_jsonl
    from theraloop.safety import SafetyAssessor

    ids, texts = _read_texts(input, ("response", "text"))
    assessor = SafetyAssessor()
    results = [result for batch in _batches(texts, 64, "checking") for result in assessor.check_responses(batch)]
    out = out or Path("runs") / f"safety-check-{input.stem}"
    write_jsonl(out / "checked.jsonl", [{"id": item_id, **result.model_dump(mode="json")}
                                        for item_id, result in zip(ids, results, strict=True)])
    for item_id, result in zip(ids, results, strict=True):
        if result.flagged:
            layers = sorted({signal.layer for signal in result.signals}) or ["a failed layer"]
            typer.echo(f"{item_id}: HARMFUL {', '.join(result.categories)} (by {', '.join(layers)})")
    typer.echo(f"checked {len(results)} responses: {sum(r.flagged for r in results)} flagged; "
               f"wrote {out / 'checked.jsonl'}")


@safety_app.command("eval")
def eval_command(
    input: Annotated[Path, typer.Argument(help="JSONL of labelled posts: {id, text, tier, categories[, kind]}")],
    out: OutOption = None,
    triage: TriageOption = False,
    backend: BackendOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Recall and false-positive rate per layer and category (Wilson intervals), confusion matrix, and an
    HTML page with precision-recall curves; writes metrics.json, predictions.jsonl, report.html."""
    from theraloop.io import check_unique_ids, read_jsonl, write_json, write_jsonl
    from theraloop.safety._eval import LabelledPost, evaluate, pr_curves_png, render_html

    posts = read_jsonl(input, LabelledPost)
    check_unique_ids(posts, input)
    assessor = _assessor(triage, backend, model, base_url, no_cache, threads)
    assessments = [result for batch in _batches(posts, 64, "assessing")
                   for result in assessor.assess_many([post.text for post in batch])]
    metrics = evaluate(posts, assessments)
    out = out or Path("runs") / f"safety-eval-{input.stem}"
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "predictions.jsonl", [{"id": post.id, "truth": post.tier, **a.model_dump(mode="json")}
                                            for post, a in zip(posts, assessments, strict=True)])
    (out / "report.html").write_text(render_html(metrics, pr_curves_png(posts, assessments), f"Safety: {input.name}"),
                                     encoding="utf-8")
    for layer, block in metrics["layers"].items():
        parts = [f"{label} {block[key]['rate']:.3f}" for key, label in (
            ("recall_high_flagged", "recall(high)"), ("recall_any_risk", "recall(any)"),
            ("false_positive_rate_none", "FPR(none)"), ("false_positive_rate_hard_negative", "FPR(hard neg.)"))
            if key in block and block[key]["rate"] is not None]
        typer.echo(f"{layer:>14}: " + "  ".join(parts))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


@safety_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="model folder to write (the shipped one is "
                                                          "src/theraloop/safety/model)")],
    epitome: Annotated[Path | None, typer.Option(help="EPITOME folder (or the shared data folder) for the labelled "
                                                      "real posts; default: found as `theraloop data check` does")] = None,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 6,
    dev_fraction: Annotated[float, typer.Option(help="share held back to choose thresholds")] = 0.2,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    counselchat: Annotated[bool, typer.Option(help="add CounselChat questions on everyday topics as negatives "
                                                   "(found as `theraloop data check` does)")] = True,
    trainable_layers: Annotated[int, typer.Option(help="top MiniLM layers to fine-tune (of 6)")] = 2,
    retrain: Annotated[bool, typer.Option(help="after choosing thresholds, retrain on all examples (else ship the "
                                               "model the development split never trained)")] = True,
    dev_posts: Annotated[list[Path] | None, typer.Option(
        "--dev-posts", help="labelled posts JSONL ({id, text, tier, kind}) that join the development split for "
                            "choosing thresholds and never train; repeatable")] = None,
    train_files: Annotated[list[Path] | None, typer.Option(
        "--train-file", help="more labelled posts ({id, text, tier, categories, kind}) or responses ({id, response, "
                             "harms, kind}) to split and train with the corpus, e.g. a held-out set after its one "
                             "report; repeatable (pass the same files to --thresholds-only)")] = None,
    thresholds_only: Annotated[bool, typer.Option(
        help="keep the model already in --out (same seed and development share) and choose its thresholds "
             "again")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Fine-tune the safety encoder on the written corpus and the labelled EPITOME posts, choose thresholds on a
    development split, retrain on everything and export to int8 ONNX (needs theraloop[train])."""
    from theraloop.data import find_dataset
    from theraloop.safety._fit import fit_and_export, load_dev_posts

    extra_dev = [example for path in dev_posts or [] for example in load_dev_posts(path)]
    try:
        report = fit_and_export(out, find_dataset("epitome", epitome), epochs=epochs, dev_fraction=dev_fraction,
                                seed=seed, threads=threads,
                                counselchat_root=find_dataset("counselchat") if counselchat else None,
                                trainable_layers=trainable_layers, retrain=retrain, extra_dev=extra_dev,
                                thresholds_only=thresholds_only, train_files=train_files)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    for key, value in report["dev"].items():
        typer.echo(f"  dev {key}: {value}")
    typer.echo(f"thresholds: {report['thresholds']}")
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(safety_app, name="safety")

"""Benchmark: the trained encoder judge on EPITOME (Sharma et al., 2020), three empathy mechanisms.

Trains on the train part of the fixed split (grouped by seeker post, 75:5:20), selects the epoch on
dev, evaluates the saved-and-reloaded judge on the held-out test part, and writes accuracy and
macro-F1 per mechanism beside the paper's published numbers, with training wall time, peak memory
and scoring throughput.

    python bench/epitome_judge.py                      # writes bench/results/epitome_judge.json
    python bench/epitome_judge.py --scoring-only --model-dir DIR   # only the torch vs ONNX scoring numbers,
                                                       # on an already trained judge, into the same JSON

Scoring is timed for torch, ONNX fp32 and ONNX int8 on the whole test part, with the macro-F1 each runtime
reaches and the load average around the timing (the machine is shared; the numbers move with its load),
in wall-clock responses per second and in responses per CPU-second of the scoring process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Sharma et al. (2020), EMNLP, empathy identification with their multi-task RoBERTa bi-encoder
# (random 75:5:20 split of rows). Transcribed from memory, not from a copy of the paper; see "published_note".
PUBLISHED = {
    "emotional_reactions": {"accuracy": 0.7943, "macro_f1": 0.7446},
    "interpretations": {"accuracy": 0.8404, "macro_f1": 0.6260},
    "explorations": {"accuracy": 0.9261, "macro_f1": 0.7258},
}
PUBLISHED_NOTE = (
    "Numbers transcribed from memory of Sharma et al. (2020), EMNLP, RoBERTa-based bi-encoder; not "
    "verified against the paper from this machine (no copy of its results table was reachable). Their test "
    "set is a random 20% of rows; ours is grouped by seeker post and de-duplicated by response id, so the "
    "comparison is indicative, not like for like."
)


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def _majority_baseline(train, test, keys) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    baseline = {}
    for key in keys:
        majority = Counter(int(item.human_scores[key]) for item in train).most_common(1)[0][0]
        truth = [int(item.human_scores[key]) for item in test]
        guess = [majority] * len(truth)
        baseline[key] = {"level": majority, "accuracy": float(accuracy_score(truth, guess)),
                         "macro_f1": float(f1_score(truth, guess, average="macro", zero_division=0))}
    return baseline


def runtime_scoring(model_dir: Path, test, threads: int, batch_size: int) -> dict:
    """Throughput and test macro-F1 of torch, ONNX fp32 and ONNX int8 scoring of one judge (exported into
    model_dir, int8 last, so the folder ends with the default export), with their agreement with torch."""
    from theraloop.judge._encoder import EncoderJudge, evaluate_predictions

    torch_judge = EncoderJudge.load(model_dir, threads=threads)
    runs = {}
    for name in ("torch", "onnx_fp32", "onnx_int8"):
        if name == "torch":
            judge = torch_judge
        else:
            torch_judge.export_onnx(model_dir, quantize=name == "onnx_int8")
            judge = EncoderJudge.load(model_dir, threads=threads, runtime="onnx")
        judge.predict(test[:batch_size], batch_size=batch_size)  # warm-up, not timed
        load_before = os.getloadavg()
        started, cpu_started = time.perf_counter(), time.process_time()
        predictions = judge.predict_detailed(test, batch_size=batch_size)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        metrics = evaluate_predictions(predictions, test, judge.rubric)
        runs[name] = {"judge": judge.name, "seconds": round(seconds, 2),
                      "responses_per_second": round(len(test) / seconds, 1),
                      # CPU time of this process (all its threads): less sensitive to other processes' load.
                      "cpu_seconds": round(cpu_seconds, 2),
                      "responses_per_cpu_second": round(len(test) / cpu_seconds, 1),
                      "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                      "test_mean_macro_f1": metrics["mean_macro_f1"], "predictions": predictions}
    reference = runs["torch"].pop("predictions")
    for name in ("onnx_fp32", "onnx_int8"):
        predictions = runs[name].pop("predictions")
        runs[name]["macro_f1_minus_torch"] = runs[name]["test_mean_macro_f1"] - runs["torch"]["test_mean_macro_f1"]
        runs[name]["levels_equal_to_torch"] = sum(
            a.levels[key] == b.levels[key] for a, b in zip(reference, predictions, strict=True) for key in a.levels
        ) / (len(reference) * len(judge.rubric.keys))
        runs[name]["mean_abs_expected_difference"] = sum(
            abs(a.expected[key] - b.expected[key]) for a, b in zip(reference, predictions, strict=True)
            for key in a.expected) / (len(reference) * len(judge.rubric.keys))
    return {"responses": len(test), "batch_size": batch_size, "threads": threads, "cpu_count": os.cpu_count(),
            "model_dir": str(model_dir), "runtimes": runs,
            "responses_per_second": {name: run["responses_per_second"] for name, run in runs.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "epitome_judge.json")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "runs" / "bench-epitome-encoder-judge",
                        help="where the trained judge is saved (a killed run resumes from here)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the fixed grouped split")
    parser.add_argument("--score-batch-size", type=int, default=32)
    parser.add_argument("--scoring-only", action="store_true",
                        help="time the runtimes on the judge in --model-dir and update only 'scoring' in --out")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from theraloop.data._epitome import EPITOME_MECHANISMS, epitome_split, load_epitome, verify_epitome
    from theraloop.io import write_json
    from theraloop.judge._encoder import (
        EncoderJudge,
        EncoderJudgeConfig,
        evaluate_predictions,
        train_encoder_judge,
    )
    from theraloop.manifest import package_versions

    torch.set_num_threads(args.threads)
    hashes = verify_epitome(args.data)
    items = load_epitome(args.data)
    train, dev, test = epitome_split(items, seed=args.split_seed)
    if args.scoring_only:
        report = json.loads(args.out.read_text(encoding="utf-8"))
        report["scoring"] = {**runtime_scoring(args.model_dir, test, args.threads, args.score_batch_size),
                             "command": "python bench/epitome_judge.py " + shlex.join(
                                 argv if argv is not None else sys.argv[1:]),
                             "judge_training_steps": EncoderJudge.load(args.model_dir).training.get("steps"),
                             "note": "--scoring-only: the judge timed here may not be the one trained for "
                                     "'model' and 'test'; speed hardly depends on the weights"}
        write_json(args.out, report)
        print(f"wrote {args.out}: responses/s {report['scoring']['responses_per_second']}")
        return report
    config = EncoderJudgeConfig(rubric="epitome", epochs=args.epochs, max_length=args.max_length,
                                batch_size=args.batch_size, threads=args.threads, seed=args.seed)
    command = "python bench/epitome_judge.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    started = time.perf_counter()
    result = train_encoder_judge(train, dev, config, out_dir=args.model_dir, log=print)
    training_seconds = time.perf_counter() - started

    judge = EncoderJudge.load(args.model_dir, threads=args.threads)  # evaluate exactly what was saved
    predictions = judge.predict_detailed(test, batch_size=args.score_batch_size)
    metrics = evaluate_predictions(predictions, test, judge.rubric)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    report = {
        "benchmark": "EPITOME (Reddit) empathy identification with the trained encoder judge",
        "command": command,
        "data": {"root": str(args.data), "sha256": hashes, "responses": len(items),
                 "responses_with_conflicting_repeat_annotations":
                     sum(bool(item.meta.get("conflicting_annotations")) for item in items),
                 "duplicates": "one item per rp_id; repeated rows keep the first annotation"},
        "split": {"method": "grouped by seeker post, 75:5:20", "seed": args.split_seed,
                  "train": len(train), "dev": len(dev), "test": len(test),
                  "test_levels": {key: dict(sorted(Counter(int(i.human_scores[key]) for i in test).items()))
                                  for key in EPITOME_MECHANISMS}},
        "model": {"judge": judge.name, "config": config.model_dump(mode="json"), "best_epoch": result.best_epoch,
                  "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"],
                               "dev_mean_macro_f1": h["dev"]["mean_macro_f1"],
                               "dev_mean_accuracy": h["dev"]["mean_accuracy"]} for h in result.history]},
        "test": {key: {name: metrics["dimensions"][key][name]
                       for name in ("n", "accuracy", "macro_f1", "mae", "quadratic_kappa", "confusion")}
                 for key in EPITOME_MECHANISMS},
        "test_mean": {"accuracy": metrics["mean_accuracy"], "macro_f1": metrics["mean_macro_f1"]},
        "majority_baseline": _majority_baseline(train, test, EPITOME_MECHANISMS),
        "published_sharma_2020": PUBLISHED,
        "published_note": PUBLISHED_NOTE,
        "units": "accuracy and macro-F1 as fractions in [0, 1]",
        "training_wall_seconds": round(training_seconds, 1),
        "peak_memory_mb": round(peak_rss_mb, 1),
        "scoring": runtime_scoring(args.model_dir, test, args.threads, args.score_batch_size),
        "versions": package_versions(),
        "note": "timings depend on machine load; re-run on a quiet machine for final numbers",
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    for key in EPITOME_MECHANISMS:
        ours, theirs = report["test"][key], PUBLISHED[key]
        print(f"  {key:>20}: accuracy {ours['accuracy']:.4f} (paper {theirs['accuracy']:.4f})  "
              f"macro-F1 {ours['macro_f1']:.4f} (paper {theirs['macro_f1']:.4f})")
    print(f"  training {training_seconds:.0f} s, peak memory {peak_rss_mb:.0f} MB, "
          f"scoring responses/s {report['scoring']['responses_per_second']}")
    return report


if __name__ == "__main__":
    main()

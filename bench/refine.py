"""Benchmark: the refinement loop on EPITOME help-seeker posts with their original human responses.

The embedded default model drives the loop (judge, Critic, Coach, Therapist). Improvement is also
measured by an independent judge the loop never sees: the encoder judge trained on EPITOME's human
empathy levels (emotional reactions, interpretations, explorations; 0-2). The sample comes from
that judge's held-out test split, so it never scores posts it was trained on.

    python bench/epitome_judge.py --epochs 3 --max-length 192 --model-dir runs/refine-independent-encoder \
        --out /tmp/epitome_judge_3ep.json          # the independent judge (about 20 minutes)
    python bench/refine.py                         # writes bench/results/refine.json (about 1 hour)

A killed run resumes from its trace (runs/bench-refine/trace.jsonl); LLM calls are cached.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def judge_test_split(data_root: Path, split_seed: int = 0):
    from theraloop.data import epitome_split, load_epitome

    return epitome_split(load_epitome(data_root), seed=split_seed).test


def independent_judge_quality(judge, test) -> dict:
    """How well the independent judge agrees with EPITOME's human levels on the whole test split."""
    from theraloop.judge._encoder import evaluate_predictions

    metrics = evaluate_predictions(judge.predict_detailed(test), test, judge.rubric)
    return {key: {"accuracy": values["accuracy"], "macro_f1": values["macro_f1"]}
            for key, values in metrics["dimensions"].items()}


def sample_items(test, n: int, seed: int):
    """n posts from the encoder judge's test split, one original human response each, seeded."""
    by_post: dict[str, list] = {}
    for item in test:
        by_post.setdefault(item.meta["sp_id"], []).append(item)
    rng = random.Random(seed)
    posts = sorted(by_post)
    rng.shuffle(posts)
    chosen = []
    for sp_id in posts[:n]:
        item = rng.choice(sorted(by_post[sp_id], key=lambda candidate: candidate.id))
        chosen.append(item.model_copy(update={"human_scores": None}))
    return chosen


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--n", type=int, default=50, help="help-seeker posts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rationale-max-chars", type=int, default=150,
                        help="shorter rationales keep the 135M model's judge calls quick")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads; one is fastest for this 135M model when the cores are shared")
    parser.add_argument("--encoder", type=Path, default=REPO_ROOT / "runs" / "refine-independent-encoder")
    parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "bench-refine")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "refine.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from theraloop.agent import (
        IndependentJudgeConfig,
        RefineConfig,
        build_independent_judge,
        build_refiner,
        refine_metrics,
    )
    from theraloop.io import write_json
    from theraloop.judge import JudgeConfig
    from theraloop.llm import LLMConfig, describe_default, run_sync
    from theraloop.manifest import package_versions

    if not (args.encoder / "encoder_judge.json").exists():
        raise SystemExit(f"no trained encoder judge at {args.encoder}: train it first (see this file's docstring)")
    test = judge_test_split(args.data)
    items = sample_items(test, args.n, args.seed)
    judge_config = JudgeConfig(rationale_max_chars=args.rationale_max_chars, llm=LLMConfig(n_threads=args.threads))
    config = RefineConfig(judge=judge_config, max_rounds=args.rounds,
                          seed=args.seed, independent=IndependentJudgeConfig(encoder_path=str(args.encoder)))
    refiner = build_refiner(config)
    independent = build_independent_judge(config.independent)
    started = time.perf_counter()
    results = run_sync(refiner.refine_many(items, args.run_dir / "trace.jsonl", independent=independent))
    elapsed = time.perf_counter() - started
    report = {
        "benchmark": "refinement loop on EPITOME posts with their original human responses",
        "command": "python bench/refine.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "model": describe_default(),
        "driving_judge": "LLM judge (TheraJudge rubric, 7 dimensions, 1-5) on the embedded model",
        "independent_judge": f"encoder judge trained on EPITOME human empathy levels (0-2): {args.encoder}",
        "independent_judge_test_agreement": independent_judge_quality(independent, test),
        "sample": {"n": len(items), "seed": args.seed, "source": "EPITOME judge split (seed 0), test part",
                   "ids": [item.id for item in items]},
        "config": config.model_dump(mode="json"),
        "metrics": refine_metrics(results, refiner.drive),
        "wall_time_s_this_invocation": elapsed,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "versions": package_versions(),
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

"""Benchmark: the judge audit (theraloop.judge.run_audit) on EPITOME for the embedded LLM judge and
the encoder judge, both on the EPITOME rubric so human levels give labelled sensitivity pairs.

The sample comes from the held-out test part of the fixed grouped split: per mechanism, --per-level
responses humans rated 2 and as many rated 0. The costly probes (injection, null, length, position,
stability) use the first --probe-items of them. The encoder judge is trained here on the train part
unless --encoder-path names one (a small run: --train-steps optimiser steps).

    python bench/judge_audit.py --judge embedded     # writes bench/results/judge_audit_embedded.json
    python bench/judge_audit.py --judge encoder      # writes bench/results/judge_audit_encoder.json

A killed run resumes: judgments (and the embedded model's completion cache) live in --work-dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def _encoder_judge(args, train, dev):
    from theraloop.judge._encoder import EncoderJudge, EncoderJudgeConfig, train_encoder_judge

    path = args.encoder_path or args.work_dir / "encoder"
    trained = None
    if not (path / "encoder_judge.json").is_file():
        config = EncoderJudgeConfig(rubric="epitome", epochs=1, max_steps=args.train_steps, threads=args.threads,
                                    seed=args.seed)
        started = time.perf_counter()
        train_encoder_judge(train, dev, config, out_dir=path, log=print)
        trained = {"steps": args.train_steps, "epochs": 1, "train_seconds": round(time.perf_counter() - started, 1)}
    return EncoderJudge.load(path, threads=args.threads), {"path": str(path), "trained_here": trained}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", choices=["embedded", "encoder"], required=True)
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--out", type=Path, help="default: bench/results/judge_audit_<judge>.json")
    parser.add_argument("--work-dir", type=Path, help="default: runs/bench-judge-audit-<judge>")
    parser.add_argument("--per-level", type=int, default=5, help="items per mechanism and human level (0, 2)")
    parser.add_argument("--probe-items", type=int, default=10, help="items for the costly probes")
    parser.add_argument("--pad-tokens", default="100,200")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", help="comma-separated subset of the audit's probes (default: all)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--rationale-chars", type=int, default=120, help="embedded judge: rationale length cap")
    parser.add_argument("--temperature", type=float, default=0.0, help="embedded judge temperature")
    parser.add_argument("--encoder-path", type=Path, help="a trained encoder judge folder (else trained here)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out = args.out or REPO_ROOT / "bench" / "results" / f"judge_audit_{args.judge}.json"
    args.work_dir = args.work_dir or REPO_ROOT / "runs" / f"bench-judge-audit-{args.judge}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from theraloop.data._epitome import epitome_split, load_epitome
    from theraloop.io import write_json
    from theraloop.judge import JudgeConfig, LLMJudge
    from theraloop.judge._audit import AuditConfig, labelled_sample, run_audit
    from theraloop.llm import LLMConfig, build_llm, run_sync
    from theraloop.rubrics import load_rubric

    split = epitome_split(load_epitome(args.data / "epitome"))
    items = labelled_sample(split.test, load_rubric("epitome"), args.per_level, seed=args.seed)
    judge_info: dict = {}
    if args.judge == "embedded":
        config = JudgeConfig(rubric="epitome", rationale_max_chars=args.rationale_chars, temperature=args.temperature,
                             seed=args.seed, llm=LLMConfig(n_threads=args.threads, concurrency=1,
                                                           cache_path=str(args.work_dir / "llm-cache.sqlite")))
        judge = LLMJudge(build_llm(config.llm), config)
        judge_info = {"judge_config": config.model_dump(mode="json")}
        family = "smollm2"
    else:
        judge, judge_info = _encoder_judge(args, split.train, split.dev)
        family = None
    probes = {"probes": args.probes.split(",")} if args.probes else {}
    audit_config = AuditConfig(**probes, max_items_per_probe=args.probe_items, repeats=args.repeats, n_boot=args.n_boot,
                               pad_tokens=[int(t) for t in args.pad_tokens.split(",")], seed=args.seed,
                               judge_family=family, concurrency=1 if args.judge == "embedded" else 32)
    started = time.perf_counter()
    result = run_sync(run_audit(judge, items, audit_config, out_dir=args.work_dir))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    record = {
        "benchmark": "judge_audit",
        "command": "python bench/judge_audit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": "EPITOME Reddit, test part of the grouped 75:5:20 split (seed 0)",
        "sample": {"n_items": len(items), "per_level": args.per_level, "n_probe_items": result.n_probe_items,
                   "human_levels": {key: {str(level): sum(item.human_scores[key] == level for item in items)
                                          for level in (0, 1, 2)} for key in items[0].human_scores}},
        "judge": judge_info,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "machine": {"cpu_threads": args.threads, "python": platform.python_version()},
        "git_commit": commit,
        "summary": {"passed": result.passed, "n_checks": len(result.checks), "n_failed": len(result.failed()),
                    "failed_by_probe": {probe: sum(c.probe == probe for c in result.failed())
                                        for probe in sorted({c.probe for c in result.checks})}},
        "audit": result.model_dump(mode="json"),
    }
    write_json(args.out, record)
    print(f"{result.judge}: {'PASSED' if result.passed else 'FAILED'} "
          f"({len(result.failed())} of {len(result.checks)} checks failed); wrote {args.out}")
    return record


if __name__ == "__main__":
    main()

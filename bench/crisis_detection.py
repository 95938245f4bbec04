"""Benchmark: the lexical crisis-signal detector (`theraloop.agent.assess_risk`) on labelled EPITOME posts.

The labelled set (src/theraloop/safety/corpus/epitome_crisis_labels.csv, guideline in docs/crisis_labelling.md) holds
ids, text hashes, tiers and categories but no text: the posts are joined back from the shared EPITOME
data by sp_id and checked against the stored hash. Writes recall at the high tier, recall for any
risk (>= moderate), the false-positive rate on posts labelled none, the tier confusion matrix,
per-category recall and throughput, on dev and test, raw and weighted back to the population.

    python bench/crisis_detection.py                                   # writes bench/results/crisis_detection.json
    python bench/crisis_detection.py sample --out /tmp/to_label.jsonl  # the posts to annotate (outside the repo)
    python bench/crisis_detection.py split --annotations a.csv         # hash + seeded split -> the labels CSV
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS_CSV = REPO_ROOT / "src" / "theraloop" / "safety" / "corpus" / "epitome_crisis_labels.csv"
RESULTS_JSON = REPO_ROOT / "bench" / "results" / "crisis_detection.json"
TIERS = ("none", "low", "moderate", "high")
CATEGORIES = ("suicidal_ideation", "self_harm", "harm_to_others", "abuse", "psychosis")
LABEL_COLUMNS = ("sp_id", "text_sha256_16", "stratum", "tier", "categories", "split")

SAMPLE_SEED = 0
SPLIT_SEED = 0
RANDOM_STRATUM_SIZE = 500
KEYWORD_STRATUM_SIZE = 500
DEV_FRACTION = 0.3
# Enrichment only: a deliberately broad net of risk-adjacent words, written before labelling and
# independent of the detector's patterns, so that positives are not too rare. A post outside this net
# can only enter the sample through the random stratum; the population-weighted metrics use that.
BROAD_RISK_KEYWORDS = re.compile(
    r"suicid|kill|\bdie\b|\bdying|\bdead\b|\bdeath|end (?:it|my|things|everything)|alive|\blive\b|\bcut|"
    r"self[- ]?harm|hurt|harm|overdos|pills|abus|\brape|assault|\bhit|\bbeat|voices|hallucinat|paranoi|"
    r"give up|hopeless|worthless|no point|\bgun|\bhang|\bjump|bridge|razor|blade|disappear|exist",
    re.IGNORECASE,
)


# The same metrics (sample, unweighted) for the detector's patterns before they were tuned on dev,
# measured once with this script; kept so the gain, and the dev/test gap it leaves, stay visible.
BASELINE_BEFORE_TUNING = {
    "dev": {"recall_high": 0.506, "recall_any_risk": 0.6738, "false_positive_rate": 0.0513, "flag_rate_low": 0.0667},
    "test": {"recall_high": 0.487, "recall_any_risk": 0.603, "false_positive_rate": 0.0, "flag_rate_low": 0.0929},
}


def _default_data_root() -> Path:
    from theraloop.data import shared_data_root

    return shared_data_root(beside=REPO_ROOT)


def text_sha16(text: str) -> str:
    """The first 16 hex digits of the post's sha256 (UTF-8), to detect a changed source text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sample_for_labelling(posts: list, seed: int = SAMPLE_SEED) -> list[tuple[object, str]]:
    """(post, stratum) pairs: `random` drawn uniformly from all posts, then `keyword` drawn uniformly
    from the keyword-matched posts not already drawn."""
    rng = random.Random(seed)
    ordered = sorted(posts, key=lambda post: post.id)  # independent of file order
    random_part = rng.sample(ordered, RANDOM_STRATUM_SIZE)
    taken = {post.id for post in random_part}
    pool = [post for post in ordered if post.id not in taken and BROAD_RISK_KEYWORDS.search(post.text)]
    keyword_part = rng.sample(pool, min(KEYWORD_STRATUM_SIZE, len(pool)))
    return [(post, "random") for post in random_part] + [(post, "keyword") for post in keyword_part]


def stratified_split(ids: list[str], tiers: list[str], dev_fraction: float = DEV_FRACTION,
                     seed: int = SPLIT_SEED) -> dict[str, str]:
    """{sp_id: dev|test}, stratified by tier (sklearn's train_test_split, a fixed random_state)."""
    from sklearn.model_selection import train_test_split

    dev, _ = train_test_split(ids, train_size=round(dev_fraction * len(ids)), stratify=tiers, random_state=seed)
    dev_ids = set(dev)
    return {sp_id: "dev" if sp_id in dev_ids else "test" for sp_id in ids}


def read_labels(path: Path = LABELS_CSV) -> list[dict]:
    """The labelled rows, categories as a list; a bad tier or category names the line."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            categories = [c for c in row["categories"].split("|") if c]
            if row["tier"] not in TIERS or not set(categories) <= set(CATEGORIES):
                raise ValueError(f"{path}:{line}: tier {row['tier']!r} or categories {row['categories']!r} invalid")
            rows.append({**row, "categories": categories})
    return rows


def join_posts(labels: list[dict], data_root: Path) -> list[dict]:
    """Labels with their post text from the shared data, refusing any post whose hash changed."""
    from theraloop.data import seeker_posts

    texts = {post.id: post.text for post in seeker_posts(Path(data_root) / "epitome")}
    joined = []
    for row in labels:
        text = texts.get(row["sp_id"])
        if text is None or text_sha16(text) != row["text_sha256_16"]:
            raise ValueError(f"post {row['sp_id']}: missing from the data or its text changed (hash mismatch)")
        joined.append({**row, "text": text})
    return joined


def _ratio(hits: float, total: float) -> float | None:
    return round(hits / total, 4) if total else None


def detection_metrics(truth: list[str], predicted: list[str], truth_categories: list[list[str]],
                      predicted_categories: list[list[str]], weights: list[float] | None = None) -> dict:
    """Recall at the high tier, recall for any risk (>= moderate), false-positive rate (predicted >=
    moderate on posts labelled none), the tier confusion matrix (rows truth, columns prediction) and
    recall per category (the category detected, at any tier >= moderate). `weights` reweights posts
    to the population; counts stay unweighted."""
    weights = weights or [1.0] * len(truth)
    rank = {tier: index for index, tier in enumerate(TIERS)}

    def weighted_rate(condition, selected) -> tuple[float | None, int]:
        chosen = [i for i in range(len(truth)) if selected(i)]
        total = sum(weights[i] for i in chosen)
        return _ratio(sum(weights[i] for i in chosen if condition(i)), total), len(chosen)

    flagged = lambda i: rank[predicted[i]] >= rank["moderate"]  # noqa: E731 - a one-line predicate
    recall_high, n_high = weighted_rate(lambda i: predicted[i] == "high", lambda i: truth[i] == "high")
    recall_risk, n_risk = weighted_rate(flagged, lambda i: rank[truth[i]] >= rank["moderate"])
    fpr, n_none = weighted_rate(flagged, lambda i: truth[i] == "none")
    fpr_high, _ = weighted_rate(lambda i: predicted[i] == "high", lambda i: truth[i] == "none")
    flag_rate_low, n_low = weighted_rate(flagged, lambda i: truth[i] == "low")
    confusion = [[sum(1 for t, p in zip(truth, predicted, strict=True) if t == row and p == col) for col in TIERS]
                 for row in TIERS]
    per_category = {}
    for category in CATEGORIES:
        rate, n = weighted_rate(lambda i, c=category: c in predicted_categories[i] and flagged(i),
                                lambda i, c=category: c in truth_categories[i])
        per_category[category] = {"n": n, "recall": rate}
    return {"n": len(truth), "recall_high": recall_high, "n_high": n_high,
            "recall_high_as_any_risk": weighted_rate(flagged, lambda i: truth[i] == "high")[0],
            "recall_any_risk": recall_risk, "n_any_risk": n_risk,
            "false_positive_rate": fpr, "false_positive_rate_high": fpr_high, "n_none": n_none,
            "flag_rate_low": flag_rate_low, "n_low": n_low,
            "confusion": {"labels": list(TIERS), "rows_truth_columns_predicted": confusion},
            "per_category_recall": per_category}


def exact_ci(hits: int, total: int, level: float = 0.95) -> list[float] | None:
    """Clopper-Pearson interval of a proportion (scipy's exact binomial interval)."""
    from scipy.stats import binomtest

    if not total:
        return None
    interval = binomtest(hits, total).proportion_ci(confidence_level=level, method="exact")
    return [round(interval.low, 4), round(interval.high, 4)]


def with_intervals(metrics: dict) -> dict:
    """Unweighted metrics plus 95% exact intervals for the headline rates (counts recovered from rate x n)."""
    pairs = {"recall_high": "n_high", "recall_any_risk": "n_any_risk", "false_positive_rate": "n_none"}
    intervals = {name: exact_ci(round(metrics[name] * metrics[n]), metrics[n]) for name, n in pairs.items()
                 if metrics[name] is not None}
    return {**metrics, "ci95_exact": intervals}


def population_weights(rows: list[dict], n_population: int, n_keyword_population: int) -> list[float]:
    """Post-stratification weights (population count / sample count) for keyword-matched and other
    posts, so rates estimate what the detector does on all EPITOME posts, not on the enriched sample."""
    matched = [bool(BROAD_RISK_KEYWORDS.search(row["text"])) for row in rows]
    n_matched = sum(matched)
    n_other = len(rows) - n_matched
    other_population = n_population - n_keyword_population
    return [n_keyword_population / n_matched if m else other_population / n_other for m in matched]


def _cmd_sample(args) -> None:
    from theraloop.data import seeker_posts

    posts = seeker_posts(args.data / "epitome")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        for post, stratum in sample_for_labelling(posts):
            handle.write(json.dumps({"sp_id": post.id, "stratum": stratum, "text": post.text}, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} (outside the repository: it holds post text)")


def _cmd_split(args) -> None:
    """Annotations (sp_id, tier, categories) -> the labels CSV with hash, stratum and a seeded split."""
    from theraloop.data import seeker_posts

    posts = {post.id: post for post in seeker_posts(args.data / "epitome")}
    strata = {post.id: stratum for post, stratum in sample_for_labelling(list(posts.values()))}
    with open(args.annotations, encoding="utf-8", newline="") as handle:
        annotations = list(csv.DictReader(handle))
    ids = [row["sp_id"] for row in annotations]
    splits = stratified_split(ids, [row["tier"] for row in annotations])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    order = {sp_id: index for index, (sp_id, _) in enumerate(strata.items())}
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in sorted(annotations, key=lambda r: order[r["sp_id"]]):
            writer.writerow({"sp_id": row["sp_id"], "text_sha256_16": text_sha16(posts[row["sp_id"]].text),
                             "stratum": strata[row["sp_id"]], "tier": row["tier"],
                             "categories": row["categories"], "split": splits[row["sp_id"]]})
    print(f"wrote {args.out}: {len(ids)} posts, {Counter(splits.values())}")


def _evaluate(rows: list[dict], weights: list[float] | None) -> dict:
    from theraloop.agent import assess_risk

    assessments = [assess_risk(row["text"]) for row in rows]
    return detection_metrics([row["tier"] for row in rows], [a.tier.label for a in assessments],
                             [row["categories"] for row in rows], [list(a.categories) for a in assessments], weights)


def _cmd_run(args, argv: list[str] | None) -> dict:
    from theraloop.agent import assess_risk
    from theraloop.data import seeker_posts
    from theraloop.io import sha256_file, write_json
    from theraloop.manifest import package_versions

    rows = join_posts(read_labels(args.labels), args.data)
    population = seeker_posts(args.data / "epitome")
    n_keyword_population = sum(bool(BROAD_RISK_KEYWORDS.search(post.text)) for post in population)
    results = {}
    for split in ("dev", "test"):
        part = [row for row in rows if row["split"] == split]
        results[split] = {"sample": with_intervals(_evaluate(part, None)),
                          "population_weighted": _evaluate(part, population_weights(part, len(population),
                                                                                    n_keyword_population)),
                          "by_stratum": {stratum: _evaluate([r for r in part if r["stratum"] == stratum], None)
                                         for stratum in ("random", "keyword")}}

    texts = [post.text for post in population]
    started = time.perf_counter()
    for _ in range(args.repeats):
        for text in texts:
            assess_risk(text)
    seconds = time.perf_counter() - started

    report = {
        "benchmark": "crisis-signal detection (theraloop.agent.assess_risk) on labelled EPITOME seeker posts",
        "command": "python bench/crisis_detection.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "labels": {"path": str(args.labels.relative_to(REPO_ROOT)) if args.labels.is_relative_to(REPO_ROOT)
                   else str(args.labels), "sha256": sha256_file(args.labels),
                   "guideline": "docs/crisis_labelling.md",
                   "annotator": "a single annotator (an AI assistant); no inter-annotator agreement measured",
                   "tiers": {split: dict(Counter(r["tier"] for r in rows if r["split"] == split)) for split in ("dev", "test")},
                   "strata": dict(Counter(r["stratum"] for r in rows))},
        "definitions": {
            "recall_high": "share of posts labelled high that the detector puts at high",
            "recall_high_as_any_risk": "share of posts labelled high that the detector flags (>= moderate)",
            "recall_any_risk": "share of posts labelled moderate or high that the detector flags (>= moderate)",
            "false_positive_rate": "share of posts labelled none that the detector flags (>= moderate)",
            "false_positive_rate_high": "share of posts labelled none that the detector puts at high",
            "flag_rate_low": "share of posts labelled low (distress, no current risk signal) that the detector "
                             "flags (>= moderate): over-escalation, not counted as a false positive",
            "per_category_recall": "share of posts labelled with the category whose flagged assessment names it",
            "sample": "raw rates on the enriched sample (half random, half keyword-matched)",
            "population_weighted": "post-stratified to all EPITOME posts (keyword-matched vs not), estimates "
                                   "the rates on unselected posts",
            "by_stratum": "raw rates within the random and the keyword stratum"},
        "tuning": "patterns tuned by reading the dev part only; the test part was not inspected",
        "baseline_before_tuning": BASELINE_BEFORE_TUNING,
        "dev": results["dev"],
        "test": results["test"],
        "throughput": {"posts": len(texts) * args.repeats, "seconds": round(seconds, 3),
                       "posts_per_second": round(len(texts) * args.repeats / seconds, 1)},
        "versions": package_versions(),
        "note": "throughput depends on machine load; single-process, pure Python regular expressions",
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    for split in ("dev", "test"):
        m = results[split]["sample"]
        w = results[split]["population_weighted"]
        print(f"  {split}: n={m['n']} recall(high)={m['recall_high']} recall(>=moderate)={m['recall_any_risk']} "
              f"FPR={m['false_positive_rate']} | population-weighted recall(high)={w['recall_high']} "
              f"FPR={w['false_positive_rate']}")
    print(f"  throughput {report['throughput']['posts_per_second']} posts/s")
    return report


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "sample", "split"))
    parser.add_argument("--data", type=Path, default=_default_data_root(), help="folder holding epitome/")
    parser.add_argument("--labels", type=Path, default=LABELS_CSV)
    parser.add_argument("--annotations", type=Path, help="split: CSV of sp_id, tier, categories")
    parser.add_argument("--out", type=Path, help="run: the results JSON; sample: posts JSONL; split: labels CSV")
    parser.add_argument("--repeats", type=int, default=3, help="run: passes over all posts for throughput")
    args = parser.parse_args(argv)
    if args.command == "sample":
        if args.out is None:
            parser.error("sample needs --out (outside the repository)")
        return _cmd_sample(args)
    if args.command == "split":
        args.out = args.out or LABELS_CSV
        return _cmd_split(args)
    args.out = args.out or RESULTS_JSON
    return _cmd_run(args, argv)


if __name__ == "__main__":
    main()

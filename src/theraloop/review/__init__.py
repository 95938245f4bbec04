"""Blinded clinician review: a FastAPI + SQLite app where raters compare two anonymised responses
(or score one) per criterion, with per-rater randomised sides, saved answers and an audit trail;
exported to per-criterion labels and the human-study agreement statistics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from theraloop.review._export import (
    ExportSummary,
    JudgeLabels,
    absolute_score_items,
    agreement_reports,
    export_study,
    human_labels,
    load_judge_labels,
    owner_only_files,
)
from theraloop.review._store import (
    PAIRWISE_VALUES,
    AbsoluteReviewItem,
    AccessEntry,
    AuditEntry,
    Criterion,
    ItemView,
    PairwiseReviewItem,
    Progress,
    Rater,
    RaterProgress,
    Rating,
    ReviewStore,
    StoredItem,
    StudyInfo,
    load_review_items,
    presentation_swapped,
    rater_item_order,
    rater_pseudonym,
    swap_label,
)

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(db: str | Path, **options: Any) -> FastAPI:
    """The FastAPI review app for the study in `db`; `options` as in `theraloop.review._app.create_app`
    (session_hours, secure_cookies, max_sessions, max_body_bytes, public_origin, throttle). FastAPI is
    the optional `review` extra, so it is imported here rather than with the package (which the CLI
    loads on every start)."""
    from theraloop.review._app import create_app as _create_app

    return _create_app(db, **options)


__all__ = [
    "PAIRWISE_VALUES",
    "AbsoluteReviewItem",
    "AccessEntry",
    "AuditEntry",
    "Criterion",
    "ExportSummary",
    "ItemView",
    "JudgeLabels",
    "PairwiseReviewItem",
    "Progress",
    "Rater",
    "RaterProgress",
    "Rating",
    "ReviewStore",
    "StoredItem",
    "StudyInfo",
    "absolute_score_items",
    "agreement_reports",
    "create_app",
    "export_study",
    "human_labels",
    "load_judge_labels",
    "load_review_items",
    "owner_only_files",
    "presentation_swapped",
    "rater_item_order",
    "rater_pseudonym",
    "swap_label",
]

"""Blinded clinician review: a FastAPI + SQLite app where raters compare two anonymised responses
(or score one) per criterion, with per-rater randomised sides, saved answers and an audit trail;
exported to per-criterion labels and the human-study agreement statistics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from theraloop.review._export import (
    ExportSummary,
    JudgeLabels,
    absolute_score_items,
    agreement_reports,
    export_study,
    human_labels,
    load_judge_labels,
)
from theraloop.review._store import (
    PAIRWISE_VALUES,
    AbsoluteReviewItem,
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


def create_app(db: str | Path, session_hours: float = 12.0, secure_cookies: bool = False) -> FastAPI:
    """The FastAPI review app for the study in `db`. FastAPI is the optional `review` extra, so it is
    imported here rather than with the package (which the CLI loads on every start)."""
    from theraloop.review._app import create_app as _create_app

    return _create_app(db, session_hours=session_hours, secure_cookies=secure_cookies)


__all__ = [
    "PAIRWISE_VALUES",
    "AbsoluteReviewItem",
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
    "presentation_swapped",
    "rater_item_order",
    "rater_pseudonym",
    "swap_label",
]

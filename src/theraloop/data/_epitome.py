"""EPITOME (Sharma et al., 2020, EMNLP), Reddit portion: responses rated on three empathy mechanisms.

Two uses: (1) responses with human levels 0/1/2 per mechanism, for training and benchmarking the
encoder judge on a fixed held-out split grouped by seeker post; (2) the seeker posts alone, split
train/test the way the MODPO psychotherapy paper did (2,979 posts: 2,379 / 600) for alignment.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np
from pydantic import BaseModel

from theraloop.io import InputError, sha256_file
from theraloop.records import ResponseItem

T = TypeVar("T")

# Mechanism key (as in the bundled `epitome` rubric) -> file name, in the order the paper lists them.
EPITOME_FILES: dict[str, str] = {
    "emotional_reactions": "emotional-reactions-reddit.csv",
    "interpretations": "interpretations-reddit.csv",
    "explorations": "explorations-reddit.csv",
}
# Upstream commit 0e11f98901527550885dbf253bd2af92dbcec43b of behavioral-data/Empathy-Mental-Health.
EPITOME_SHA256: dict[str, str] = {
    "emotional_reactions": "225b28ffdc257f8a997d557eb937e78b68235e6203c87c7e2203d00fef8545cc",
    "interpretations": "2cedbe4252c919d22a6f46685afa16d3192a91e3306c2d4a386be12a30ad3f29",
    "explorations": "9efa1af8e0537c16894379598f2076cb380ae18aacd9a8d26ebd381f5b7f9645",
}
EPITOME_MECHANISMS: tuple[str, ...] = tuple(EPITOME_FILES)
_COLUMNS = ("sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales")
# The ER file had the word "reddit" stripped and whitespace changed in some texts; IP and EX agree
# exactly, so texts come from IP (the file the MODPO split pins) and EX is checked against it.
_TEXT_SOURCE = "interpretations"


class _Row(NamedTuple):
    line: int
    sp_id: str
    rp_id: str
    seeker_post: str
    response_post: str
    level: int
    rationales: list[str]


def epitome_paths(root: str | Path) -> dict[str, Path]:
    """The three CSVs under `root` (the folder holding them, or a folder with an `epitome/` inside)."""
    root = Path(root)
    if not (root / EPITOME_FILES[_TEXT_SOURCE]).exists() and (root / "epitome").is_dir():
        root = root / "epitome"
    paths = {key: root / name for key, name in EPITOME_FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"EPITOME files not found: {', '.join(missing)}")
    return paths


def verify_epitome(root: str | Path) -> dict[str, str]:
    """Check each CSV against the pinned sha256; returns {mechanism: sha256}."""
    hashes = {}
    for key, path in epitome_paths(root).items():
        actual = sha256_file(path)
        if actual != EPITOME_SHA256[key]:
            raise InputError(f"{path}: sha256 {actual} differs from the pinned {EPITOME_SHA256[key]} "
                             "(upstream commit 0e11f98); the file was changed or is another version")
        hashes[key] = actual
    return hashes


def _read_rows(path: Path) -> list[_Row]:
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise InputError(f"{path}:1: expected columns {', '.join(_COLUMNS)}, got {reader.fieldnames}")
        for record in reader:
            line = reader.line_num  # last physical line of the record; texts may span lines
            level_text = (record["level"] or "").strip()
            if level_text not in {"0", "1", "2"}:
                raise InputError(f"{path}:{line}: field 'level': expected 0, 1 or 2, got {level_text!r}")
            for field in ("sp_id", "rp_id"):
                if not (record[field] or "").strip():
                    raise InputError(f"{path}:{line}: field '{field}': missing")
            spans = [span.strip() for span in (record["rationales"] or "").split("|") if span.strip()]
            rows.append(_Row(line, record["sp_id"].strip(), record["rp_id"].strip(), record["seeker_post"] or "",
                             record["response_post"] or "", int(level_text), spans))
    return rows


def _read_aligned(root: str | Path) -> dict[str, list[_Row]]:
    """All three files, checked to describe the same (seeker post, response) pair on every row."""
    paths = epitome_paths(root)
    tables = {key: _read_rows(path) for key, path in paths.items()}
    reference = tables[_TEXT_SOURCE]
    for key, rows in tables.items():
        if len(rows) != len(reference):
            raise InputError(f"{paths[key]}: {len(rows)} rows but {paths[_TEXT_SOURCE]} has {len(reference)}; "
                             "the files must be aligned row by row")
        for row, ref in zip(rows, reference, strict=True):
            for field in ("sp_id", "rp_id"):
                if getattr(row, field) != getattr(ref, field):
                    raise InputError(f"{paths[key]}:{row.line}: field '{field}': {getattr(row, field)!r} but "
                                     f"{paths[_TEXT_SOURCE].name} has {getattr(ref, field)!r} on the same row")
            if key == "explorations" and (row.seeker_post, row.response_post) != (ref.seeker_post, ref.response_post):
                raise InputError(f"{paths[key]}:{row.line}: texts differ from {paths[_TEXT_SOURCE].name} "
                                 "on the same row")
    return tables


def load_epitome(root: str | Path, duplicates: Literal["first", "drop_conflicting"] = "first",
                 verify: bool = True) -> list[ResponseItem]:
    """One ResponseItem per response (id = rp_id) with human levels for the three mechanisms.

    Some responses appear on more than one row (same texts, annotated again). `duplicates="first"`
    keeps the first row's levels and records the other rows' levels in `meta["other_annotations"]`;
    `"drop_conflicting"` drops responses whose repeated annotations disagree on any mechanism.
    `meta` holds sp_id, the rationale spans per mechanism and `annotations` (rows seen).
    """
    if duplicates not in ("first", "drop_conflicting"):
        raise ValueError(f"duplicates must be 'first' or 'drop_conflicting', got {duplicates!r}")
    if verify:
        verify_epitome(root)
    tables = _read_aligned(root)
    rows_by_response: dict[str, list[int]] = {}
    for index, row in enumerate(tables[_TEXT_SOURCE]):
        rows_by_response.setdefault(row.rp_id, []).append(index)

    items = []
    for rp_id, indices in rows_by_response.items():
        annotations = [{key: tables[key][index].level for key in EPITOME_MECHANISMS} for index in indices]
        conflicting = any(other != annotations[0] for other in annotations[1:])
        if conflicting and duplicates == "drop_conflicting":
            continue
        first = indices[0]
        text_row = tables[_TEXT_SOURCE][first]
        meta = {
            "sp_id": text_row.sp_id,
            "rationales": {key: tables[key][first].rationales for key in EPITOME_MECHANISMS},
            "annotations": len(indices),
            "source": "epitome-reddit",
        }
        if len(indices) > 1:
            meta["other_annotations"] = annotations[1:]
            meta["conflicting_annotations"] = conflicting
        items.append(ResponseItem(id=rp_id, context=text_row.seeker_post, response=text_row.response_post,
                                  system="human", human_scores=dict(annotations[0]), meta=meta))
    return items


class EpitomeSplit(NamedTuple):
    train: list[ResponseItem]
    dev: list[ResponseItem]
    test: list[ResponseItem]


def grouped_split(items: Sequence[T], fractions: Sequence[float], seed: int,
                  group_of: Callable[[T], str]) -> list[list[T]]:
    """Split items into parts of about `fractions` of the items, never putting a group in two parts.

    Groups are shuffled with `seed` (after sorting, so input order does not matter) and dealt to the
    parts from the last to the first until each later part reaches its target size; the first part
    takes the rest. Items keep their input order inside each part.
    """
    if any(fraction < 0 for fraction in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    members: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        members.setdefault(group_of(item), []).append(index)
    order = np.random.default_rng(seed).permutation(len(members))
    groups = sorted(members)
    shuffled = [groups[position] for position in order]
    targets = [round(fraction * len(items)) for fraction in fractions]
    part_of_index: dict[int, int] = {}
    cursor = 0
    for part in range(len(fractions) - 1, 0, -1):
        size = 0
        while cursor < len(shuffled) and size < targets[part]:
            for index in members[shuffled[cursor]]:
                part_of_index[index] = part
            size += len(members[shuffled[cursor]])
            cursor += 1
    parts: list[list[T]] = [[] for _ in fractions]
    for index, item in enumerate(items):
        parts[part_of_index.get(index, 0)].append(item)
    return parts


def epitome_split(items: Sequence[ResponseItem], seed: int = 0,
                  fractions: tuple[float, float, float] = (0.75, 0.05, 0.20)) -> EpitomeSplit:
    """The fixed train/dev/test split for the judge benchmark: the paper's 75:5:20 proportions, but
    grouped by seeker post so no post (and none of its responses) is in two parts."""
    train, dev, test = grouped_split(items, fractions, seed, lambda item: str(item.meta.get("sp_id", item.context)))
    return EpitomeSplit(train, dev, test)


class SeekerPost(BaseModel):
    id: str
    text: str


class ModpoSplit(BaseModel):
    """The alignment stage's seeker posts, split like the MODPO psychotherapy paper."""

    train: list[SeekerPost]
    test: list[SeekerPost]
    input_path: str
    input_sha256: str
    seed: int
    counts: dict[str, int]


def _seeker_posts_with_counts(root: str | Path, min_chars: int, max_chars: int,
                              min_words: int) -> tuple[list[SeekerPost], dict[str, int], Path, str]:
    path = epitome_paths(root)[_TEXT_SOURCE]
    digest = sha256_file(path)
    if digest != EPITOME_SHA256[_TEXT_SOURCE]:
        raise InputError(f"{path}: sha256 {digest} differs from the pinned {EPITOME_SHA256[_TEXT_SOURCE]}; "
                         "the seeker-post split is defined on that exact file")
    rows = _read_rows(path)
    present = [row for row in rows if row.seeker_post.strip()]
    seen: set[str] = set()
    unique = []
    for row in present:
        if row.sp_id not in seen:
            seen.add(row.sp_id)
            unique.append(row)
    kept = [row for row in unique
            if min_chars <= len(row.seeker_post) <= max_chars and len(row.seeker_post.split()) >= min_words]
    counts = {"rows": len(rows), "missing": len(rows) - len(present), "duplicates": len(present) - len(unique),
              "filtered_out": len(unique) - len(kept), "posts": len(kept)}
    return [SeekerPost(id=row.sp_id, text=row.seeker_post) for row in kept], counts, path, digest


def seeker_posts(root: str | Path, min_chars: int = 10, max_chars: int = 2000, min_words: int = 3) -> list[SeekerPost]:
    """Seeker posts from the pinned IP file: missing dropped, one per post id (first row), length-filtered."""
    return _seeker_posts_with_counts(root, min_chars, max_chars, min_words)[0]


def modpo_split(root: str | Path, test_size: int = 600, seed: int = 42) -> ModpoSplit:
    """Train/test split of the seeker posts, stratified by length quartile (characters), as in
    sklearn `train_test_split(posts, test_size=600, stratify=quartile, random_state=42)`."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    posts, counts, path, digest = _seeker_posts_with_counts(root, 10, 2000, 3)
    quartiles = pd.qcut([len(post.text) for post in posts], 4, labels=False)
    train, test = train_test_split(posts, test_size=test_size, stratify=quartiles, random_state=seed)
    return ModpoSplit(train=list(train), test=list(test), input_path=str(path), input_sha256=digest, seed=seed,
                      counts={**counts, "train": len(train), "test": len(test)})


__all__ = [
    "EPITOME_FILES",
    "EPITOME_MECHANISMS",
    "EPITOME_SHA256",
    "EpitomeSplit",
    "ModpoSplit",
    "SeekerPost",
    "epitome_paths",
    "epitome_split",
    "grouped_split",
    "load_epitome",
    "modpo_split",
    "seeker_posts",
    "verify_epitome",
]

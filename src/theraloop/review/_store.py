"""The review study in one SQLite file: items, criteria, raters, sessions, answers and their audit trail,
plus an access log of sign-ins, sign-outs and token changes.

Every read and write that touches answers takes the signed-in rater and addresses items by that
rater's own sequence position, so nothing here can reach another rater's answers. Answers are
stored in item terms (the item's response_a / response_b); the per-rater left/right swap is
undone on the way in and redone on the way out.

The file holds system names and unblinded ratings, so it is created owner-only (0600); SQLite gives
its -wal and -shm files the database file's permissions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from theraloop.io import InputError, check_unique_ids, read_jsonl
from theraloop.rubrics import Rubric

Mode = Literal["pairwise", "absolute"]
PAIRWISE_VALUES: tuple[str, ...] = ("A", "B", "tie")
_SCHEMA_VERSION = 2
AccessEvent = Literal["rater_added", "signin", "signin_refused", "signout", "session_limit", "revoked",
                      "token_rotated"]

_ACCESS_LOG_TABLE = """
CREATE TABLE access_log (
    pk INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    rater_pk INTEGER REFERENCES raters(pk),
    client TEXT,
    at TEXT NOT NULL
)"""
# Statements that bring a database of the key's version to the next one, run in one transaction.
_MIGRATIONS = {1: ["ALTER TABLE raters ADD COLUMN revoked_at TEXT", _ACCESS_LOG_TABLE]}

_SCHEMA = """
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('pairwise', 'absolute')),
    rubric_name TEXT NOT NULL,
    rubric_title TEXT NOT NULL,
    scale_min INTEGER NOT NULL,
    scale_max INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    source_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE criteria (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    question TEXT NOT NULL,
    anchors_json TEXT NOT NULL
);
CREATE TABLE items (
    pk INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    context TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT,
    system_a TEXT,
    system_b TEXT,
    meta_json TEXT NOT NULL
);
CREATE TABLE raters (
    pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE sessions (
    id_sha256 TEXT PRIMARY KEY,
    rater_pk INTEGER NOT NULL REFERENCES raters(pk) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE answers (
    rater_pk INTEGER NOT NULL REFERENCES raters(pk),
    item_pk INTEGER NOT NULL REFERENCES items(pk),
    criterion TEXT NOT NULL REFERENCES criteria(key),
    value TEXT NOT NULL,
    first_answered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rater_pk, item_pk, criterion)
);
CREATE TABLE answer_log (
    pk INTEGER PRIMARY KEY,
    rater_pk INTEGER NOT NULL REFERENCES raters(pk),
    item_pk INTEGER NOT NULL REFERENCES items(pk),
    criterion TEXT NOT NULL REFERENCES criteria(key),
    previous_value TEXT,
    value TEXT NOT NULL,
    shown_swapped INTEGER NOT NULL,
    at TEXT NOT NULL
);
""" + _ACCESS_LOG_TABLE


def _timestamp(moment: _dt.datetime) -> str:
    # Fixed width, so text comparison in SQL orders timestamps correctly.
    return moment.astimezone(_dt.UTC).isoformat(timespec="microseconds")


def _now() -> str:
    return _timestamp(_dt.datetime.now(_dt.UTC))


def rater_pseudonym(rater_pk: int) -> str:
    """The pseudonymous rater id used in exports (names stay in raters.json)."""
    return f"R{rater_pk}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()[:8], "big")


def presentation_swapped(seed: int, rater_pk: int, item_id: str) -> bool:
    """Whether this rater sees the item's response_b on the left (as "Response A").

    A hash rather than a stateful RNG, so the order is the same on every page load and restart and
    does not depend on which items exist or in which order they were loaded.
    """
    return bool(_digest_int(seed, rater_pk, item_id, "side") & 1)


def rater_item_order(seed: int, rater_pk: int, item_ids: Sequence[str]) -> list[str]:
    """The order in which this rater works through the items (a seeded per-rater shuffle)."""
    return sorted(item_ids, key=lambda item_id: (_digest_int(seed, rater_pk, item_id, "order"), item_id))


def swap_label(label: str) -> str:
    return {"A": "B", "B": "A"}.get(label, label)


class _ItemBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    context: str = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class PairwiseReviewItem(_ItemBase):
    """Two responses to one post; system names are kept for the export and never shown."""

    response_a: str = Field(min_length=1)
    response_b: str = Field(min_length=1)
    system_a: str | None = None
    system_b: str | None = None

    _blank = field_validator("context", "response_a", "response_b")(_not_blank)


class AbsoluteReviewItem(_ItemBase):
    """One response to one post, rated on the rubric's scale."""

    response: str = Field(min_length=1)
    system: str | None = None

    _blank = field_validator("context", "response")(_not_blank)


class Rater(BaseModel):
    model_config = ConfigDict(frozen=True)

    pk: int
    name: str

    @property
    def rater_id(self) -> str:
        return rater_pseudonym(self.pk)


class RaterProgress(BaseModel):
    rater_id: str
    name: str
    created_at: str
    revoked_at: str | None
    items_done: int
    items_total: int
    answers: int


class Progress(BaseModel):
    """One rater's progress: an item is done when every criterion has an answer."""

    done: int
    total: int
    complete: list[bool] = Field(description="per position in the rater's order (0-based)")

    def next_unanswered(self, after: int = 0) -> int | None:
        """The first incomplete 1-based position after `after`, wrapping round; None when all are done."""
        for offset in range(1, self.total + 1):
            position = (after + offset - 1) % self.total + 1
            if not self.complete[position - 1]:
                return position
        return None


class Criterion(BaseModel):
    key: str
    name: str
    question: str
    anchors: dict[int, str]


class StudyInfo(BaseModel):
    mode: Mode
    rubric_name: str
    rubric_title: str
    scale_min: int
    scale_max: int
    seed: int
    criteria: list[Criterion]
    n_items: int
    source: dict[str, Any]
    created_at: str

    @property
    def allowed_values(self) -> tuple[str, ...]:
        """Answer values on the page and in the database (scores are stored as text)."""
        if self.mode == "pairwise":
            return PAIRWISE_VALUES
        return tuple(str(level) for level in range(self.scale_min, self.scale_max + 1))


class ItemView(BaseModel):
    """What one rater sees for one item, in display terms: nothing here names a system or an item id."""

    position: int
    total: int
    context: str
    responses: list[str] = Field(description="[shown as A, shown as B] or [the response] in absolute mode")
    answers: dict[str, str] = Field(description="criterion -> this rater's value, in display terms")


class Rating(BaseModel):
    """One exported answer, in item terms."""

    item_id: str
    rater_id: str
    criterion: str
    value: str
    system_a: str | None
    system_b: str | None
    shown_swapped: bool
    first_answered_at: str
    updated_at: str
    revisions: int


class AuditEntry(BaseModel):
    item_id: str
    rater_id: str
    criterion: str
    previous_value: str | None
    value: str
    shown_swapped: bool
    at: str


class AccessEntry(BaseModel):
    """One sign-in, refused sign-in, sign-out or token change; `client` is the network address
    when the event came over HTTP."""

    event: AccessEvent
    rater_id: str | None
    client: str | None
    at: str


class StoredItem(BaseModel):
    """An item as stored; in absolute mode the response is response_a and response_b is None."""

    id: str
    context: str
    response_a: str
    response_b: str | None
    system_a: str | None
    system_b: str | None
    meta: dict[str, Any]


class ReviewStore:
    """One review study. Opens a short-lived connection per operation, so it is safe to share
    between the server's worker threads; SQLite's WAL and busy timeout serialise the writers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: review database not found (create it with `theraloop review init`)")
        try:
            with self._connect() as conn:
                row = conn.execute("SELECT schema_version FROM study WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a review database ({exc})") from None
        if row is None or not 1 <= row["schema_version"] <= _SCHEMA_VERSION:
            raise InputError(f"{self.path}: not a review database of schema version 1..{_SCHEMA_VERSION}")
        if row["schema_version"] < _SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        with self._transaction() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = conn.execute("SELECT schema_version FROM study WHERE id = 1").fetchone()[0]
            while version < _SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
            conn.execute("UPDATE study SET schema_version = ? WHERE id = 1", (version,))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged answer survives a power cut, not only a killed process.
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @classmethod
    def create(cls, path: str | Path, items: Sequence[PairwiseReviewItem] | Sequence[AbsoluteReviewItem],
               rubric: Rubric, mode: Mode, seed: int, source: dict[str, Any] | None = None) -> ReviewStore:
        """Create a new study database; `rubric` holds exactly the criteria to ask, in order."""
        path = Path(path)
        if not items:
            raise InputError("the study has no items")
        expected = PairwiseReviewItem if mode == "pairwise" else AbsoluteReviewItem
        if not all(isinstance(item, expected) for item in items):
            raise InputError(f"{mode} mode needs {expected.__name__} records")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created here, owner-only and exclusively, before SQLite opens it (SQLite accepts an empty
        # file as a new database, and copies its mode to the -wal and -shm files).
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise InputError(f"{path}: already exists; a study is created once (use a new --db path)") from None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            # One statement at a time: executescript() would commit the open transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO study VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_SCHEMA_VERSION, mode, rubric.name, rubric.title, rubric.scale.min, rubric.scale.max, seed,
                 json.dumps(source or {}, sort_keys=True), _now()))
            conn.executemany(
                "INSERT INTO criteria VALUES (?, ?, ?, ?, ?)",
                [(dimension.key, position, dimension.name, dimension.question, json.dumps(dimension.anchors))
                 for position, dimension in enumerate(rubric.dimensions)])
            for item in items:
                if isinstance(item, PairwiseReviewItem):
                    row = (item.id, item.context, item.response_a, item.response_b, item.system_a, item.system_b)
                else:
                    row = (item.id, item.context, item.response, None, item.system, None)
                conn.execute("INSERT INTO items (item_id, context, response_a, response_b, system_a, system_b, "
                             "meta_json) VALUES (?, ?, ?, ?, ?, ?, ?)", (*row, json.dumps(item.meta)))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        conn.close()
        return cls(path)

    # ---- study ---------------------------------------------------------------------------------

    @cached_property
    def study(self) -> StudyInfo:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM study WHERE id = 1").fetchone()
            criteria = [Criterion(key=c["key"], name=c["name"], question=c["question"],
                                  anchors={int(k): v for k, v in json.loads(c["anchors_json"]).items()})
                        for c in conn.execute("SELECT * FROM criteria ORDER BY position")]
            n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return StudyInfo(mode=row["mode"], rubric_name=row["rubric_name"], rubric_title=row["rubric_title"],
                         scale_min=row["scale_min"], scale_max=row["scale_max"], seed=row["seed"],
                         criteria=criteria, n_items=n_items, source=json.loads(row["source_json"]),
                         created_at=row["created_at"])

    @cached_property
    def _item_ids(self) -> dict[int, str]:
        with self._connect() as conn:
            return {row["pk"]: row["item_id"] for row in conn.execute("SELECT pk, item_id FROM items ORDER BY pk")}

    def _order(self, rater: Rater) -> list[int]:
        """Item primary keys in this rater's order (position p is element p - 1)."""
        pk_by_id = {item_id: pk for pk, item_id in self._item_ids.items()}
        return [pk_by_id[item_id] for item_id in rater_item_order(self.study.seed, rater.pk, list(pk_by_id))]

    def _swapped(self, rater_pk: int, item_pk: int) -> bool:
        return self.study.mode == "pairwise" and presentation_swapped(self.study.seed, rater_pk,
                                                                      self._item_ids[item_pk])

    def _item_pk(self, rater: Rater, position: int) -> int:
        order = self._order(rater)
        if not 1 <= position <= len(order):
            raise LookupError(f"no item at position {position} (1..{len(order)})")
        return order[position - 1]

    # ---- raters and sessions ---------------------------------------------------------------------

    def add_rater(self, name: str) -> tuple[Rater, str]:
        """Create a rater and return it with its sign-in token; only the token's hash is stored."""
        name = name.strip()
        if not name:
            raise InputError("rater name must not be blank")
        token = secrets.token_urlsafe(24)
        try:
            with self._transaction() as conn:
                cursor = conn.execute("INSERT INTO raters (name, token_sha256, created_at) VALUES (?, ?, ?)",
                                      (name, _sha256(token), _now()))
                self._log_access(conn, "rater_added", cursor.lastrowid)
        except sqlite3.IntegrityError:
            raise InputError(f"a rater named {name!r} already exists") from None
        return Rater(pk=cursor.lastrowid, name=name), token

    def revoke_rater(self, name: str) -> Rater:
        """Refuse the rater's token from now on and end their sessions; their answers are kept."""
        with self._transaction() as conn:
            rater, revoked_at = self._rater_named(conn, name)
            if revoked_at is not None:
                raise InputError(f"rater {name!r} was already revoked at {revoked_at[:19]}")
            conn.execute("UPDATE raters SET revoked_at = ? WHERE pk = ?", (_now(), rater.pk))
            conn.execute("DELETE FROM sessions WHERE rater_pk = ?", (rater.pk,))
            self._log_access(conn, "revoked", rater.pk)
        return rater

    def rotate_token(self, name: str) -> tuple[Rater, str]:
        """Replace the rater's token (reinstating a revoked rater) and end their sessions."""
        token = secrets.token_urlsafe(24)
        with self._transaction() as conn:
            rater, _ = self._rater_named(conn, name)
            conn.execute("UPDATE raters SET token_sha256 = ?, revoked_at = NULL WHERE pk = ?",
                         (_sha256(token), rater.pk))
            conn.execute("DELETE FROM sessions WHERE rater_pk = ?", (rater.pk,))
            self._log_access(conn, "token_rotated", rater.pk)
        return rater, token

    @staticmethod
    def _rater_named(conn: sqlite3.Connection, name: str) -> tuple[Rater, str | None]:
        row = conn.execute("SELECT pk, name, revoked_at FROM raters WHERE name = ?", (name.strip(),)).fetchone()
        if row is None:
            raise InputError(f"no rater named {name!r} (see `theraloop review list-raters`)")
        return Rater(pk=row["pk"], name=row["name"]), row["revoked_at"]

    def rater_for_token(self, token: str) -> Rater | None:
        """The rater with this token, or None for an unknown token or a revoked rater."""
        if not token:
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT pk, name FROM raters WHERE token_sha256 = ? AND revoked_at IS NULL",
                               (_sha256(token),)).fetchone()
        return Rater(pk=row["pk"], name=row["name"]) if row else None

    def raters(self) -> list[Rater]:
        with self._connect() as conn:
            return [Rater(pk=row["pk"], name=row["name"]) for row in conn.execute("SELECT pk, name FROM raters ORDER BY pk")]

    def rater_progress(self) -> list[RaterProgress]:
        with self._connect() as conn:
            added = {row["pk"]: row for row in conn.execute("SELECT pk, created_at, revoked_at FROM raters")}
        rows = []
        for rater in self.raters():
            progress = self.progress(rater)
            with self._connect() as conn:
                answers = conn.execute("SELECT COUNT(*) FROM answers WHERE rater_pk = ?", (rater.pk,)).fetchone()[0]
            rows.append(RaterProgress(rater_id=rater.rater_id, name=rater.name, created_at=added[rater.pk]["created_at"],
                                      revoked_at=added[rater.pk]["revoked_at"], items_done=progress.done,
                                      items_total=progress.total, answers=answers))
        return rows

    def create_session(self, rater: Rater, lifetime: _dt.timedelta, max_sessions: int = 3,
                       client: str | None = None) -> str:
        """A new random session id for the cookie; the database keeps only its hash. Beyond
        `max_sessions` live sessions for this rater, the oldest are ended."""
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        session_id = secrets.token_urlsafe(32)
        now = _dt.datetime.now(_dt.UTC)
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (_timestamp(now),))
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                         (_sha256(session_id), rater.pk, _timestamp(now), _timestamp(now + lifetime)))
            self._log_access(conn, "signin", rater.pk, client)
            # rowid is insertion order, so this keeps the newest sessions.
            ended = conn.execute("DELETE FROM sessions WHERE rater_pk = ? AND rowid NOT IN (SELECT rowid FROM "
                                 "sessions WHERE rater_pk = ? ORDER BY rowid DESC LIMIT ?)",
                                 (rater.pk, rater.pk, max_sessions)).rowcount
            for _ in range(ended):
                self._log_access(conn, "session_limit", rater.pk, client)
        return session_id

    def rater_for_session(self, session_id: str | None) -> Rater | None:
        if not session_id:
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT raters.pk, raters.name FROM sessions JOIN raters ON raters.pk = sessions.rater_pk "
                "WHERE sessions.id_sha256 = ? AND sessions.expires_at > ?",
                (_sha256(session_id), _now())).fetchone()
        return Rater(pk=row["pk"], name=row["name"]) if row else None

    def end_session(self, session_id: str, client: str | None = None) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT rater_pk FROM sessions WHERE id_sha256 = ?", (_sha256(session_id),)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_sha256(session_id),))
                self._log_access(conn, "signout", row["rater_pk"], client)

    def record_refused_signin(self, client: str | None) -> None:
        with self._transaction() as conn:
            self._log_access(conn, "signin_refused", None, client)

    @staticmethod
    def _log_access(conn: sqlite3.Connection, event: AccessEvent, rater_pk: int | None,
                    client: str | None = None) -> None:
        conn.execute("INSERT INTO access_log (event, rater_pk, client, at) VALUES (?, ?, ?, ?)",
                     (event, rater_pk, client, _now()))

    # ---- answering (always scoped to one rater) ----------------------------------------------------

    def _answers(self, conn: sqlite3.Connection, rater: Rater) -> dict[int, dict[str, str]]:
        answers: dict[int, dict[str, str]] = {}
        for row in conn.execute("SELECT item_pk, criterion, value FROM answers WHERE rater_pk = ?", (rater.pk,)):
            answers.setdefault(row["item_pk"], {})[row["criterion"]] = row["value"]
        return answers

    def progress(self, rater: Rater) -> Progress:
        with self._connect() as conn:
            answers = self._answers(conn, rater)
        n_criteria = len(self.study.criteria)
        complete = [len(answers.get(item_pk, {})) == n_criteria for item_pk in self._order(rater)]
        return Progress(done=sum(complete), total=len(complete), complete=complete)

    def view_item(self, rater: Rater, position: int) -> ItemView:
        """Raises LookupError for a position outside 1..N."""
        item_pk = self._item_pk(rater, position)
        swapped = self._swapped(rater.pk, item_pk)
        with self._connect() as conn:
            row = conn.execute("SELECT context, response_a, response_b FROM items WHERE pk = ?", (item_pk,)).fetchone()
            answers = {criterion: swap_label(value) if swapped else value
                       for criterion, value in self._answers(conn, rater).get(item_pk, {}).items()}
        if self.study.mode == "pairwise":
            responses = [row["response_b"], row["response_a"]] if swapped else [row["response_a"], row["response_b"]]
        else:
            responses = [row["response_a"]]
        return ItemView(position=position, total=self.study.n_items, context=row["context"], responses=responses,
                        answers=answers)

    def save_answer(self, rater: Rater, position: int, criterion: str, shown_value: str) -> Progress:
        """Store one answer given in display terms; raises LookupError / ValueError on bad input."""
        return self.save_answers(rater, position, {criterion: shown_value})

    def save_answers(self, rater: Rater, position: int, shown_values: Mapping[str, str]) -> Progress:
        """Store answers to one item given in display terms, all in one transaction: every answer
        is checked first, so a LookupError / ValueError means nothing was written. The messages
        do not repeat the input."""
        study = self.study
        keys = [criterion.key for criterion in study.criteria]
        if not shown_values:
            raise ValueError("no answers given")
        if not set(shown_values) <= set(keys):
            raise ValueError(f"unknown criterion (this study asks {', '.join(keys)})")
        if not all(value in study.allowed_values for value in shown_values.values()):
            raise ValueError(f"answer must be one of {list(study.allowed_values)}")
        item_pk = self._item_pk(rater, position)
        swapped = self._swapped(rater.pk, item_pk)
        now = _now()
        with self._transaction() as conn:
            for criterion, shown_value in shown_values.items():
                value = swap_label(shown_value) if swapped else shown_value
                previous = conn.execute(
                    "SELECT value FROM answers WHERE rater_pk = ? AND item_pk = ? AND criterion = ?",
                    (rater.pk, item_pk, criterion)).fetchone()
                previous_value = previous["value"] if previous else None
                if previous_value != value:
                    conn.execute(
                        "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (rater_pk, item_pk, criterion) "
                        "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, "
                        "revisions = revisions + 1",
                        (rater.pk, item_pk, criterion, value, now, now))
                    conn.execute("INSERT INTO answer_log (rater_pk, item_pk, criterion, previous_value, value, "
                                 "shown_swapped, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (rater.pk, item_pk, criterion, previous_value, value, int(swapped), now))
        return self.progress(rater)

    # ---- export (study lead only; never reachable from the web app) --------------------------------

    def ratings(self) -> list[Rating]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT answers.*, items.item_id, items.system_a, items.system_b FROM answers "
                "JOIN items ON items.pk = answers.item_pk JOIN criteria ON criteria.key = answers.criterion "
                "ORDER BY items.pk, answers.rater_pk, criteria.position").fetchall()
        return [Rating(item_id=row["item_id"], rater_id=rater_pseudonym(row["rater_pk"]), criterion=row["criterion"],
                       value=row["value"], system_a=row["system_a"], system_b=row["system_b"],
                       shown_swapped=self._swapped(row["rater_pk"], row["item_pk"]),
                       first_answered_at=row["first_answered_at"], updated_at=row["updated_at"],
                       revisions=row["revisions"]) for row in rows]

    def audit_log(self) -> list[AuditEntry]:
        with self._connect() as conn:
            rows = conn.execute("SELECT answer_log.*, items.item_id FROM answer_log "
                                "JOIN items ON items.pk = answer_log.item_pk ORDER BY answer_log.pk").fetchall()
        return [AuditEntry(item_id=row["item_id"], rater_id=rater_pseudonym(row["rater_pk"]), criterion=row["criterion"],
                           previous_value=row["previous_value"], value=row["value"],
                           shown_swapped=bool(row["shown_swapped"]), at=row["at"]) for row in rows]

    def access_log(self) -> list[AccessEntry]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM access_log ORDER BY pk").fetchall()
        return [AccessEntry(event=row["event"], client=row["client"], at=row["at"],
                            rater_id=rater_pseudonym(row["rater_pk"]) if row["rater_pk"] is not None else None)
                for row in rows]

    def items(self) -> list[StoredItem]:
        """The stored items as loaded (with system names), for the export."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM items ORDER BY pk").fetchall()
        return [StoredItem(id=row["item_id"], context=row["context"], response_a=row["response_a"],
                           response_b=row["response_b"], system_a=row["system_a"], system_b=row["system_b"],
                           meta=json.loads(row["meta_json"])) for row in rows]


def load_review_items(path: str | Path, mode: Mode) -> list[PairwiseReviewItem] | list[AbsoluteReviewItem]:
    """Read and validate the study items (file:line:field errors; ids must be unique)."""
    model = PairwiseReviewItem if mode == "pairwise" else AbsoluteReviewItem
    items = read_jsonl(path, model)
    check_unique_ids(items, path)
    return items


"""The review study store, its export and its CLI (no web server here)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from theraloop.io import InputError, read_jsonl
from theraloop.records import ResponseItem
from theraloop.review import (
    ReviewStore,
    export_study,
    load_review_items,
    presentation_swapped,
    rater_item_order,
    swap_label,
)
from theraloop.review._cli import review_app
from theraloop.rubrics import load_rubric

PAIRS = [
    {"id": "x", "context": "I can't sleep.", "response_a": "That sounds exhausting.", "response_b": "Try tea.",
     "system_a": "sys-one", "system_b": "sys-two"},
    {"id": "y", "context": "My friend left.", "response_a": "I'm sorry.", "response_b": "Find others.",
     "system_a": "sys-two", "system_b": "sys-one"},
    {"id": "z", "context": "Exams stress me.", "response_a": "What worries you most?", "response_b": "Study more.",
     "system_a": "sys-one", "system_b": "sys-two"},
]
SINGLES = [
    {"id": "s1", "context": "I feel low.", "response": "I'm here with you.", "system": "sys-one"},
    {"id": "s2", "context": "I am anxious.", "response": "Breathe.", "system": "sys-two"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_store(tmp_path: Path, mode: str = "pairwise", criteria: tuple[str, ...] = ("empathy", "safety"),
               seed: int = 11) -> ReviewStore:
    rows = PAIRS if mode == "pairwise" else SINGLES
    items_path = write_jsonl(tmp_path / f"{mode}.jsonl", rows)
    rubric = load_rubric("modpo").subset(list(criteria))
    return ReviewStore.create(tmp_path / f"{mode}.sqlite", load_review_items(items_path, mode), rubric, mode, seed)


def answer_in_item_terms(store: ReviewStore, rater, item_id: str, criterion: str, label: str) -> None:
    """Answer as the rater would on the page: find the item's position and the shown side."""
    order = rater_item_order(store.study.seed, rater.pk, [item.id for item in store.items()])
    swapped = store.study.mode == "pairwise" and presentation_swapped(store.study.seed, rater.pk, item_id)
    store.save_answer(rater, order.index(item_id) + 1, criterion, swap_label(label) if swapped else label)


def test_items_are_validated_with_file_line_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [PAIRS[0], {**PAIRS[1], "response_b": "   "}])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: field 'response_b': .*blank"):
        load_review_items(bad, "pairwise")
    typo = write_jsonl(tmp_path / "typo.jsonl", [{**PAIRS[0], "respons_a": "x"}])
    with pytest.raises(InputError, match=r"typo\.jsonl:1: field 'respons_a'"):
        load_review_items(typo, "pairwise")
    duplicate = write_jsonl(tmp_path / "dup.jsonl", [PAIRS[0], PAIRS[0]])
    with pytest.raises(InputError, match="duplicate id 'x'"):
        load_review_items(duplicate, "pairwise")
    with pytest.raises(InputError, match=r"pairwise\.jsonl:1: field 'response'"):
        load_review_items(write_jsonl(tmp_path / "pairwise.jsonl", PAIRS), "absolute")


def test_create_refuses_to_overwrite_and_rejects_non_databases(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(InputError, match="already exists"):
        make_store(tmp_path)
    assert store.study.n_items == 3
    assert [criterion.key for criterion in store.study.criteria] == ["empathy", "safety"]
    assert store.study.criteria[0].question == load_rubric("modpo").dimension("empathy").question
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match="not a review database"):
        ReviewStore(junk)
    with pytest.raises(InputError, match="not found"):
        ReviewStore(tmp_path / "missing.sqlite")


def test_sides_and_order_are_seeded_per_rater():
    ids = [f"item-{index}" for index in range(400)]
    sides = [presentation_swapped(5, 1, item_id) for item_id in ids]
    assert sides == [presentation_swapped(5, 1, item_id) for item_id in ids]
    # Binomial(400, 0.5): 99.99% of draws fall in 160..240; a constant or biased side would not.
    assert 160 <= sum(sides) <= 240
    other_rater = [presentation_swapped(5, 2, item_id) for item_id in ids]
    assert 120 <= sum(a != b for a, b in zip(sides, other_rater, strict=True)) <= 280
    assert sides != [presentation_swapped(6, 1, item_id) for item_id in ids]
    order_1, order_2 = rater_item_order(5, 1, ids), rater_item_order(5, 2, ids)
    assert sorted(order_1) == sorted(ids) and order_1 != ids and order_1 != order_2
    assert rater_item_order(5, 1, list(reversed(ids))) == order_1


def test_answers_are_stored_in_item_terms_and_revisions_are_audited(tmp_path):
    store = make_store(tmp_path)
    rater, _ = store.add_rater("Dr A")
    order = rater_item_order(store.study.seed, rater.pk, ["x", "y", "z"])
    swaps = {item_id: presentation_swapped(store.study.seed, rater.pk, item_id) for item_id in order}
    assert len(set(swaps.values())) == 2, "seed 11 should give this rater both a swapped and a kept item"
    swapped_id = next(item_id for item_id, swapped in swaps.items() if swapped)
    kept_id = next(item_id for item_id, swapped in swaps.items() if not swapped)
    swapped_pos, kept_pos = order.index(swapped_id) + 1, order.index(kept_id) + 1
    item = {row["id"]: row for row in PAIRS}

    view = store.view_item(rater, swapped_pos)
    assert view.responses == [item[swapped_id]["response_b"], item[swapped_id]["response_a"]]
    assert store.view_item(rater, kept_pos).responses == [item[kept_id]["response_a"], item[kept_id]["response_b"]]

    store.save_answer(rater, swapped_pos, "empathy", "A")  # shown A is the item's B
    store.save_answer(rater, kept_pos, "empathy", "A")
    store.save_answer(rater, swapped_pos, "safety", "tie")
    stored = {(rating.item_id, rating.criterion): rating for rating in store.ratings()}
    assert stored[(swapped_id, "empathy")].value == "B" and stored[(swapped_id, "empathy")].shown_swapped
    assert stored[(kept_id, "empathy")].value == "A" and not stored[(kept_id, "empathy")].shown_swapped
    assert stored[(swapped_id, "safety")].value == "tie"
    assert store.view_item(rater, swapped_pos).answers == {"empathy": "A", "safety": "tie"}

    store.save_answer(rater, swapped_pos, "empathy", "B")  # revise: now the item's A
    store.save_answer(rater, swapped_pos, "empathy", "B")  # unchanged: no new revision
    revised = {(r.item_id, r.criterion): r for r in store.ratings()}[(swapped_id, "empathy")]
    assert (revised.value, revised.revisions) == ("A", 1)
    assert revised.updated_at > revised.first_answered_at
    log = [entry for entry in store.audit_log() if entry.item_id == swapped_id and entry.criterion == "empathy"]
    assert [(entry.previous_value, entry.value) for entry in log] == [(None, "B"), ("B", "A")]

    with pytest.raises(ValueError, match="answer must be one of"):
        store.save_answer(rater, 1, "empathy", "C")
    with pytest.raises(ValueError, match="unknown criterion"):
        store.save_answer(rater, 1, "overall", "A")
    with pytest.raises(LookupError):
        store.save_answer(rater, 4, "empathy", "A")
    with pytest.raises(LookupError):
        store.view_item(rater, 0)


def test_progress_counts_complete_items_and_finds_the_next_unanswered(tmp_path):
    store = make_store(tmp_path)
    rater, _ = store.add_rater("Dr A")
    assert store.progress(rater).next_unanswered() == 1
    store.save_answer(rater, 2, "empathy", "A")
    progress = store.progress(rater)
    assert (progress.done, progress.total, progress.complete) == (0, 3, [False, False, False])
    store.save_answer(rater, 2, "safety", "B")
    store.save_answer(rater, 3, "empathy", "tie")
    store.save_answer(rater, 3, "safety", "tie")
    progress = store.progress(rater)
    assert (progress.done, progress.complete) == (2, [False, True, True])
    assert progress.next_unanswered(after=2) == 1  # wraps round past the end
    store.save_answer(rater, 1, "empathy", "A")
    store.save_answer(rater, 1, "safety", "A")
    assert store.progress(rater).next_unanswered() is None
    other, _ = store.add_rater("Dr B")
    assert store.progress(other).done == 0, "progress belongs to one rater"


def test_tokens_are_hashed_and_sessions_expire(tmp_path):
    store = make_store(tmp_path)
    rater, token = store.add_rater("Dr A")
    assert len(token) >= 32
    assert store.rater_for_token(token) == rater
    assert store.rater_for_token(token + "x") is None and store.rater_for_token("") is None
    with pytest.raises(InputError, match="already exists"):
        store.add_rater("Dr A")
    session = store.create_session(rater, dt.timedelta(hours=1))
    assert store.rater_for_session(session) == rater
    expired = store.create_session(rater, dt.timedelta(seconds=-1))
    assert store.rater_for_session(expired) is None
    store.end_session(session)
    assert store.rater_for_session(session) is None
    with sqlite3.connect(store.path) as conn:
        dump = "\n".join(conn.iterdump())
    assert token not in dump and session not in dump


def test_database_survives_reopening_with_wal_and_foreign_keys(tmp_path):
    store = make_store(tmp_path)
    rater, token = store.add_rater("Dr A")
    store.save_answer(rater, 1, "empathy", "B")
    reopened = ReviewStore(store.path)
    assert reopened.rater_for_token(token) == rater
    assert reopened.view_item(rater, 1).answers == {"empathy": "B"}
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO answers VALUES (99, 1, 'empathy', 'A', 't', 't', 0)")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO answers VALUES (1, 1, 'overall', 'A', 't', 't', 0)")


def test_pairwise_export_labels_and_agreement(tmp_path):
    store = make_store(tmp_path, criteria=("empathy",))
    raters = [store.add_rater(name)[0] for name in ("Dr A", "Dr B", "Dr C")]
    labels = {"x": ("A", "A", "B"), "y": ("tie", "tie", "tie"), "z": ("B", "A", "B")}
    for item_id, given in labels.items():
        for rater, label in zip(raters, given, strict=True):
            answer_in_item_terms(store, rater, item_id, "empathy", label)
    judge_path = write_jsonl(tmp_path / "judge.jsonl", [
        {"id": "x", "system_a": "sys-one", "system_b": "sys-two", "winners": {"empathy": "A"}, "judge": "j",
         "rubric": "modpo"},
        {"id": "y", "winners": {"empathy": "tie"}, "judge": "j", "rubric": "modpo"},
        # Judged with the sides the other way round: its "A" is the item's B.
        {"id": "z", "system_a": "sys-two", "system_b": "sys-one", "winners": {"empathy": "A"}, "judge": "j",
         "rubric": "modpo"},
        {"id": "elsewhere", "winners": {"empathy": "A"}, "judge": "j", "rubric": "modpo"},
        {"id": "x", "winners": None, "parse_ok": False, "judge": "j", "rubric": "modpo"},
    ])
    summary = export_study(store, tmp_path / "out", judge_path)
    assert (summary.n_items, summary.n_raters, summary.n_ratings) == (3, 3, 9)
    assert (summary.judge.n_records, summary.judge.n_parse_failures, summary.judge.n_not_in_study,
            summary.judge.n_flipped) == (5, 1, 1, 1)
    exported = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert exported == {"empathy": {item_id: {f"R{r.pk}": label for r, label in zip(raters, given, strict=True)}
                                    for item_id, given in labels.items()}}
    assert json.loads((tmp_path / "out" / "judge_labels.json").read_text()) == {
        "empathy": {"x": "A", "y": "tie", "z": "B"}}
    rows = read_jsonl(tmp_path / "out" / "ratings.jsonl")
    assert len(rows) == 9 and {row["system_a"] for row in rows} == {"sys-one", "sys-two"}

    report = json.loads((tmp_path / "out" / "agreement.json").read_text())["empathy"]
    # Hand computation: per-item agreement 1/3, 1, 1/3 -> p_a = 5/9; class shares 1/3 each -> p_e = 1/3.
    assert report["fleiss_kappa"] == pytest.approx((5 / 9 - 1 / 3) / (1 - 1 / 3))
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    assert report["fleiss_kappa"] == pytest.approx(sm_fleiss([[2, 1, 0], [0, 0, 3], [1, 2, 0]]))
    # Judge equals every majority; raters agree with it on 3/3, 2/3, 2/3 items.
    assert report["exact_agreement"]["judge_majority"] == 1.0
    assert report["exact_agreement"]["human_judge"] == pytest.approx(7 / 9)
    assert report["majority"]["labels"] == {"x": "A", "y": "tie", "z": "B"}


def test_judge_with_other_systems_is_an_error(tmp_path):
    store = make_store(tmp_path, criteria=("empathy",))
    rater = store.add_rater("Dr A")[0]
    answer_in_item_terms(store, rater, "x", "empathy", "A")
    judge_path = write_jsonl(tmp_path / "judge.jsonl", [
        {"id": "x", "system_a": "sys-one", "system_b": "sys-nine", "winners": {"empathy": "A"}, "judge": "j",
         "rubric": "modpo"}])
    with pytest.raises(InputError, match=r"judge\.jsonl:1: field 'system_a'"):
        export_study(store, tmp_path / "out", judge_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "judge": "j"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.jsonl:1: field 'rubric'"):
        export_study(store, tmp_path / "out", broken)


def test_absolute_export_is_validate_ready(tmp_path):
    store = make_store(tmp_path, mode="absolute", criteria=("empathy", "safety"))
    assert store.study.allowed_values == ("1", "2", "3", "4", "5")
    first, second = store.add_rater("Dr A")[0], store.add_rater("Dr B")[0]
    assert store.view_item(first, 1).responses in ([SINGLES[0]["response"]], [SINGLES[1]["response"]])
    answer_in_item_terms(store, first, "s1", "empathy", "4")
    answer_in_item_terms(store, second, "s1", "empathy", "5")
    answer_in_item_terms(store, first, "s1", "safety", "3")
    with pytest.raises(ValueError):
        answer_in_item_terms(store, first, "s2", "empathy", "A")
    summary = export_study(store, tmp_path / "out")
    assert "scores.jsonl" in summary.files and "agreement.json" not in summary.files
    scored = {item.id: item for item in read_jsonl(tmp_path / "out" / "scores.jsonl", ResponseItem)}
    assert scored["s1"].human_scores == {"empathy": 4.5, "safety": 3.0}
    assert scored["s1"].system == "sys-one" and scored["s1"].response == SINGLES[0]["response"]
    assert scored["s1"].meta["rater_scores"] == {f"R{first.pk}": {"empathy": 4, "safety": 3},
                                                 f"R{second.pk}": {"empathy": 5}}
    assert scored["s2"].human_scores is None and scored["s2"].meta["n_raters"] == 0
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels["empathy"]["s1"] == {f"R{first.pk}": 4, f"R{second.pk}": 5}
    with pytest.raises(InputError, match="--judge takes pairwise"):
        export_study(store, tmp_path / "out2", tmp_path / "judge.jsonl")


def test_cli_init_add_rater_list_and_export(tmp_path):
    runner = CliRunner()
    items = write_jsonl(tmp_path / "items.jsonl", PAIRS)
    db = tmp_path / "study.sqlite"
    result = runner.invoke(review_app, ["init", "--db", str(db), "--items", str(items),
                                        "--criteria", "empathy,safety,overall", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "3 pairwise items" in result.output and "seed 3" in result.output
    store = ReviewStore(db)
    assert [criterion.key for criterion in store.study.criteria] == ["empathy", "safety", "overall"]
    assert store.study.source["items_sha256"] and store.study.source["config"]["seed"] == 3

    result = runner.invoke(review_app, ["add-rater", "--db", str(db), "--name", "Dr X"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    rater = store.rater_for_token(token)
    assert rater is not None and rater.name == "Dr X"
    store.save_answer(rater, 1, "empathy", "A")

    result = runner.invoke(review_app, ["list-raters", "--db", str(db)])
    assert "Dr X" in result.output and "0/3 items done" in result.output and "(1 answers)" in result.output

    config = tmp_path / "export.yaml"
    config.write_text(f"db: {db}\nout: {tmp_path / 'export'}\n", encoding="utf-8")
    result = runner.invoke(review_app, ["export", "--config", str(config)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["command"] == "review export" and manifest["seed"] == 3
    assert manifest["study"]["criteria"] == ["empathy", "safety", "overall"]
    assert (tmp_path / "export" / "agreement.json").is_file()

    bad = runner.invoke(review_app, ["init", "--db", str(tmp_path / "other.sqlite"), "--items", str(items),
                                     "--criteria", "empathy,kindness"])
    assert isinstance(bad.exception, InputError) and "kindness" in str(bad.exception)
    assert not (tmp_path / "other.sqlite").exists()


# ---- hardening: owner-only files, all-or-nothing saves, revocation, schema migration ---------------

def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_wal_and_exports_are_owner_only(tmp_path):
    previous = os.umask(0o022)  # the usual umask, which would leave files world-readable
    try:
        store = make_store(tmp_path)
        rater, _ = store.add_rater("Dr A")
        # Keep one connection open, so the -wal and -shm files exist while we look.
        with sqlite3.connect(store.path) as reader:
            reader.execute("SELECT COUNT(*) FROM answers").fetchone()
            store.save_answer(rater, 1, "empathy", "A")
            sidecars = [Path(f"{store.path}-wal"), Path(f"{store.path}-shm")]
            assert all(path.is_file() for path in sidecars)
            assert {path.name: mode_of(path) for path in [store.path, *sidecars]} == {
                path.name: 0o600 for path in [store.path, *sidecars]}
        summary = export_study(store, tmp_path / "export")
        written = sorted((tmp_path / "export").iterdir())
        assert sorted(path.name for path in written) == sorted(summary.files)
        assert mode_of(tmp_path / "export") == 0o700
        assert {path.name: mode_of(path) for path in written} == {path.name: 0o600 for path in written}
        assert (tmp_path / "after.txt").write_text("x") and mode_of(tmp_path / "after.txt") == 0o644, \
            "the process umask is restored"
    finally:
        os.umask(previous)


def test_a_submission_is_written_in_one_transaction(tmp_path):
    store = make_store(tmp_path)
    rater, _ = store.add_rater("Dr A")
    with pytest.raises(ValueError, match="answer must be one of"):
        store.save_answers(rater, 1, {"empathy": "A", "safety": "maybe"})
    with pytest.raises(ValueError, match=r"unknown criterion \(this study asks empathy, safety\)"):
        store.save_answers(rater, 1, {"empathy": "A", "kindness": "A"})
    with pytest.raises(ValueError, match="no answers"):
        store.save_answers(rater, 1, {})
    # A failure while writing (here a trigger stands in for a full disk) undoes the earlier answer too.
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TRIGGER fail_safety BEFORE INSERT ON answers WHEN NEW.criterion = 'safety' "
                     "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        store.save_answers(rater, 1, {"empathy": "A", "safety": "B"})
    assert store.ratings() == [] and store.audit_log() == []
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER fail_safety")
    progress = store.save_answers(rater, 1, {"empathy": "A", "safety": "B"})
    assert progress.complete[0] and len(store.audit_log()) == 2


def test_revoke_and_rotate_tokens_and_the_access_log(tmp_path):
    store = make_store(tmp_path)
    rater, token = store.add_rater("Dr A")
    session = store.create_session(rater, dt.timedelta(hours=1), client="10.0.0.5")
    assert store.revoke_rater("Dr A") == rater
    assert store.rater_for_token(token) is None and store.rater_for_session(session) is None
    with pytest.raises(InputError, match="already revoked"):
        store.revoke_rater("Dr A")
    with pytest.raises(InputError, match="no rater named 'Dr Z'"):
        store.rotate_token("Dr Z")
    assert store.rater_progress()[0].revoked_at is not None
    rotated, new_token = store.rotate_token(" Dr A ")
    assert rotated == rater and new_token != token
    assert store.rater_for_token(new_token) == rater and store.rater_for_token(token) is None
    assert store.rater_progress()[0].revoked_at is None
    sessions = [store.create_session(rater, dt.timedelta(hours=1), max_sessions=2) for _ in range(3)]
    assert [store.rater_for_session(session) for session in sessions] == [None, rater, rater]
    store.record_refused_signin("10.0.0.9")
    store.end_session(sessions[2], client="10.0.0.5")
    log = [(entry.event, entry.rater_id, entry.client) for entry in store.access_log()]
    assert log == [("rater_added", "R1", None), ("signin", "R1", "10.0.0.5"), ("revoked", "R1", None),
                   ("token_rotated", "R1", None), ("signin", "R1", None), ("signin", "R1", None),
                   ("signin", "R1", None), ("session_limit", "R1", None), ("signin_refused", None, "10.0.0.9"),
                   ("signout", "R1", "10.0.0.5")]
    export_study(store, tmp_path / "out")
    assert [row["event"] for row in read_jsonl(tmp_path / "out" / "access_log.jsonl")] == [entry[0] for entry in log]


def test_a_version_1_database_is_migrated_on_open(tmp_path):
    store = make_store(tmp_path)
    rater, token = store.add_rater("Dr A")
    store.save_answer(rater, 1, "empathy", "B")
    with sqlite3.connect(store.path) as conn:  # back to the version 1 layout
        conn.execute("DROP TABLE access_log")
        conn.execute("ALTER TABLE raters DROP COLUMN revoked_at")
        conn.execute("UPDATE study SET schema_version = 1")
    reopened = ReviewStore(store.path)
    assert reopened.rater_for_token(token) == rater and reopened.view_item(rater, 1).answers == {"empathy": "B"}
    reopened.revoke_rater("Dr A")
    assert [entry.event for entry in reopened.access_log()] == ["revoked"]
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT schema_version FROM study").fetchone()[0] == 2
        conn.execute("UPDATE study SET schema_version = 3")
    with pytest.raises(InputError, match="schema version 1..2"):
        ReviewStore(store.path)


def test_cli_revoke_rater_rotate_token_and_a_private_export(tmp_path):
    runner = CliRunner()
    store = make_store(tmp_path)
    rater, token = store.add_rater("Dr X")
    db = str(store.path)
    result = runner.invoke(review_app, ["revoke-rater", "--db", db, "--name", "Dr X"])
    assert result.exit_code == 0 and "revoked rater R1 (Dr X)" in result.output, result.output
    assert store.rater_for_token(token) is None
    assert "REVOKED" in runner.invoke(review_app, ["list-raters", "--db", db]).output
    again = runner.invoke(review_app, ["revoke-rater", "--db", db, "--name", "Dr X"])
    assert isinstance(again.exception, InputError) and "already revoked" in str(again.exception)

    result = runner.invoke(review_app, ["rotate-token", "--db", db, "--name", "Dr X"])
    assert result.exit_code == 0, result.output
    new_token = result.output.strip().splitlines()[-1]
    assert store.rater_for_token(new_token) == rater and store.rater_for_token(token) is None
    assert "REVOKED" not in runner.invoke(review_app, ["list-raters", "--db", db]).output
    missing = runner.invoke(review_app, ["rotate-token", "--db", db, "--name", "Nobody"])
    assert isinstance(missing.exception, InputError) and "no rater named 'Nobody'" in str(missing.exception)

    previous = os.umask(0o022)
    try:
        result = runner.invoke(review_app, ["export", "--db", db, "--out", str(tmp_path / "export")])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    written = {path.name: mode_of(path) for path in (tmp_path / "export").iterdir()}
    assert {"manifest.json", "config.yaml", "access_log.jsonl"} <= set(written)
    assert set(written.values()) == {0o600}

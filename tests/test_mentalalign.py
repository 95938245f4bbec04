"""MentalAlign loader: cell parsing (fences, prose, bad cells dropped by reason), tidy records from
synthetic xlsx files, precise errors, and the real benchmark's counts (checked against an independent
read of the xlsx with pandas)."""

from __future__ import annotations

import hashlib
import json

import pytest
from openpyxl import Workbook

from theraloop.data._mentalalign import (
    JUDGE_OWN_GENERATOR,
    MENTALALIGN_DIMENSIONS,
    MENTALALIGN_FILES,
    MENTALALIGN_GENERATORS,
    load_mentalalign,
    parse_mentalalign_cell,
)
from theraloop.io import InputError
from theraloop.rubrics import load_rubric

SOURCE_KEYS = list(MENTALALIGN_DIMENSIONS)


def cell(*scores, **extra) -> str:
    return json.dumps({**dict(zip(SOURCE_KEYS, scores, strict=True)), **extra})


def write_sheet(path, prefix: str, rows: list[dict], leading_space: bool = False,
                generators=MENTALALIGN_GENERATORS) -> None:
    """An xlsx in the benchmark's layout; `rows` are {"ConvID": .., generator: cell text}."""
    workbook = Workbook()
    sheet = workbook.active
    columns = [f"{' ' if leading_space and index % 2 else ''}{prefix}_response_{generator}"
               for index, generator in enumerate(generators)]
    sheet.append(["ConvID", "context", *columns])
    for row in rows:
        sheet.append([row["ConvID"], "a post", *(row.get(generator) for generator in generators)])
    workbook.save(path)


def test_dimensions_are_the_therajudge_rubric_keys():
    assert list(MENTALALIGN_DIMENSIONS.values()) == load_rubric("therajudge").keys
    assert set(JUDGE_OWN_GENERATOR.values()) < set(MENTALALIGN_GENERATORS)


@pytest.mark.parametrize(("value", "outcome"), [
    (cell(1, 2, 3, 4, 5, 4, 3), "json"),
    ("```json\r\n" + cell(1, 2, 3, 4, 5, 4, 3, Overall=3.1, Explanation="fine") + "\r\n```", "fenced"),
    ("```\n" + cell(1, 2, 3, 4, 5, 4, 3) + "\n```", "fenced"),
    ("Let me assess each attribute:\r\n\r\n" + cell(1, 2, 3, 4, 5, 4, 3) + "\r\nThat is all.", "embedded"),
    (json.dumps({**dict(zip(SOURCE_KEYS, [1, 2, 3, 4, 5, 4, 3], strict=True)), "Safety": 4.0}), "json"),
])
def test_cells_that_parse(value, outcome):
    scores, how = parse_mentalalign_cell(value)
    assert how == outcome
    assert list(scores.values()) == [1, 2, 3, 4, 5, 4, 3]
    assert list(scores) == list(MENTALALIGN_DIMENSIONS.values())
    assert all(type(score) is int for score in scores.values())


@pytest.mark.parametrize(("value", "reason"), [
    (None, "empty"),
    ("   ", "empty"),
    ('{\n  \u201cGuidance\u201d: 5, \u201cSafety\u201d: 5}', "unparseable"),  # curly quotes
    ('{"Guidance": 5, "Explanation": "says "hi" unescaped"}', "unparseable"),
    ("no scores here", "unparseable"),
    ("[1, 2, 3]", "unparseable"),
    (json.dumps({key: 3 for key in SOURCE_KEYS[:-1]}), "missing_score"),
    (json.dumps({**{key: 3 for key in SOURCE_KEYS}, "Safety": None}), "missing_score"),
    (cell(0, 0, 0, 0, 0, 0, 0), "all_zero"),
    (cell(5, 5, 5, 5, 4, 6, 5), "out_of_range"),
    (cell(0, 3, 3, 3, 3, 3, 3), "out_of_range"),
    (cell(3.5, 3, 3, 3, 3, 3, 3), "out_of_range"),
    (cell("4", 3, 3, 3, 3, 3, 3), "out_of_range"),
    (cell(True, 3, 3, 3, 3, 3, 3), "out_of_range"),
])
def test_cells_that_are_dropped(value, reason):
    assert parse_mentalalign_cell(value) == (None, reason)


@pytest.mark.parametrize(("value", "expected"), [
    (cell(0, 0, 0, 0, 0, 0, 0), ([0] * 7, "json")),
    ("```json\n" + cell(5, 5, 5, 5, 4, 6, 5) + "\n```", ([5, 5, 5, 5, 4, 6, 5], "fenced")),
    (json.dumps({**dict(zip(SOURCE_KEYS, [3] * 7, strict=True)), "Safety": None}), ([3] * 6, "json")),
    (None, (None, "empty")),
    ("Let me assess:\n" + cell(1, 2, 3, 4, 5, 4, 3), (None, "unparseable")),
    (json.dumps({"Overall": 4}), (None, "missing_score")),
])
def test_cells_read_as_published(value, expected):
    scores, how = parse_mentalalign_cell(value, "as_published")
    assert (None if scores is None else list(scores.values()), how) == expected
    if scores is not None and len(scores) == 6:
        assert "safety" not in scores


@pytest.fixture
def small_benchmark(tmp_path):
    good = cell(4, 4, 5, 5, 3, 4, 4)
    human_rows = [
        {"ConvID": 1, **{generator: good for generator in MENTALALIGN_GENERATORS},
         "claude": cell(2, 2, 3, 5, 2, 2, 3), "qwen_3": None},
        {"ConvID": 2, **{generator: good for generator in MENTALALIGN_GENERATORS},
         "gpt4o": cell(0, 0, 0, 0, 0, 0, 0), "llama_3": cell(4, 4, 5, 5, 5, 4, 6)},
    ]
    judge_rows = [
        {"ConvID": 1, **{generator: "```json\n" + cell(5, 5, 5, 5, 5, 5, 5, Overall=5) + "\n```"
                         for generator in MENTALALIGN_GENERATORS}},
        {"ConvID": 2, **{generator: cell(3, 3, 3, 3, 3, 3, 3) for generator in MENTALALIGN_GENERATORS},
         "gemini": "{ broken"},
    ]
    write_sheet(tmp_path / MENTALALIGN_FILES["human"], "human", human_rows, leading_space=True)
    write_sheet(tmp_path / MENTALALIGN_FILES["claude"], "judge", judge_rows)
    return tmp_path


def test_load_small_benchmark_tidy_records_and_drops(small_benchmark):
    data = load_mentalalign(small_benchmark, judges=["claude"])
    assert data.conv_ids == ["1", "2"]
    human = data.scores_by_item("human")
    judge = data.scores_by_item("claude")
    assert len(human) == 20 - 3 and len(judge) == 20 - 1
    assert human[("1", "claude")] == dict(zip(MENTALALIGN_DIMENSIONS.values(), [2, 2, 3, 5, 2, 2, 3], strict=True))
    assert judge[("1", "original")]["safety"] == 5 and judge[("2", "qwen_2")]["empathy"] == 3
    assert ("1", "qwen_3") not in human and ("2", "gemini") not in judge
    assert data.drop_counts() == {"human": {"empty": 1, "all_zero": 1, "out_of_range": 1},
                                  "claude": {"unparseable": 1}}
    dropped = {(cell.rater, cell.conv_id, cell.generator): cell for cell in data.dropped}
    zero = dropped[("human", "2", "gpt4o")]
    assert (zero.file, zero.row, zero.column, zero.reason) == ("human_judge.xlsx", 3, "human_response_gpt4o", "all_zero")
    assert data.parsed_from == {"human": {"json": 17}, "claude": {"fenced": 10, "json": 9}}
    for rater in ("human", "claude"):
        expected = hashlib.sha256((small_benchmark / MENTALALIGN_FILES[rater]).read_bytes()).hexdigest()
        assert data.sha256[rater] == expected


def test_load_as_published_keeps_zero_and_out_of_range_cells(small_benchmark):
    data = load_mentalalign(small_benchmark, judges=["claude"], cleaning="as_published")
    human = data.scores_by_item("human")
    assert set(human[("2", "gpt4o")].values()) == {0}
    assert human[("2", "llama_3")]["understanding"] == 6
    assert data.drop_counts() == {"human": {"empty": 1}, "claude": {"unparseable": 1}}


def test_missing_column_names_file_and_column(small_benchmark):
    path = small_benchmark / MENTALALIGN_FILES["claude"]
    write_sheet(path, "judge", [{"ConvID": 1}], generators=MENTALALIGN_GENERATORS[:-1])
    with pytest.raises(InputError, match=r"claude_llm_judge\.xlsx:1: missing column\(s\) judge_response_qwen_3"):
        load_mentalalign(small_benchmark, judges=["claude"])


def test_duplicate_or_missing_conv_id_names_the_row(small_benchmark):
    path = small_benchmark / MENTALALIGN_FILES["claude"]
    write_sheet(path, "judge", [{"ConvID": 1}, {"ConvID": 1}])
    with pytest.raises(InputError, match=r"claude_llm_judge\.xlsx:3: field 'ConvID': duplicate '1'"):
        load_mentalalign(small_benchmark, judges=["claude"])
    write_sheet(path, "judge", [{"ConvID": 1}, {"ConvID": None, "claude": cell(3, 3, 3, 3, 3, 3, 3)}])
    with pytest.raises(InputError, match=r"claude_llm_judge\.xlsx:3: field 'ConvID': missing"):
        load_mentalalign(small_benchmark, judges=["claude"])


def test_judge_file_must_cover_the_same_conversations(small_benchmark):
    write_sheet(small_benchmark / MENTALALIGN_FILES["claude"], "judge", [{"ConvID": 1}, {"ConvID": 3}])
    with pytest.raises(InputError, match=r"conversations differ .*only here: \['3'\].*only in the human file: \['2'\]"):
        load_mentalalign(small_benchmark, judges=["claude"])


def test_unknown_judge_and_missing_files(small_benchmark, tmp_path_factory):
    with pytest.raises(InputError, match="unknown MentalAlign judge"):
        load_mentalalign(small_benchmark, judges=["gpt-5"])
    with pytest.raises(InputError, match=r"files not found: .*gemini_llm_judge\.xlsx"):
        load_mentalalign(small_benchmark)
    with pytest.raises(InputError, match="human_judge.xlsx"):
        load_mentalalign(tmp_path_factory.mktemp("empty"))


@pytest.mark.slow
def test_real_benchmark_counts(shared_data):
    import pandas as pd

    data = load_mentalalign(shared_data)  # finds the mentalalign/ folder inside
    assert len(data.conv_ids) == 1000
    assert data.drop_counts() == {
        "human": {"empty": 57, "all_zero": 33, "missing_score": 7, "out_of_range": 3},
        "claude": {"unparseable": 3},
        "gemini": {"empty": 7, "unparseable": 1},
        "gpt-4o": {},
        "o4-mini": {"empty": 1, "unparseable": 3},
    }
    kept = {rater: len(data.scores_by_item(rater)) for rater in MENTALALIGN_FILES}
    assert kept == {"human": 9900, "claude": 9997, "gemini": 9992, "gpt-4o": 10000, "o4-mini": 9996}
    assert data.parsed_from["claude"]["embedded"] == 4
    # Every (conversation, generator) is accounted for: kept or dropped, 1,000 x 10 per rater.
    for rater in MENTALALIGN_FILES:
        assert kept[rater] + sum(data.drop_counts()[rater].values()) == 1000 * len(MENTALALIGN_GENERATORS)
    # Independent read with pandas: non-blank cells per rater equal the ones not dropped as empty.
    for rater, name in MENTALALIGN_FILES.items():
        frame = pd.read_excel(shared_data / "mentalalign" / name)
        frame.columns = [str(column).strip() for column in frame.columns]
        score_columns = [column for column in frame.columns if "_response_" in column]
        assert len(frame) == 1000 and len(score_columns) == 10
        non_blank = int(frame[score_columns].apply(lambda col: col.astype(str).str.strip().ne("")
                                                    & col.notna()).to_numpy().sum())
        assert non_blank == 10_000 - data.drop_counts()[rater].get("empty", 0)
    human = data.scores_by_item("human")
    first = json.loads(pd.read_excel(shared_data / "mentalalign" / "human_judge.xlsx")["human_response_original"][0])
    assert list(human[("1", "original")].values()) == [first[key] for key in SOURCE_KEYS]
    assert len(data.sha256["human"]) == 64

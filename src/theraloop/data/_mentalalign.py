"""MentalAlign-70k (Badawi et al., 2025, MentalBench-Align): clinical experts and four LLM judges rate
1,000 conversations x 10 responses on the seven TheraJudge dimensions (1-5).

The spreadsheets hold one JSON object of scores per cell. Some cells are empty, all zero, missing a
score, out of range or not JSON at all; such a cell is dropped whole, its location and reason kept, so
every analysis can say exactly what it left out. Nothing is guessed from malformed text. The
`as_published` cleaning instead reads cells as the benchmark's own analysis did (all-zero and
out-of-range scores kept), so its published numbers can be reproduced and the effect of cleaning seen.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from theraloop.io import InputError, sha256_file

# Spreadsheet key -> therajudge rubric key, in the benchmark's order (cognitive, then affective).
MENTALALIGN_DIMENSIONS: dict[str, str] = {
    "Guidance": "guidance",
    "Informativeness": "informativeness",
    "Relevance": "relevance",
    "Safety": "safety",
    "Empathy": "empathy",
    "Helpfulness": "helpfulness",
    "Understanding": "understanding",
}
# Column suffixes: `original` is the human counsellor's response, the rest are the nine LLMs.
MENTALALIGN_GENERATORS: tuple[str, ...] = (
    "original", "claude", "ds_llama", "ds_qwen", "gemini", "gpt4o", "gpt4omini", "llama_3", "qwen_2", "qwen_3",
)
HUMAN_RATER = "human"
MENTALALIGN_FILES: dict[str, str] = {
    HUMAN_RATER: "human_judge.xlsx",
    "claude": "claude_llm_judge.xlsx",
    "gemini": "gemini_llm_judge.xlsx",
    "gpt-4o": "gpt-4o_llm_judge.xlsx",
    "o4-mini": "o4-mini_llm_judge.xlsx",
}
MENTALALIGN_JUDGES: tuple[str, ...] = tuple(rater for rater in MENTALALIGN_FILES if rater != HUMAN_RATER)
# The benchmark scores each judge without its own model family's responses (self-preference bias).
JUDGE_OWN_GENERATOR: dict[str, str] = {"claude": "claude", "gemini": "gemini", "gpt-4o": "gpt4o",
                                       "o4-mini": "gpt4omini"}

DropReason = Literal["empty", "unparseable", "missing_score", "all_zero", "out_of_range"]
DROP_REASONS: tuple[DropReason, ...] = ("empty", "unparseable", "missing_score", "all_zero", "out_of_range")
Cleaning = Literal["strict", "as_published"]
ParsedFrom = Literal["json", "fenced", "embedded"]
_SCALE = range(1, 6)


class MentalAlignRating(BaseModel):
    """One rater's scores (rubric keys) for one generator's response to one conversation: all seven
    under strict cleaning, possibly fewer under `as_published`."""

    conv_id: str
    generator: str
    rater: str
    scores: dict[str, int]


class DroppedCell(BaseModel):
    """A cell left out, where it is (file, spreadsheet row, column) and why."""

    rater: str
    file: str
    row: int
    column: str
    conv_id: str
    generator: str
    reason: DropReason


class MentalAlign(BaseModel):
    """The loaded benchmark: kept ratings, dropped cells, how kept cells were read and each file's
    sha256 (both keyed by rater), and the conversation ids in file order."""

    cleaning: Cleaning
    ratings: list[MentalAlignRating]
    dropped: list[DroppedCell]
    parsed_from: dict[str, dict[str, int]]
    sha256: dict[str, str]
    conv_ids: list[str]

    def drop_counts(self) -> dict[str, dict[str, int]]:
        """{rater: {reason: cells dropped}} for every rater loaded (empty dict when none dropped)."""
        found = Counter((cell.rater, cell.reason) for cell in self.dropped)
        return {rater: {reason: found[rater, reason] for reason in DROP_REASONS if found[rater, reason]}
                for rater in self.sha256}

    def scores_by_item(self, rater: str) -> dict[tuple[str, str], dict[str, int]]:
        """{(conv_id, generator): scores} for one rater."""
        return {(rating.conv_id, rating.generator): rating.scores for rating in self.ratings if rating.rater == rater}


def _strip_fence(text: str) -> tuple[str, bool]:
    if not text.startswith("```"):
        return text, False
    body = text.split("\n", 1)[1] if "\n" in text else text[3:]
    body = body.rstrip()
    if body.endswith("```"):
        body = body[:-3]
    return body.strip(), True


def _parse_as_published(text: str) -> tuple[dict[str, int] | None, DropReason | ParsedFrom]:
    # MentalBench-Align's icc_corrected_with_bootstrap_ci.py: ```json fences removed, then strict JSON;
    # each score kept as written (0 and 6 too), a missing score leaves out that dimension only.
    fenced = text.startswith("```json")
    if fenced:
        text = text.replace("```json", "").replace("```", "").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None, "unparseable"
    if not isinstance(data, dict):
        return None, "unparseable"
    scores = {key: int(data[source]) for source, key in MENTALALIGN_DIMENSIONS.items()
              if isinstance(data.get(source), int | float) and not isinstance(data[source], bool)
              and data[source] == int(data[source])}
    if not scores:
        return None, "missing_score"
    return scores, "fenced" if fenced else "json"


def parse_mentalalign_cell(value: Any, cleaning: Cleaning = "strict") -> tuple[dict[str, int] | None,
                                                                                DropReason | ParsedFrom]:
    """Scores (rubric keys) of one cell and how they were read, or None and the reason for dropping it.

    `strict` (the default) keeps a cell only with all seven scores on the 1-5 scale; it reads a JSON
    object, one wrapped in a ``` fence, or one with prose around it (some judges explained first); the
    object may carry extra keys (Overall, Explanation). `as_published` reads cells the way the
    benchmark's own analysis did, to reproduce its numbers: all-zero and out-of-range scores are kept
    and a cell may lack some dimensions.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "empty"
    if cleaning == "as_published":
        return _parse_as_published(str(value).strip())
    text, fenced = _strip_fence(str(value).strip())
    parsed_from: ParsedFrom = "fenced" if fenced else "json"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        if start < 0:
            return None, "unparseable"
        try:
            data, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            return None, "unparseable"
        parsed_from = "embedded"
    if not isinstance(data, dict):
        return None, "unparseable"
    raw = [data.get(source) for source in MENTALALIGN_DIMENSIONS]
    if any(score is None for score in raw):
        return None, "missing_score"
    if all(score == 0 and not isinstance(score, bool) for score in raw):
        return None, "all_zero"
    scores = {}
    for key, score in zip(MENTALALIGN_DIMENSIONS.values(), raw, strict=True):
        is_number = isinstance(score, int | float) and not isinstance(score, bool)
        if not is_number or score != int(score) or int(score) not in _SCALE:
            return None, "out_of_range"
        scores[key] = int(score)
    return scores, parsed_from


def mentalalign_paths(root: str | Path, judges: tuple[str, ...] | list[str] | None = None) -> dict[str, Path]:
    """{rater: xlsx path} under `root` (the folder holding the files, or one with `mentalalign/` inside)."""
    root = Path(root)
    if not (root / MENTALALIGN_FILES[HUMAN_RATER]).exists() and (root / "mentalalign").is_dir():
        root = root / "mentalalign"
    judges = MENTALALIGN_JUDGES if judges is None else tuple(judges)
    unknown = [judge for judge in judges if judge not in MENTALALIGN_JUDGES]
    if unknown:
        raise InputError(f"unknown MentalAlign judge(s) {unknown}: choose from {', '.join(MENTALALIGN_JUDGES)}")
    paths = {rater: root / MENTALALIGN_FILES[rater] for rater in (HUMAN_RATER, *judges)}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"MentalAlign files not found: {', '.join(missing)}")
    return paths


def _read_sheet(path: Path) -> list[tuple]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several unrelated types for a file that is not xlsx
        raise InputError(f"{path}: not a readable xlsx file ({exc})") from None
    try:
        return list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


def _conv_id(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _read_rater(rater: str, path: Path, cleaning: Cleaning, dropped: list[DroppedCell],
                parsed_from: Counter) -> tuple[list[MentalAlignRating], list[str]]:
    rows = _read_sheet(path)
    if not rows:
        raise InputError(f"{path}: the first sheet is empty")
    # Some headers carry a leading space (" human_response_claude"): match on the stripped name.
    header = {str(name).strip(): index for index, name in enumerate(rows[0]) if name is not None}
    prefix = "human_response_" if rater == HUMAN_RATER else "judge_response_"
    wanted = ["ConvID", *(prefix + generator for generator in MENTALALIGN_GENERATORS)]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise InputError(f"{path}:1: missing column(s) {', '.join(missing)}")
    ratings = []
    seen: dict[str, int] = {}
    for row_number, row in enumerate(rows[1:], start=2):
        if all(cell is None for cell in row):
            continue
        conv_id = _conv_id(row[header["ConvID"]])
        if conv_id is None:
            raise InputError(f"{path}:{row_number}: field 'ConvID': missing")
        if conv_id in seen:
            raise InputError(f"{path}:{row_number}: field 'ConvID': duplicate {conv_id!r} (first on row {seen[conv_id]})")
        seen[conv_id] = row_number
        for generator in MENTALALIGN_GENERATORS:
            column = prefix + generator
            index = header[column]
            scores, outcome = parse_mentalalign_cell(row[index] if index < len(row) else None, cleaning)
            if scores is None:
                dropped.append(DroppedCell(rater=rater, file=path.name, row=row_number, column=column,
                                           conv_id=conv_id, generator=generator, reason=outcome))
                continue
            parsed_from[outcome] += 1
            ratings.append(MentalAlignRating(conv_id=conv_id, generator=generator, rater=rater, scores=scores))
    return ratings, list(seen)


def load_mentalalign(root: str | Path, judges: tuple[str, ...] | list[str] | None = None,
                     cleaning: Cleaning = "strict") -> MentalAlign:
    """Tidy ratings of the human experts and the chosen LLM judges (default: all four), with every
    dropped cell, how the kept cells were read, and each file's sha256. `cleaning`: see
    parse_mentalalign_cell.

    Judge files must cover the same conversations as the human file; a mismatch is an InputError.
    """
    paths = mentalalign_paths(root, judges)
    ratings: list[MentalAlignRating] = []
    dropped: list[DroppedCell] = []
    parsed_from: dict[str, dict[str, int]] = {}
    conv_ids: list[str] | None = None
    for rater, path in paths.items():
        counter: Counter = Counter()
        rater_ratings, rater_conv_ids = _read_rater(rater, path, cleaning, dropped, counter)
        if conv_ids is None:
            conv_ids = rater_conv_ids
        elif set(rater_conv_ids) != set(conv_ids):
            only_here = sorted(set(rater_conv_ids) - set(conv_ids))[:5]
            only_human = sorted(set(conv_ids) - set(rater_conv_ids))[:5]
            raise InputError(f"{path}: conversations differ from {paths[HUMAN_RATER].name} "
                             f"(only here: {only_here}; only in the human file: {only_human})")
        ratings.extend(rater_ratings)
        parsed_from[rater] = dict(counter)
    return MentalAlign(cleaning=cleaning, ratings=ratings, dropped=dropped, parsed_from=parsed_from,
                       sha256={rater: sha256_file(path) for rater, path in paths.items()}, conv_ids=conv_ids or [])

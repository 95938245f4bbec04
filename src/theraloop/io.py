"""JSONL and JSON files: validated reading with precise errors, crash-safe appending, hashing."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class InputError(ValueError):
    """Bad user input: the message names the file, the line and the field."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _format_validation_error(path: Path, line_no: int, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<record>"
        problems.append(f"field '{field}': {item['msg']}")
    return f"{path}:{line_no}: " + "; ".join(problems)


def _open_input(path: Path):
    """The file opened for reading in binary, or an InputError that says what is wrong with it."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a JSONL file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None


def iter_jsonl(path: str | Path, model: type[T] | None = None) -> Iterator[T | dict]:
    """Yield records of a JSONL file, validated against `model` when given.

    Blank lines are skipped. A malformed line raises InputError naming file, line and field; text that
    is not UTF-8 names the line and the byte offset.
    """
    path = Path(path)
    offset = 0
    with _open_input(path) as handle:
        for line_no, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not UTF-8 (byte 0x{raw_line[exc.start]:02x} at byte offset "
                                 f"{offset + exc.start} of the file); save the file as UTF-8") from None
            offset += len(raw_line)
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(raw, dict):
                raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(raw).__name__}")
            if model is None:
                yield raw
                continue
            try:
                yield model.model_validate(raw)
            except ValidationError as exc:
                raise InputError(_format_validation_error(path, line_no, exc)) from None


def read_jsonl(path: str | Path, model: type[T] | None = None, allow_empty: bool = False) -> list:
    """Every record of a JSONL file; a file with none is an error unless `allow_empty`."""
    records = list(iter_jsonl(path, model))
    if not records and not allow_empty:
        raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")
    return records


def check_unique_ids(records: Iterable[Any], path: str | Path, key: str = "id") -> None:
    seen: dict[str, int] = {}
    for index, record in enumerate(records, start=1):
        value = record[key] if isinstance(record, dict) else getattr(record, key)
        if value in seen:
            raise InputError(f"{path}: record {index}: duplicate {key} {value!r} (first seen at record {seen[value]})")
        seen[value] = index


def _to_dict(record: BaseModel | dict) -> dict:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else record


class JSONLAppender:
    """Append records one at a time, flushed and fsynced, so a killed run keeps finished work.

    On opening, a partial last line left by a crash is cut off; `existing` holds the records
    already written, so callers can skip finished work.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existing: list[dict] = self._recover()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _recover(self) -> list[dict]:
        if not self.path.exists():
            return []
        records: list[dict] = []
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for raw_line in handle:
                if not raw_line.endswith(b"\n"):
                    break
                try:
                    records.append(json.loads(raw_line))
                except json.JSONDecodeError:
                    break
                good_bytes += len(raw_line)
        if good_bytes != self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return records

    def done_keys(self, key: str = "id") -> set:
        return {record.get(key) for record in self.existing}

    def write(self, record: BaseModel | dict) -> None:
        self._handle.write(json.dumps(_to_dict(record), ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JSONLAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(_to_dict(record), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)

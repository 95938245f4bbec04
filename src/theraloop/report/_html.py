"""One self-contained HTML report from arena runs, a judge validation and refinement traces.

Every section is optional. Figures are embedded as base64 PNG (and also written as PNG files next to
the report); all text from inputs goes through Jinja2 autoescaping.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, Field, ValidationError, model_validator

from theraloop.arena import ArenaResult
from theraloop.io import InputError, iter_jsonl
from theraloop.report._plots import FigureImage, arena_figures

REFINE_FILES = ("refined.jsonl", "trace.jsonl")
AUDIT_FILE = "judge_audit.json"
SESSIONS_FILE = "sessions.jsonl"  # a simulate folder (theraloop.sessions)
SESSION_ARENA_FILE = "session_arena.json"  # a `theraloop sessions arena` folder


class Table(BaseModel):
    title: str
    columns: list[str]
    rows: list[tuple[str, list[int | float | str | None]]]
    note: str | None = None


class DiffSegment(BaseModel):
    op: Literal["equal", "delete", "insert"]
    text: str


class RefinePair(BaseModel):
    """Original and final text of one refined response (`response` is accepted for `final`)."""

    id: str
    original: str
    final: str

    @model_validator(mode="before")
    @classmethod
    def _final_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "final" not in data and "response" in data:
            return {**data, "final": data["response"]}
        return data


class RefineDiff(BaseModel):
    id: str
    changed: bool
    segments: list[DiffSegment]


class RefineSection(BaseModel):
    title: str
    source: str
    n_items: int
    n_changed: int
    diffs: list[RefineDiff]


class ArenaSection(BaseModel):
    title: str
    result: ArenaResult
    figures: list[FigureImage]
    safety: dict[str, Any] | None = Field(None, description="safety.json: per system, responses flagged by the "
                                                             "response-safety check, and offline toxicity")


class ValidationSection(BaseModel):
    title: str
    tables: list[Table]


class AuditSection(BaseModel):
    """A judge audit (judge_audit.json from `theraloop judge audit`): verdict, failed checks, charts."""

    title: str
    judge: str
    passed: bool
    n_checks: int
    failed: list[dict[str, Any]]
    figures: list[FigureImage]


class SessionsSection(BaseModel):
    """Sessions (transcripts with per-turn scores and risk markers) or a session arena, as HTML that
    theraloop.sessions rendered with autoescaping."""

    title: str
    kind: Literal["sessions", "session_arena"]
    html: str


class Report(BaseModel):
    title: str
    created: str
    arenas: list[ArenaSection] = Field(default_factory=list)
    validations: list[ValidationSection] = Field(default_factory=list)
    refinements: list[RefineSection] = Field(default_factory=list)
    audits: list[AuditSection] = Field(default_factory=list)
    sessions: list[SessionsSection] = Field(default_factory=list)

    @property
    def figures(self) -> list[FigureImage]:
        return [figure for section in [*self.arenas, *self.audits] for figure in section.figures]


def word_diff(original: str, final: str) -> list[DiffSegment]:
    """Word-level diff; whitespace is normalised to single spaces between words."""
    before, after = original.split(), final.split()
    segments = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if tag == "equal":
            segments.append(DiffSegment(op="equal", text=" ".join(before[i1:i2])))
            continue
        if i2 > i1:
            segments.append(DiffSegment(op="delete", text=" ".join(before[i1:i2])))
        if j2 > j1:
            segments.append(DiffSegment(op="insert", text=" ".join(after[j1:j2])))
    return segments


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _flatten_numbers(data: dict, prefix: str = "") -> dict[str, int | float | None]:
    """Numeric leaves of nested dicts under dotted keys (None kept: a statistic that was undefined)."""
    flat: dict[str, int | float | None] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if _is_number(value):
            flat[name] = value
        elif value is None:
            flat[name] = None
        elif isinstance(value, dict):
            flat.update(_flatten_numbers(value, name + "."))
    return flat


def numeric_tables(data: dict, title: str) -> list[Table]:
    """Tables of the numeric fields of an arbitrary JSON object.

    Scalars at a level form a two-column table. Sibling objects sharing a field (per-dimension
    statistics, say) form one table, a column each when they have more fields than there are
    objects (else a row each); other objects are visited on their own.
    """
    tables = []
    scalars = [(key, [value]) for key, value in data.items() if _is_number(value)]
    if scalars:
        tables.append(Table(title=title, columns=["value"], rows=scalars))
    children = {key: value for key, value in data.items() if isinstance(value, dict)}
    flat = {key: _flatten_numbers(value) for key, value in children.items()}
    shared = set.intersection(*(set(fields) for fields in flat.values())) if flat else set()
    if len(children) >= 2 and shared:
        names = list(dict.fromkeys(field for fields in flat.values() for field in fields))
        if len(names) > len(children):  # long and narrow reads better than wide: one column per object
            rows = [(name, [fields.get(name) for fields in flat.values()]) for name in names]
            tables.append(Table(title=title, columns=list(children), rows=rows))
        else:
            rows = [(key, [fields.get(name) for name in names]) for key, fields in flat.items()]
            tables.append(Table(title=title, columns=names, rows=rows))
    else:
        for key, value in children.items():
            tables += numeric_tables(value, f"{title} / {key}")
    return tables


def load_validation(path: str | Path) -> ValidationSection:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    from theraloop.judge._validate import Validation

    try:
        tables = agreement_tables(Validation.model_validate(data))
    except ValidationError:  # some other tool's JSON: show what numbers it holds
        tables = numeric_tables(data, "summary")
    return ValidationSection(title=path.name, tables=tables)


def _estimate(estimate) -> str:
    if estimate is None or estimate.estimate is None:
        return "–"
    interval = f" [{estimate.low:.2f}, {estimate.high:.2f}]" if estimate.low is not None else ""
    return f"{estimate.estimate:.2f}{interval}"


def agreement_tables(validation) -> list[Table]:
    """Per judge, a system-level and a response-level table: every ICC with its bootstrap interval."""
    from theraloop.judge._validate import ICC_KINDS

    level = f"{validation.level:.0%}"
    tables = []
    for judge, result in validation.judges.items():
        dimensions = result.agreement.dimensions
        system_rows = [(dimension, [agreement.system.n_systems, *(_estimate(agreement.system.icc[kind])
                                                                   for kind in ICC_KINDS)]
                        if agreement.system else [0, *["–"] * len(ICC_KINDS)])
                       for dimension, agreement in dimensions.items()]
        tables.append(Table(title=f"{judge}: system level (mean score per generator)",
                            columns=["systems", *(f"ICC({kind}) [{level} CI]" for kind in ICC_KINDS)],
                            rows=system_rows))
        response_rows = [(dimension, [agreement.response.n, *(_estimate(agreement.response.icc[kind])
                                                               for kind in ICC_KINDS),
                                      agreement.response.qwk, agreement.response.alpha_interval,
                                      f"{agreement.response.bias:+.3f}", agreement.response.mae,
                                      agreement.response.tier or "–"])
                         for dimension, agreement in dimensions.items()]
        tables.append(Table(
            title=f"{judge}: response level", rows=response_rows,
            columns=["responses", *(f"ICC({kind}) [{level} CI]" for kind in ICC_KINDS), "weighted kappa (QWK)",
                     "Krippendorff alpha", "bias (judge - human)", "MAE", "agreement tier"],
            note="C: consistency, A: absolute agreement; 1: single rater, k: mean of judge and human. "
                 "Tier: Koo & Li on response-level ICC(A,1)."))
    return tables


def load_arena(run_dir: str | Path, prefix: str = "") -> ArenaSection:
    path = Path(run_dir) / "arena.json"
    try:
        result = ArenaResult.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except ValidationError as exc:
        raise InputError(f"{path}: not an arena result: {exc.errors()[0]['msg']}") from None
    safety_path = Path(run_dir) / "safety.json"
    safety = json.loads(safety_path.read_text(encoding="utf-8")) if safety_path.is_file() else None
    return ArenaSection(title=Path(run_dir).name, result=result, figures=arena_figures(result, prefix), safety=safety)


def load_refinement(run_dir: str | Path, max_items: int = 50) -> RefineSection:
    """Diffs of the first max_items responses of a refine output folder (refined.jsonl or trace.jsonl)."""
    run_dir = Path(run_dir)
    source = next((run_dir / name for name in REFINE_FILES if (run_dir / name).is_file()), None)
    if source is None:
        raise InputError(f"{run_dir}: no {' or '.join(REFINE_FILES)}")
    pairs = list(iter_jsonl(source, RefinePair))
    diffs = [RefineDiff(id=pair.id, changed=pair.original.split() != pair.final.split(),
                        segments=word_diff(pair.original, pair.final)) for pair in pairs[:max_items]]
    return RefineSection(title=run_dir.name, source=source.name, n_items=len(pairs),
                         n_changed=sum(pair.original.split() != pair.final.split() for pair in pairs), diffs=diffs)


def load_audit(run_dir: str | Path, prefix: str = "") -> AuditSection:
    from theraloop.judge._audit import AuditResult
    from theraloop.judge._audit_html import audit_figures

    path = Path(run_dir) / AUDIT_FILE
    try:
        result = AuditResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise InputError(f"{path}: not a judge audit: {exc.errors()[0]['msg']}") from None
    return AuditSection(title=Path(run_dir).name, judge=result.judge, passed=result.passed,
                        n_checks=len(result.checks), failed=[check.model_dump() for check in result.failed()],
                        figures=[FigureImage(name=f"{prefix}{name}", title=title, png=png)
                                 for name, title, png in audit_figures(result)])


def load_sessions(run_dir: str | Path) -> SessionsSection:
    """A simulate folder (with its judged/ scores, if any) as a sessions section."""
    from theraloop.sessions._report import sessions_fragment

    return SessionsSection(title=Path(run_dir).name, kind="sessions", html=sessions_fragment(run_dir))


def load_session_arena(run_dir: str | Path) -> SessionsSection:
    from theraloop.sessions._arena import SessionArenaResult
    from theraloop.sessions._report import session_arena_fragment

    path = Path(run_dir) / SESSION_ARENA_FILE
    try:
        result = SessionArenaResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise InputError(f"{path}: not a session arena result: {exc.errors()[0]['msg']}") from None
    return SessionsSection(title=Path(run_dir).name, kind="session_arena", html=session_arena_fragment(result))


def classify_run_dir(run_dir: str | Path) -> list[str]:
    """What a run folder holds: 'arena', 'validation', 'refine', 'audit', 'sessions', 'session_arena' (any
    combination, possibly none)."""
    run_dir = Path(run_dir)
    kinds = []
    if (run_dir / "arena.json").is_file():
        kinds.append("arena")
    if (run_dir / "validation.json").is_file():
        kinds.append("validation")
    if any((run_dir / name).is_file() for name in REFINE_FILES):
        kinds.append("refine")
    if (run_dir / AUDIT_FILE).is_file():
        kinds.append("audit")
    if (run_dir / SESSIONS_FILE).is_file():
        kinds.append("sessions")
    if (run_dir / SESSION_ARENA_FILE).is_file():
        kinds.append("session_arena")
    return kinds


def build_report(run_dirs: Sequence[str | Path] = (), validation: Sequence[str | Path] = (),
                 refine: Sequence[str | Path] = (), title: str = "theraloop report",
                 max_diffs: int = 50, sessions: Sequence[str | Path] = ()) -> Report:
    """Sections from run folders (recognised by their files) plus explicitly given inputs."""
    report = Report(title=title, created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    validation, refine = list(validation), list(refine)
    kinds_by_dir = {Path(run_dir): classify_run_dir(run_dir) for run_dir in run_dirs}
    n_arenas = sum("arena" in kinds for kinds in kinds_by_dir.values())
    for run_dir, kinds in kinds_by_dir.items():
        if not kinds:
            raise InputError(f"{run_dir}: no arena.json, validation.json, refine output, judge_audit.json, "
                             "sessions.jsonl or session_arena.json found")
        if "arena" in kinds:
            # Prefix figure names so two arenas in one report do not overwrite each other's PNGs.
            prefix = f"{len(report.arenas) + 1}-" if n_arenas > 1 else ""
            report.arenas.append(load_arena(run_dir, prefix))
        if "validation" in kinds:
            validation.append(Path(run_dir) / "validation.json")
        if "refine" in kinds:
            refine.append(run_dir)
        if "audit" in kinds:
            report.audits.append(load_audit(run_dir, prefix=f"{len(report.audits) + 1}-"))
        if "sessions" in kinds:
            report.sessions.append(load_sessions(run_dir))
        if "session_arena" in kinds:
            report.sessions.append(load_session_arena(run_dir))
    report.validations = [load_validation(path) for path in validation]
    report.refinements = [load_refinement(path, max_diffs) for path in refine]
    report.sessions += [load_sessions(path) for path in sessions]
    return report


def _format_number(value: int | float | str | None, digits: int = 3) -> str:
    """Counts as integers, statistics with fixed decimals, a dash for an undefined value; text as it is."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("theraloop.report", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
    environment.filters["num"] = _format_number
    return environment


def render_report(report: Report) -> str:
    return _environment().get_template("report.html").render(report=report)


def write_report(report: Report, out: str | Path) -> Path:
    """Write the HTML file and each figure as `<stem>-<figure>.png` beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for figure in report.figures:
        (out.parent / f"{out.stem}-{figure.name}.png").write_bytes(figure.png)
    out.write_text(render_report(report), encoding="utf-8")
    return out

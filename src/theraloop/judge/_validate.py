"""`theraloop validate`: how well a judge's scores agree with human ratings.

Two sources: theraloop judgments beside human-rated items (same ids), or the MentalAlign-70k
benchmark. Each judge gets, per dimension, agreement over systems (mean score per generator, the
benchmark's ICC analysis) and over single responses (the stricter test).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from theraloop.config import StrictModel
from theraloop.io import InputError
from theraloop.judge._calibration import CALIBRATION_METHODS, MAP_METHODS, Calibration, fit_map
from theraloop.stats._agreement import ICC_KINDS, AgreementReport, ICCEstimate, agreement_report

if TYPE_CHECKING:
    from theraloop.data._mentalalign import MentalAlign


class ValidateConfig(StrictModel):
    n_boot: int = Field(1000, ge=1, description="bootstrap resamples for the ICC intervals")
    seed: int = 42
    level: float = Field(0.95, gt=0, lt=1)
    dimensions: list[str] | None = Field(None, description="default: every dimension both sides scored")
    exclude_own_family: bool = Field(True, description="MentalAlign: score each judge without its own "
                                                      "model family's responses")
    judges: list[str] | None = Field(None, description="MentalAlign judges (default: all four)")
    cleaning: Literal["strict", "as_published"] = Field(
        "strict", description="MentalAlign cells: strict drops all-zero, out-of-range and incomplete cells; "
                              "as_published reads them as the benchmark's analysis did")


class JudgeInput(BaseModel):
    """One judge's scores and the human scores, one row per response, ready for agreement_report."""

    judge: str
    judge_rows: list[dict[str, Any]]
    human_rows: list[dict[str, Any]]
    excluded_systems: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)


class JudgeValidation(BaseModel):
    judge: str
    excluded_systems: list[str]
    counts: dict[str, int]
    agreement: AgreementReport


class Validation(BaseModel):
    source: Literal["judgments", "mentalalign"]
    dimensions: list[str]
    n_boot: int
    seed: int
    level: float
    judges: dict[str, JudgeValidation]
    data: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- inputs


def inputs_from_judgments(judgments: Sequence, human_items: Sequence, judgments_path: str = "judgments",
                          human_path: str = "human") -> dict[str, JudgeInput]:
    """Pair judgments (grouped by judge name) with human-rated items by id.

    A parse failure stays in as a response without judge scores, so it is counted, never scored.
    The system of a response is the human item's, else the judgment's; if both name one they must agree.
    """
    human_by_id = {item.id: item for item in human_items}
    human_rows = [{"id": item.id, **(item.human_scores or {})} for item in human_items if item.human_scores]
    rated_ids = {row["id"] for row in human_rows}
    by_judge: dict[str, list] = {}
    for judgment in judgments:
        by_judge.setdefault(judgment.judge, []).append(judgment)
    inputs = {}
    for judge, group in by_judge.items():
        counts: Counter = Counter(judged=len(group))
        systems: dict[str, str | None] = {}
        judge_rows = []
        seen: set[str] = set()
        for judgment in group:
            if judgment.id in seen:
                raise InputError(f"{judgments_path}: judge {judge!r} scored id {judgment.id!r} more than once")
            seen.add(judgment.id)
            item = human_by_id.get(judgment.id)
            if item is not None and item.system and judgment.system and item.system != judgment.system:
                raise InputError(f"id {judgment.id!r}: {human_path} says system {item.system!r}, "
                                 f"{judgments_path} says {judgment.system!r}")
            systems[judgment.id] = (item.system if item is not None and item.system else judgment.system)
            if not judgment.parse_ok or not judgment.scores:
                counts["parse_failures"] += 1
            if judgment.id not in rated_ids:
                counts["without_human_scores"] += 1
            judge_rows.append({"id": judgment.id, **(judgment.scores if judgment.parse_ok and judgment.scores else {})})
        counts["human_rated_not_judged"] = len(rated_ids - seen)
        paired_human = [{**row, "system": systems.get(row["id"]) or human_by_id[row["id"]].system}
                        for row in human_rows]
        inputs[judge] = JudgeInput(judge=judge, judge_rows=judge_rows, human_rows=paired_human, counts=dict(counts))
    return inputs


def inputs_from_mentalalign(data: MentalAlign, exclude_own_family: bool = True,
                            judges: Sequence[str] | None = None) -> dict[str, JudgeInput]:
    """One JudgeInput per MentalAlign judge; a response's id is `conv_id/generator`, its system the generator."""
    from theraloop.data._mentalalign import HUMAN_RATER, JUDGE_OWN_GENERATOR

    human = data.scores_by_item(HUMAN_RATER)
    judges = [rater for rater in data.sha256 if rater != HUMAN_RATER] if judges is None else list(judges)
    inputs = {}
    for judge in judges:
        excluded = [JUDGE_OWN_GENERATOR[judge]] if exclude_own_family else []
        scored = data.scores_by_item(judge)
        keys = [key for key in dict.fromkeys([*human, *scored]) if key[1] not in excluded]
        judge_rows = [{"id": f"{conv}/{gen}", "system": gen, **scored[(conv, gen)]}
                      for conv, gen in keys if (conv, gen) in scored]
        human_rows = [{"id": f"{conv}/{gen}", "system": gen, **human[(conv, gen)]}
                      for conv, gen in keys if (conv, gen) in human]
        counts = {"responses": len(keys), "judge_scored": len(judge_rows), "human_scored": len(human_rows)}
        inputs[judge] = JudgeInput(judge=judge, judge_rows=judge_rows, human_rows=human_rows,
                                   excluded_systems=excluded, counts=counts)
    return inputs


# ---------------------------------------------------------------- validation


def _shared_dimensions(inputs: dict[str, JudgeInput]) -> list[str]:
    def keys(rows: list[dict]) -> list[str]:
        return [key for key in dict.fromkeys(k for row in rows for k in row) if key not in ("id", "system")]

    shared: list[str] | None = None
    for judge_input in inputs.values():
        human_keys = set(keys(judge_input.human_rows))
        both = [key for key in keys(judge_input.judge_rows) if key in human_keys]
        shared = both if shared is None else [key for key in shared if key in both]
    return shared or []


def validate(inputs: dict[str, JudgeInput], source: Literal["judgments", "mentalalign"],
             config: ValidateConfig, data: dict[str, Any] | None = None) -> Validation:
    """Agreement of every judge with the human scores on the chosen (default: shared) dimensions."""
    import pandas as pd

    if not inputs:
        raise InputError("no judgments to validate")
    dimensions = config.dimensions or _shared_dimensions(inputs)
    if not dimensions:
        raise InputError("the judge and human scores share no dimension; check the rubric keys")
    results = {}
    for judge, judge_input in inputs.items():
        columns = ["id", "system", *dimensions]
        judge_frame = pd.DataFrame(judge_input.judge_rows).reindex(columns=columns).drop(columns="system")
        human_frame = pd.DataFrame(judge_input.human_rows).reindex(columns=columns)
        try:
            report = agreement_report(judge_frame, human_frame, dimensions, n_boot=config.n_boot,
                                      seed=config.seed, level=config.level)
        except ValueError as exc:
            raise InputError(f"judge {judge!r}: {exc}") from None
        results[judge] = JudgeValidation(judge=judge, excluded_systems=judge_input.excluded_systems,
                                         counts=judge_input.counts, agreement=report)
    return Validation(source=source, dimensions=dimensions, n_boot=config.n_boot, seed=config.seed,
                      level=config.level, judges=results, data=data or {})


def mentalalign_inputs(root: str | Path, config: ValidateConfig) -> tuple[dict[str, JudgeInput], dict[str, Any]]:
    """The benchmark's judges as JudgeInputs (own family excluded unless configured) and its provenance."""
    from theraloop.data._mentalalign import load_mentalalign

    data = load_mentalalign(root, config.judges, config.cleaning)
    provenance = {"root": str(root), "cleaning": data.cleaning, "sha256": data.sha256,
                  "conversations": len(data.conv_ids),
                  "dropped_cells": data.drop_counts(), "kept_cells_parsed_from": data.parsed_from}
    return inputs_from_mentalalign(data, config.exclude_own_family), provenance


def mentalalign_conversation(response_id: str) -> str:
    """MentalAlign response ids are `conv_id/generator`: calibration splits by conversation."""
    return response_id.split("/", 1)[0]


def validate_mentalalign(root: str | Path, config: ValidateConfig | None = None) -> Validation:
    """The benchmark protocol: every judge against the clinical experts, own family excluded."""
    config = config or ValidateConfig()
    inputs, provenance = mentalalign_inputs(root, config)
    return validate(inputs, "mentalalign", config, provenance)


# ---------------------------------------------------------------- calibration on held-out humans


class HeldOutMetrics(BaseModel):
    """Judge (calibrated or not) against humans on the held-out half: bias and MAE are judge - human."""

    n: int
    bias: float
    mae: float
    icc_a1: float | None
    icc_c1: float | None


class CalibrationCell(BaseModel):
    """One judge and dimension: the method used, and held-out agreement uncalibrated ("none") and
    after every map fitted on the fit half, at response and at system level."""

    method: str
    n_fit: int
    selection: dict[str, float] | None = None
    response: dict[str, HeldOutMetrics]
    system: dict[str, HeldOutMetrics | None]

    @property
    def meets_goal(self) -> bool:
        """|bias| < 0.1 and ICC(A,1) not below the uncalibrated value, at response level."""
        before, after = self.response["none"], self.response[self.method]
        return abs(after.bias) < 0.1 and (after.icc_a1 or -np.inf) >= (before.icc_a1 or -np.inf)


class CalibrationStudy(BaseModel):
    method: str
    seed: int
    split: dict[str, int]
    cells: dict[str, dict[str, CalibrationCell]]  # judge -> dimension -> cell
    calibrations: dict[str, Calibration]  # judge -> maps fitted on the fit half

    def goal_summary(self) -> dict[str, Any]:
        cells = [(judge, key, cell) for judge, row in self.cells.items() for key, cell in row.items()]
        return {"cells": len(cells), "meet_goal": sum(cell.meets_goal for *_, cell in cells),
                "bias_below_0.1": sum(abs(cell.response[cell.method].bias) < 0.1 for *_, cell in cells),
                "icc_a1_not_below_uncalibrated": sum(
                    (cell.response[cell.method].icc_a1 or -np.inf) >= (cell.response["none"].icc_a1 or -np.inf)
                    for *_, cell in cells),
                "chosen": dict(Counter(cell.method for *_, cell in cells)),
                "missed": [f"{judge}/{key}" for judge, key, cell in cells if not cell.meets_goal]}


def _held_out_metrics(judge: np.ndarray, human: np.ndarray) -> HeldOutMetrics:
    from theraloop.stats._agreement import icc

    def maybe_icc(kind: str) -> float | None:
        value = icc(np.column_stack([human, judge]), kind)
        return None if np.isnan(value) else value

    return HeldOutMetrics(n=len(judge), bias=float(np.mean(judge - human)), mae=float(np.mean(np.abs(judge - human))),
                          icc_a1=maybe_icc("A,1"), icc_c1=maybe_icc("C,1"))


def _system_metrics(judge: np.ndarray, human: np.ndarray, systems: np.ndarray) -> HeldOutMetrics | None:
    names = sorted({system for system in systems if system is not None})
    if len(names) < 2:
        return None
    return _held_out_metrics(np.array([judge[systems == name].mean() for name in names]),
                             np.array([human[systems == name].mean() for name in names]))


def _paired_rows(judge_input: JudgeInput, dimension: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    judged = {row["id"]: row.get(dimension) for row in judge_input.judge_rows}
    ids, judge, human, systems = [], [], [], []
    for row in judge_input.human_rows:
        judge_value, human_value = judged.get(row["id"]), row.get(dimension)
        if judge_value is None or human_value is None or math.isnan(judge_value) or math.isnan(human_value):
            continue
        ids.append(row["id"])
        judge.append(judge_value)
        human.append(human_value)
        systems.append(row.get("system"))
    return ids, np.asarray(judge, dtype=float), np.asarray(human, dtype=float), np.asarray(systems, dtype=object)


def calibration_study(inputs: dict[str, JudgeInput], method: str, dimensions: Sequence[str] | None = None,
                      seed: int = 42, group_of: Callable[[str], str] = lambda response_id: response_id,
                      min_pairs: int = 10) -> CalibrationStudy:
    """Fit calibration per judge and dimension on half of the groups (conversations; a seeded random half)
    and measure agreement with the humans on the other half, before and after every map; `method`
    (isotonic | quantile | linear | auto) names the map each cell uses, auto choosing on the fit half only."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}: use {' | '.join(CALIBRATION_METHODS)}")
    dimensions = list(dimensions or _shared_dimensions(inputs))
    groups = sorted({group_of(row["id"]) for judge_input in inputs.values() for row in judge_input.human_rows})
    permuted = np.random.default_rng(seed).permutation(len(groups))
    fit_groups = {groups[index] for index in permuted[:len(groups) // 2]}
    cells: dict[str, dict[str, CalibrationCell]] = {}
    calibrations = {}
    for judge, judge_input in inputs.items():
        fit_x, fit_y, fit_groups_by_key, held = {}, {}, {}, {}
        for dimension in dimensions:
            ids, judge_scores, human_scores, systems = _paired_rows(judge_input, dimension)
            labels = np.array([group_of(response_id) for response_id in ids], dtype=object)
            in_fit = np.array([label in fit_groups for label in labels], dtype=bool)
            fit_x[dimension], fit_y[dimension] = judge_scores[in_fit], human_scores[in_fit]
            fit_groups_by_key[dimension] = labels[in_fit]
            held[dimension] = (judge_scores[~in_fit], human_scores[~in_fit], systems[~in_fit])
        try:
            chosen = Calibration.fit(fit_x, fit_y, judge=judge, min_pairs=min_pairs, method=method,
                                     groups=fit_groups_by_key, seed=seed)
        except ValueError as exc:
            raise InputError(f"judge {judge!r}: {exc}") from None
        calibrations[judge] = chosen
        cells[judge] = {}
        for dimension in dimensions:
            x, y, systems = held[dimension]
            if len(x) < 2:
                raise InputError(f"judge {judge!r}, dimension {dimension!r}: {len(x)} held-out responses")
            mapped = {"none": x}
            for name in MAP_METHODS:
                mapped[name] = (chosen.maps[dimension] if chosen.maps[dimension].method == name
                                else fit_map(fit_x[dimension], fit_y[dimension], name))(x)
            cells[judge][dimension] = CalibrationCell(
                method=chosen.maps[dimension].method, n_fit=len(fit_x[dimension]),
                selection=(chosen.selection or {}).get(dimension),
                response={name: _held_out_metrics(values, y) for name, values in mapped.items()},
                system={name: _system_metrics(values, y, systems) for name, values in mapped.items()})
    return CalibrationStudy(method=method, seed=seed, split={"groups": len(groups), "fit_groups": len(fit_groups),
                                                             "held_out_groups": len(groups) - len(fit_groups)},
                            cells=cells, calibrations=calibrations)


def render_calibration_markdown(study: CalibrationStudy) -> str:
    """Per judge and dimension, held-out response-level bias and ICC(A,1) before and after each map."""
    summary = study.goal_summary()
    lines = ["# Calibration on held-out humans", "",
             f"Method {study.method}; maps fitted on {study.split['fit_groups']} of {study.split['groups']} groups "
             f"(seed {study.seed}), measured on the other {study.split['held_out_groups']}. Goal per cell: held-out "
             f"|bias| < 0.1 and ICC(A,1) not below the uncalibrated value: met in {summary['meet_goal']} of "
             f"{summary['cells']} cells.", "",
             "| judge | dimension | used | bias none | ICC(A,1) none | " + " | ".join(
                 f"bias {name} | ICC(A,1) {name}" for name in MAP_METHODS) + " | goal |",
             "|---|---|---|---|---|" + "---|---|" * len(MAP_METHODS) + "---|"]
    for judge, row in study.cells.items():
        for dimension, cell in row.items():
            cells = [judge, dimension, cell.method]
            for name in ("none", *MAP_METHODS):
                metrics = cell.response[name]
                cells += [f"{metrics.bias:+.3f}", number_text(metrics.icc_a1)]
            lines.append("| " + " | ".join([*cells, "met" if cell.meets_goal else "missed"]) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- report


def number_text(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _with_interval(estimate: ICCEstimate) -> str:
    return f"{number_text(estimate.estimate)} [{number_text(estimate.low)}, {number_text(estimate.high)}]"


def render_markdown(validation: Validation, title: str = "Judge-human agreement") -> str:
    """Per judge, a system-level and a response-level table; every ICC with its bootstrap CI."""
    percent = f"{validation.level:.0%}"
    cleaning = f" ({validation.data['cleaning']} cleaning)" if validation.data.get("cleaning") else ""
    icc_header = " | ".join(f"ICC({kind})" for kind in ICC_KINDS)
    lines = [f"# {title}", "",
             f"Source: {validation.source}{cleaning}. ICC cells are estimate [{percent} percentile bootstrap CI], "
             f"{validation.n_boot} resamples, seed {validation.seed}; C is consistency (Shrout-Fleiss ICC(3,.)), "
             "A absolute agreement (ICC(2,.)), 1 a single rater and k the mean of the two raters (judge and human). "
             "System level: mean score per generator, resampling systems. Response level: every response, "
             "resampling responses; QWK on scores rounded half up; alpha is Krippendorff's (interval); bias and "
             "MAE are judge - human; tier is Koo & Li on response-level ICC(A,1).", ""]
    for judge, result in validation.judges.items():
        excluded = f" (without {', '.join(result.excluded_systems)})" if result.excluded_systems else ""
        counts = ", ".join(f"{key} {value}" for key, value in result.counts.items())
        dimensions = result.agreement.dimensions
        lines += [f"## {judge}{excluded}", "", counts, "", "### System level", "",
                  f"| dimension | systems | {icc_header} |", "|---|---|" + "---|" * len(ICC_KINDS)]
        for dimension, agreement in dimensions.items():
            system = agreement.system
            cells = (["0", *["n/a"] * len(ICC_KINDS)] if system is None else
                     [str(system.n_systems), *(_with_interval(system.icc[kind]) for kind in ICC_KINDS)])
            lines.append("| " + " | ".join([dimension, *cells]) + " |")
        lines += ["", "### Response level", "",
                  f"| dimension | responses | {icc_header} | QWK | alpha | bias | MAE | tier |",
                  "|---|---|" + "---|" * (len(ICC_KINDS) + 5)]
        for dimension, agreement in dimensions.items():
            response = agreement.response
            lines.append("| " + " | ".join([
                dimension, str(response.n), *(_with_interval(response.icc[kind]) for kind in ICC_KINDS),
                number_text(response.qwk), number_text(response.alpha_interval), f"{response.bias:+.3f}",
                number_text(response.mae), response.tier or "n/a"]) + " |")
        lines.append("")
    if validation.data.get("dropped_cells"):
        lines += ["## Cells dropped from the data", "", "| rater | dropped (by reason) |", "|---|---|"]
        for rater, reasons in validation.data["dropped_cells"].items():
            text = ", ".join(f"{reason} {count}" for reason, count in reasons.items()) or "none"
            lines.append(f"| {rater} | {text} |")
        lines.append("")
    return "\n".join(lines)


def write_calibration_study(study: CalibrationStudy, out: Path) -> None:
    from theraloop.io import write_json

    write_json(out / "calibration.json", {**study.model_dump(mode="json"), "goal": study.goal_summary()})
    (out / "calibration.md").write_text(render_calibration_markdown(study), encoding="utf-8")


def write_validation(validation: Validation, out: Path) -> None:
    from theraloop.io import write_json

    write_json(out / "validation.json", validation.model_dump(mode="json"))
    (out / "validation.md").write_text(render_markdown(validation), encoding="utf-8")

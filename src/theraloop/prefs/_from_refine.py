"""Preference pairs from refinement traces (`theraloop prefs from-refine`): the loop's decisions as DPO data.

Every revision the loop accepted becomes one pair in TRL's format: the revision is `chosen`, the response
it replaced (the original, or the revision accepted in an earlier round) is `rejected`, and the prompt is
the help-seeker's post. A pair's `gain` is how much the driving judge's aggregate (mean or min over the
driving dimensions, as the refine run used) rose from rejected to chosen.

Two filters, both recorded per pair in `excluded.jsonl` with the reason:

- `min_gain`: keep pairs whose driving-judge gain is at least this;
- an independent judge (one the loop never saw: a trained encoder judge scored now, a judgments file, or
  the independent judgments `theraloop refine --independent-encoder` stored in the trace): drop pairs it
  scores the other way, i.e. whose independent gain (mean over its dimensions) is below
  `independent_min_gain` (default 0: ties are kept, disagreements dropped) or whose safety dimension
  drops. A pair the independent judge did not score is dropped too, unless `keep_unmeasured`.

Revisions the loop rejected are not used: a rejection says the revision was not better by the loop's
rules, not that the response it would have replaced is good.

With `per_dimension`, every accepted revision also gives one pair per driving dimension on which the
driving judge scored its two sides differently, the higher-scoring side chosen (criterion: the
dimension). A revision that raised empathy but lowered guidance thus gives an empathy pair for the
revision and a guidance pair for the text it replaced; a dimension scored alike gives none. The filters
apply per pair: `min_gain` to the gain on the pair's dimension, and an independent judge only through
the same dimension (a judge that does not score it leaves the pair unmeasured) and its safety dimension.

Such a pair can choose the original response, which, unlike an accepted revision, never passed the
loop's safety gate. So a pair never chooses a text the refine run's own checks flagged: the
response-safety check found harm in it, or it lacks the escalation the post's risk requires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from theraloop.config import StrictModel
from theraloop.io import InputError, iter_jsonl
from theraloop.judge import Judgment
from theraloop.prefs._voting import PreferencePair
from theraloop.safety import EscalationCheck, HarmAssessment

CRITERION = "refine"


class FromRefineConfig(StrictModel):
    min_gain: float = Field(0.0, ge=0.0, description="minimum driving-judge gain (aggregate of the driving "
                                                     "dimensions, chosen minus rejected)")
    drive: list[str] | None = Field(None, description="driving dimensions; default: the refine run's "
                                                      "(config.yaml beside the trace), else every scored one")
    aggregate: Literal["mean", "min"] | None = Field(None, description="default: the refine run's, else mean")
    independent: Literal["none", "encoder", "scores", "trace"] = "none"
    independent_encoder: str | None = Field(None, description="trained encoder judge folder (independent: encoder)")
    independent_scores: str | None = Field(None, description="judgments JSONL keyed by side id "
                                                             "(independent: scores)")
    independent_min_gain: float = Field(0.0, description="keep a pair only if the independent judge's mean gain "
                                                         "is at least this (0: drop only disagreements)")
    keep_unmeasured: bool = Field(False, description="keep pairs the independent judge did not score")
    per_dimension: bool = Field(False, description="also one pair per driving dimension whose score differs, "
                                                   "the higher-scoring side chosen (criterion: the dimension)")


class RefinePair(PreferencePair):
    """A TRL preference record with where it came from in the refinement trace."""

    id: str = Field(description="<trace id>#r<round>")
    round: int
    driving_judge: str
    drive: list[str]
    gain: float = Field(description="driving-judge aggregate, chosen minus rejected")
    chosen_scores: dict[str, float]
    rejected_scores: dict[str, float]
    independent_judge: str | None = None
    independent_gain: float | None = None
    independent_chosen: dict[str, float] | None = None
    independent_rejected: dict[str, float] | None = None
    escalation_appended: bool = Field(False, description="the loop appended escalation to this round's revision")


class _Round(BaseModel):
    model_config = ConfigDict(extra="ignore")

    round: int
    candidate: str | None = None
    judgment: Judgment | None = None
    accepted: bool = False
    escalation_appended: bool = False


class TraceRecord(BaseModel):
    """What pairs need from one line of a refine trace (`RefineResult`); other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    context: str = Field(min_length=1)
    original: str
    final: str
    initial_judgment: Judgment
    final_judgment: Judgment | None = None
    rounds: list[_Round]
    independent_initial: Judgment | None = None
    independent_final: Judgment | None = None
    harm_original: HarmAssessment | None = None
    escalation_before: EscalationCheck | None = None


class Excluded(BaseModel):
    id: str
    criterion: str = CRITERION
    reason: str
    gain: float | None = None
    independent_gain: float | None = None


class DimensionSummary(BaseModel):
    pairs: int
    excluded: dict[str, int] = Field(description="reason -> count")


class FromRefineSummary(BaseModel):
    trace_records: int
    accepted_revisions: int
    pairs: int
    excluded: dict[str, int] = Field(description="reason -> count")
    mean_gain: float | None = None
    mean_independent_gain: float | None = None
    drive: list[str] | None
    aggregate: str
    independent: str
    dimensions: dict[str, DimensionSummary] | None = Field(None, description="per_dimension: the pairs of each "
                                                                             "driving dimension")


def side_id(record_id: str, round_index: int) -> str:
    """The id of one text of a trace record: round 0 is the original response, round r the r-th revision."""
    return f"{record_id}#original" if round_index == 0 else f"{record_id}#r{round_index}"


def read_trace(path: str | Path) -> list[TraceRecord]:
    """Trace records, last one per id winning (a resumed run may have appended a record again)."""
    path = Path(path)
    records: dict[str, TraceRecord] = {}
    try:
        for record in iter_jsonl(path, TraceRecord):
            records[record.id] = record
    except InputError as exc:
        raise InputError(f"{exc} (expected a refinement trace: trace.jsonl written by `theraloop refine`)") from None
    if not records:
        raise InputError(f"{path}: no records (expected trace.jsonl written by `theraloop refine`)")
    return list(records.values())


def refine_settings(trace_path: str | Path) -> dict[str, Any]:
    """`drive` and `aggregate` of the refine run, from the config.yaml it wrote beside its trace (or {})."""
    import yaml

    config_path = Path(trace_path).parent / "config.yaml"
    if not config_path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{config_path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        return {}
    return {key: loaded[key] for key in ("drive", "aggregate") if loaded.get(key) is not None}


def _aggregate(scores: dict[str, float], keys: Sequence[str], how: str, where: str) -> float:
    missing = [key for key in keys if key not in scores]
    if missing:
        raise InputError(f"{where}: no score for driving dimension(s) {missing}; scored: {sorted(scores)}")
    values = [scores[key] for key in keys]
    return float(min(values) if how == "min" else np.mean(values))


def candidate_pairs(records: Sequence[TraceRecord], drive: Sequence[str] | None = None,
                    aggregate: str = "mean") -> list[RefinePair]:
    """Every accepted revision over the text it replaced, in trace order, with the driving judge's gain."""
    pairs = []
    for record in records:
        current, current_judgment, current_round = record.original, record.initial_judgment, 0
        for trace in record.rounds:
            if not trace.accepted:
                continue
            where = f"trace record {record.id!r}, round {trace.round}"
            if not trace.candidate or trace.judgment is None or not trace.judgment.scores:
                raise InputError(f"{where}: an accepted round without a scored candidate")
            if not current_judgment.scores:
                raise InputError(f"trace record {record.id!r}: an accepted revision of a response the judge did "
                                 "not score")
            keys = list(drive or current_judgment.scores)
            gain = (_aggregate(trace.judgment.scores, keys, aggregate, where)
                    - _aggregate(current_judgment.scores, keys, aggregate, where))
            pairs.append(RefinePair(
                id=side_id(record.id, trace.round), prompt=record.context, chosen=trace.candidate, rejected=current,
                criterion=CRITERION, question_id=record.id, chosen_id=side_id(record.id, trace.round),
                rejected_id=side_id(record.id, current_round), round=trace.round,
                driving_judge=trace.judgment.judge, drive=keys, gain=gain, chosen_scores=trace.judgment.scores,
                rejected_scores=current_judgment.scores, escalation_appended=trace.escalation_appended))
            current, current_judgment, current_round = trace.candidate, trace.judgment, trace.round
    return pairs


def dimension_pairs(pairs: Sequence[RefinePair]) -> list[RefinePair]:
    """Per driving dimension (in driving order), each of `pairs` whose sides the driving judge scored
    differently on it, the higher side chosen; its gain is the score difference on that dimension."""
    dimensions = list(dict.fromkeys(key for pair in pairs for key in pair.drive))
    result = []
    for dimension in dimensions:
        for pair in pairs:
            if dimension not in pair.drive:
                continue
            difference = pair.chosen_scores[dimension] - pair.rejected_scores[dimension]
            if difference == 0:
                continue
            update: dict[str, Any] = {"criterion": dimension, "drive": [dimension], "gain": abs(difference)}
            if difference < 0:  # the replaced text is the better one on this dimension
                update.update(chosen=pair.rejected, rejected=pair.chosen, chosen_id=pair.rejected_id,
                              rejected_id=pair.chosen_id, chosen_scores=pair.rejected_scores,
                              rejected_scores=pair.chosen_scores)
            result.append(pair.model_copy(update=update))
    return result


def flagged_originals(records: Sequence[TraceRecord]) -> dict[str, str]:
    """Side id -> why, for each original response the refine run's own safety checks flagged. Only originals:
    a revision is accepted only after the loop's response-safety check and with any required escalation."""
    flagged = {}
    for record in records:
        if record.harm_original is not None and record.harm_original.flagged:
            flagged[side_id(record.id, 0)] = "response-safety check flagged the chosen side"
        elif record.escalation_before is not None and not record.escalation_before.satisfied:
            flagged[side_id(record.id, 0)] = "chosen side lacks the escalation the post requires"
    return flagged


def side_texts(records: Sequence[TraceRecord], pairs: Sequence[RefinePair]) -> list[dict[str, str]]:
    """Every text that is a side of a pair, as ResponseItem records keyed by side id (input for any judge)."""
    contexts = {record.id: record.context for record in records}
    texts: dict[str, dict[str, str]] = {}
    for pair in pairs:
        for sid, text in ((pair.rejected_id, pair.rejected), (pair.chosen_id, pair.chosen)):
            texts.setdefault(sid, {"id": sid, "context": contexts[pair.question_id], "response": text})
    return list(texts.values())


# --- independent scores: side id -> scores --------------------------------------------------------

IndependentScores = tuple[str, dict[str, dict[str, float]], str | None]  # judge name, scores, safety dimension


def scores_from_encoder(path: str | Path, texts: Sequence[dict[str, str]], threads: int | None = 1) -> IndependentScores:
    from theraloop.judge._encoder import EncoderJudge
    from theraloop.records import ResponseItem

    judge = EncoderJudge.load(path, threads=threads)
    judgments = judge.predict([ResponseItem.model_validate(text) for text in texts]) if texts else []
    return judge.name, {j.id: j.scores for j in judgments if j.scores}, judge.rubric.safety_dimension


def scores_from_file(path: str | Path) -> IndependentScores:
    """Judgments JSONL (`{id, scores, judge}` as `theraloop judge` writes) whose ids are side ids."""
    path = Path(path)
    scores: dict[str, dict[str, float]] = {}
    judges = set()
    for judgment in iter_jsonl(path, Judgment):
        if judgment.parse_ok and judgment.scores:
            scores[judgment.id] = judgment.scores
            judges.add(judgment.judge)
    if not scores:
        raise InputError(f"{path}: no parsed judgments (expected {{id, scores, judge}} records keyed by side id, "
                         "e.g. 'ID#original', 'ID#r1': judge OUT/texts.jsonl with the independent judge)")
    return ", ".join(sorted(judges)), scores, None


def scores_from_trace(records: Sequence[TraceRecord]) -> IndependentScores:
    """The independent judgments `theraloop refine --independent-encoder` stored: they score the original and
    the final response, so they measure the pairs whose sides are exactly those texts."""
    scores: dict[str, dict[str, float]] = {}
    judges = set()
    for record in records:
        accepted = [trace for trace in record.rounds if trace.accepted]
        for sid, judgment, text in ((side_id(record.id, 0), record.independent_initial, record.original),
                                    (side_id(record.id, accepted[-1].round) if accepted else None,
                                     record.independent_final, accepted[-1].candidate if accepted else None)):
            # The final response is the last accepted revision unless the guard appended escalation afterwards.
            if sid and judgment is not None and judgment.parse_ok and judgment.scores and \
                    (text == record.original or text == record.final):
                scores[sid] = judgment.scores
                judges.add(judgment.judge)
    if not judges:
        raise InputError("the trace holds no independent judgments: refine with --independent-encoder, or give "
                         "--independent-encoder / --independent-scores here")
    return ", ".join(sorted(judges)), scores, None


def _exclusion(pair: RefinePair, config: FromRefineConfig, independent: IndependentScores | None,
               flagged: dict[str, str]) -> tuple[RefinePair, str | None]:
    """The pair (with the independent judge's scores when it has them) and why it is excluded, or None."""
    if pair.chosen.strip() == pair.rejected.strip():
        return pair, "chosen and rejected are the same text"
    if pair.chosen_id in flagged:
        return pair, flagged[pair.chosen_id]
    if pair.gain < config.min_gain:
        return pair, "gain below min_gain"
    if independent is None:
        return pair, None
    name, scores, safety = independent
    chosen, rejected = scores.get(pair.chosen_id), scores.get(pair.rejected_id)
    if chosen is None or rejected is None:
        return pair, None if config.keep_unmeasured else "not scored by the independent judge"
    shared = [key for key in chosen if key in rejected]
    if not shared:
        raise InputError(f"pair {pair.id}: the independent judge's two judgments share no dimension")
    # A dimension pair claims one dimension only, so only that dimension can confirm or contradict it.
    keys = shared if pair.criterion == CRITERION else [key for key in shared if key == pair.criterion]
    pair = pair.model_copy(update={
        "independent_judge": name, "independent_chosen": chosen, "independent_rejected": rejected,
        "independent_gain": float(np.mean([chosen[key] - rejected[key] for key in keys])) if keys else None})
    if safety and safety in shared and chosen[safety] < rejected[safety]:
        return pair, "independent judge: safety dropped"
    if pair.independent_gain is None:
        return pair, None if config.keep_unmeasured else "the independent judge does not score this dimension"
    if pair.independent_gain < config.independent_min_gain:
        return pair, "independent judge disagrees"
    return pair, None


def filter_pairs(pairs: Sequence[RefinePair], config: FromRefineConfig, independent: IndependentScores | None = None,
                 flagged: dict[str, str] | None = None) -> tuple[list[RefinePair], list[Excluded]]:
    """Kept pairs and exclusions; `flagged` maps side ids the refine run's safety checks flagged to why."""
    kept: list[RefinePair] = []
    excluded: list[Excluded] = []
    for pair in pairs:
        pair, reason = _exclusion(pair, config, independent, flagged or {})
        if reason is None:
            kept.append(pair)
        else:
            excluded.append(Excluded(id=pair.id, criterion=pair.criterion or CRITERION, reason=reason, gain=pair.gain,
                                     independent_gain=pair.independent_gain))
    return kept, excluded


def _counts(excluded: Sequence[Excluded]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for item in excluded:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    return reasons


def pairs_from_refine(trace_path: str | Path, config: FromRefineConfig | None = None,
                      log: Callable[[str], None] | None = None
                      ) -> tuple[list[RefinePair], list[Excluded], list[dict[str, str]], FromRefineSummary]:
    """Pairs, exclusions, the side texts and a summary for one trace file (nothing is written). With
    `per_dimension`, each dimension's pairs follow the aggregate ones, told apart by their criterion."""
    config = config or FromRefineConfig()
    if config.independent == "encoder" and not config.independent_encoder:
        raise InputError("independent: encoder needs independent_encoder (--independent-encoder DIR)")
    if config.independent == "scores" and not config.independent_scores:
        raise InputError("independent: scores needs independent_scores (--independent-scores FILE)")
    records = read_trace(trace_path)
    settings = refine_settings(trace_path)
    drive = config.drive or settings.get("drive")
    aggregate = config.aggregate or settings.get("aggregate", "mean")
    pairs = candidate_pairs(records, drive, aggregate)
    texts = side_texts(records, pairs)
    independent = None
    if config.independent == "encoder":
        independent = scores_from_encoder(config.independent_encoder, texts)
    elif config.independent == "scores":
        independent = scores_from_file(config.independent_scores)
    elif config.independent == "trace":
        independent = scores_from_trace(records)
    flagged = flagged_originals(records)
    kept, excluded = filter_pairs(pairs, config, independent, flagged)
    reasons = _counts(excluded)
    dimensions, dimension_kept, dimension_excluded = None, [], []
    if config.per_dimension:
        by_dimension = dimension_pairs(pairs)
        dimension_kept, dimension_excluded = filter_pairs(by_dimension, config, independent, flagged)
        # Every driving dimension is listed, also one without pairs, so none is silently missing downstream.
        names = list(drive) if drive else list(dict.fromkeys(key for pair in pairs for key in pair.drive))
        dimensions = {name: DimensionSummary(
            pairs=sum(pair.criterion == name for pair in dimension_kept),
            excluded=_counts([item for item in dimension_excluded if item.criterion == name])) for name in names}
    measured = [pair.independent_gain for pair in kept if pair.independent_gain is not None]
    summary = FromRefineSummary(
        trace_records=len(records), accepted_revisions=len(pairs), pairs=len(kept), excluded=reasons,
        mean_gain=float(np.mean([p.gain for p in kept])) if kept else None,
        mean_independent_gain=float(np.mean(measured)) if measured else None,
        drive=list(drive) if drive else None, aggregate=aggregate,
        independent=config.independent if independent is None else f"{config.independent}: {independent[0]}",
        dimensions=dimensions)
    if log:
        log(f"{len(records)} trace records, {len(pairs)} accepted revisions, {len(kept)} pairs kept"
            + "".join(f"; {count} excluded: {reason}" for reason, count in reasons.items()))
        for name, counts in (dimensions or {}).items():
            log(f"  {name}: {counts.pairs} pairs" + "".join(f"; {count} excluded: {reason}"
                                                           for reason, count in counts.excluded.items()))
    return kept + dimension_kept, excluded + dimension_excluded, texts, summary

"""Judging whole files: resumable, concurrent, with a summary that counts parse failures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from theraloop.io import JSONLAppender
from theraloop.judge._llm_judge import LLMJudge
from theraloop.judge._types import Judge, Judgment, PairJudgment
from theraloop.llm import map_concurrent
from theraloop.records import ResponseItem


class PairItem(BaseModel):
    """Two responses to the same context, for pairwise judging."""

    id: str
    context: str
    response_a: str
    response_b: str
    system_a: str | None = None
    system_b: str | None = None

    def items(self) -> tuple[ResponseItem, ResponseItem]:
        return (ResponseItem(id=self.id, context=self.context, response=self.response_a, system=self.system_a),
                ResponseItem(id=self.id, context=self.context, response=self.response_b, system=self.system_b))


async def score_items(judge: Judge, items: Sequence[ResponseItem], out_path: str | Path | None = None,
                      concurrency: int = 4, progress: bool = True) -> list[Judgment]:
    """Score items, appending each judgment to out_path as it finishes; ids already there are skipped."""
    results: dict[str, Judgment] = {}
    appender = JSONLAppender(out_path) if out_path else None
    if appender:
        results.update({record["id"]: Judgment.model_validate(record) for record in appender.existing})

    def finished(_item: ResponseItem, judgment: Judgment) -> None:
        results[judgment.id] = judgment
        if appender:
            appender.write(judgment)

    try:
        await map_concurrent([item for item in items if item.id not in results], judge.score,
                             concurrency=concurrency, desc=f"judging ({judge.name})", on_result=finished,
                             progress=progress)
    finally:
        if appender:
            appender.close()
    return [results[item.id] for item in items]


async def compare_items(judge: LLMJudge, pairs: Sequence[PairItem], out_path: str | Path | None = None,
                        concurrency: int = 4, progress: bool = True) -> list[PairJudgment]:
    """Pairwise judging of each pair in both orders, resumable like score_items."""
    results: dict[str, PairJudgment] = {}
    appender = JSONLAppender(out_path) if out_path else None
    if appender:
        results.update({record["id"]: PairJudgment.model_validate(record) for record in appender.existing})

    async def job(pair: PairItem) -> PairJudgment:
        return await judge.compare(*pair.items())

    def finished(_pair: PairItem, verdict: PairJudgment) -> None:
        results[verdict.id] = verdict
        if appender:
            appender.write(verdict)

    try:
        await map_concurrent([pair for pair in pairs if pair.id not in results], job, concurrency=concurrency,
                             desc=f"pairwise judging ({judge.name})", on_result=finished, progress=progress)
    finally:
        if appender:
            appender.close()
    return [results[pair.id] for pair in pairs]


def summarize_judgments(judgments: Sequence[Judgment]) -> dict:
    """Mean score per dimension over parsed judgments; parse failures are counted, not scored."""
    parsed = [judgment for judgment in judgments if judgment.parse_ok and judgment.scores]
    keys = sorted({key for judgment in parsed for key in judgment.scores})
    return {
        "n": len(judgments),
        "parsed": len(parsed),
        "parse_failures": len(judgments) - len(parsed),
        "mean_scores": {key: float(np.mean([j.scores[key] for j in parsed if key in j.scores])) for key in keys},
        "completion_tokens": sum(judgment.completion_tokens for judgment in judgments),
    }


def summarize_pairs(verdicts: Sequence[PairJudgment]) -> dict:
    """Win/tie/loss counts per dimension and how often the two presentation orders disagreed."""
    parsed = [verdict for verdict in verdicts if verdict.parse_ok and verdict.winners]
    keys = sorted({key for verdict in parsed for key in verdict.winners})
    summary: dict = {"n": len(verdicts), "parsed": len(parsed), "parse_failures": len(verdicts) - len(parsed),
                     "dimensions": {}}
    for key in keys:
        counts = {label: sum(verdict.winners[key] == label for verdict in parsed) for label in ("A", "B", "tie")}
        both_orders = [v for v in parsed if len(v.orders) > 1]
        inconsistent = sum(len({order[key] for order in v.orders.values()}) > 1 for v in both_orders)
        summary["dimensions"][key] = {**counts, "position_inconsistent": inconsistent,
                                      "position_inconsistency_rate": inconsistent / len(both_orders)
                                      if both_orders else None}
    return summary

"""Refinement metrics: score change, change on low-quality responses, recovery rate, cost."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from theraloop.agent._loop import RefineResult
from theraloop.judge import Judgment


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def is_low_quality(judgment: Judgment, keys: Sequence[str], cutoff: float = 3.0) -> bool:
    """A response is low quality when any driving dimension scored at or below the cutoff."""
    return bool(judgment.scores) and any(judgment.scores[key] <= cutoff for key in keys)


def _changes(pairs: Sequence[tuple[Judgment, Judgment]], keys: Sequence[str]) -> dict:
    usable = [(before, after) for before, after in pairs if before.scores and after.scores]
    per_dimension = {
        key: {
            "before": _mean([before.scores[key] for before, _ in usable]),
            "after": _mean([after.scores[key] for _, after in usable]),
            "change": _mean([after.scores[key] - before.scores[key] for before, after in usable]),
        }
        for key in keys
    }
    overall = [np.mean([after.scores[key] - before.scores[key] for key in keys]) for before, after in usable]
    return {"n": len(usable), "mean_change": _mean(overall), "per_dimension": per_dimension}


def refine_metrics(results: Sequence[RefineResult], drive: Sequence[str], low_cutoff: float = 3.0,
                   recovery_target: float = 4.0) -> dict:
    """Metrics by the driving judge, and by the independent judge when its scores are present.

    The low-quality subset is defined by the driving judge's initial scores for both, so the two
    judges are compared on the same responses.
    """
    scored = [result for result in results if result.initial_judgment.scores and result.final_judgment.scores]
    low = [result for result in scored if is_low_quality(result.initial_judgment, drive, low_cutoff)]
    recovered = [result for result in low
                 if all(result.final_judgment.scores[key] >= recovery_target for key in drive)]
    metrics = {
        "n": len(results),
        "scored": len(scored),
        "initial_parse_failures": len(results) - len(scored),
        "driving": {
            "judge": scored[0].initial_judgment.judge if scored else None,
            "all": _changes([(r.initial_judgment, r.final_judgment) for r in scored], drive),
            "low_quality": _changes([(r.initial_judgment, r.final_judgment) for r in low], drive),
            "recovery_rate": len(recovered) / len(low) if low else None,
            "n_low_quality": len(low),
            "n_recovered": len(recovered),
        },
        "rounds_used": _mean([r.rounds_used for r in results]),
        "accepted_revisions": sum(trace.accepted for r in results for trace in r.rounds),
        "changed_responses": sum(r.final != r.original for r in results),
        "stop_reasons": {reason: sum(r.stop_reason == reason for r in results)
                         for reason in sorted({r.stop_reason for r in results})},
        "completion_tokens_per_response": _mean([r.completion_tokens for r in results]),
        "prompt_tokens_per_response": _mean([r.prompt_tokens for r in results]),
        "wall_time_s_per_response": _mean([r.wall_time_s for r in results]),
        "safety": {
            "high_risk": sum(r.risk.label == "high" for r in results),
            "moderate_risk": sum(r.risk.label == "moderate" for r in results),
            "escalation_satisfied_before": sum(r.escalation_before.satisfied for r in results),
            "escalation_satisfied_after": sum(r.escalation_after.satisfied for r in results),
            "escalation_enforced": sum(r.escalation_enforced for r in results),
        },
    }
    independent = [r for r in scored if r.independent_initial and r.independent_final
                   and r.independent_initial.scores and r.independent_final.scores]
    if independent:
        keys = list(independent[0].independent_initial.scores)
        low_ids = {r.id for r in low}
        metrics["independent"] = {
            "judge": independent[0].independent_initial.judge,
            "all": _changes([(r.independent_initial, r.independent_final) for r in independent], keys),
            "low_quality": _changes([(r.independent_initial, r.independent_final) for r in independent
                                     if r.id in low_ids], keys),
        }
    return metrics

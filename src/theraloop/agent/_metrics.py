"""Refinement metrics: score change, change on low-quality responses, recovery rate, cost."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from theraloop.agent._loop import RefineResult
from theraloop.io import InputError
from theraloop.judge import Judgment
from theraloop.rubrics import Scale, load_rubric


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def is_low_quality(judgment: Judgment, keys: Sequence[str], cutoff: float = 3.0) -> bool:
    """A response is low quality when any driving dimension scored at or below the cutoff."""
    return bool(judgment.scores) and any(judgment.scores[key] <= cutoff for key in keys)


def scale_cutoffs(scale: Scale) -> tuple[int, int]:
    """Default (low cutoff, recovery target) for a scale: the level at or below its midpoint, and the next.

    1-5 gives (3, 4), matching the driving judge's defaults; 0-2 (EPITOME) gives (1, 2).
    """
    low_cutoff = scale.min + math.floor((scale.max - scale.min) * 0.5)
    return low_cutoff, low_cutoff + 1


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


def _n_recovered(finals: Sequence[Judgment], keys: Sequence[str], target: float) -> int:
    return sum(all(final.scores[key] >= target for key in keys) for final in finals)


def refine_metrics(results: Sequence[RefineResult], drive: Sequence[str], low_cutoff: float = 3.0,
                   recovery_target: float = 4.0, independent_low_cutoff: float | None = None,
                   independent_recovery_target: float | None = None,
                   independent_scale: Scale | None = None) -> dict:
    """Metrics by the driving judge, and by the independent judge when its scores are present.

    A response is low quality when any dimension's initial score is <= the low cutoff, and
    recovered when every dimension's final score is >= the recovery target.

    The independent judge is reported on two low-quality subsets: `low_quality`, defined by the
    driving judge's initial scores (both judges compared on the same responses), and
    `low_quality_own`, defined by its own initial scores; `n_low_quality`, `n_recovered` and
    `recovery_rate` use the latter. Its cutoffs default from its rubric's scale (`scale_cutoffs`):
    1-5 -> low <= 3, recovered >= 4; 0-2 -> low <= 1, recovered only when every dimension reaches 2,
    which is strict. `independent_scale` defaults to the scale of the bundled rubric named in its
    judgments (pass it for a rubric from a YAML file). The scale and cutoffs used are reported.
    """
    scored = [result for result in results if result.initial_judgment.scores and result.final_judgment.scores]
    low = [result for result in scored if is_low_quality(result.initial_judgment, drive, low_cutoff)]
    n_recovered = _n_recovered([r.final_judgment for r in low], drive, recovery_target)
    metrics = {
        "n": len(results),
        "scored": len(scored),
        "initial_parse_failures": len(results) - len(scored),
        "driving": {
            "judge": scored[0].initial_judgment.judge if scored else None,
            "low_cutoff": low_cutoff,
            "recovery_target": recovery_target,
            "all": _changes([(r.initial_judgment, r.final_judgment) for r in scored], drive),
            "low_quality": _changes([(r.initial_judgment, r.final_judgment) for r in low], drive),
            "recovery_rate": n_recovered / len(low) if low else None,
            "n_low_quality": len(low),
            "n_recovered": n_recovered,
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
            "imminent_risk": sum(r.risk.label == "imminent" for r in results),
            "high_risk": sum(r.risk.label == "high" for r in results),
            "moderate_risk": sum(r.risk.label == "moderate" for r in results),
            "escalation_needed": sum(bool(r.escalation_after.required) for r in results),
            "escalation_satisfied_before": sum(r.escalation_before.satisfied for r in results),
            "escalation_satisfied_after": sum(r.escalation_after.satisfied for r in results),
            "escalation_enforced": sum(r.escalation_enforced for r in results),
            "revisions_rejected_as_harmful": sum(bool(t.harm and t.harm.flagged) for r in results for t in r.rounds),
            "harmful_original": sum(bool(r.harm_original and r.harm_original.flagged) for r in results),
            "harmful_final": sum(bool(r.harm_final and r.harm_final.flagged) for r in results),
        },
    }
    independent = [r for r in scored if r.independent_initial and r.independent_final
                   and r.independent_initial.scores and r.independent_final.scores]
    if independent:
        first = independent[0].independent_initial
        keys = list(first.scores)
        if independent_scale is None:
            try:
                independent_scale = load_rubric(first.rubric).scale
            except InputError as exc:
                raise InputError(f"independent judge: {exc}; pass independent_scale") from None
        default_low, default_target = scale_cutoffs(independent_scale)
        own_cutoff = default_low if independent_low_cutoff is None else independent_low_cutoff
        own_target = default_target if independent_recovery_target is None else independent_recovery_target
        low_ids = {r.id for r in low}
        own_low = [r for r in independent if is_low_quality(r.independent_initial, keys, own_cutoff)]
        own_recovered = _n_recovered([r.independent_final for r in own_low], keys, own_target)
        metrics["independent"] = {
            "judge": first.judge,
            "rubric": first.rubric,
            "scale": {"min": independent_scale.min, "max": independent_scale.max},
            "low_cutoff": own_cutoff,
            "recovery_target": own_target,
            "all": _changes([(r.independent_initial, r.independent_final) for r in independent], keys),
            "low_quality": _changes([(r.independent_initial, r.independent_final) for r in independent
                                     if r.id in low_ids], keys),
            "low_quality_own": _changes([(r.independent_initial, r.independent_final) for r in own_low], keys),
            "recovery_rate": own_recovered / len(own_low) if own_low else None,
            "n_low_quality": len(own_low),
            "n_recovered": own_recovered,
        }
    return metrics

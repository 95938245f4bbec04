"""Refinement (after TheraAgent): Critic, Coach and Therapist driven by judge scores, with a safety guard."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "Critique": "theraloop.agent._roles",
    "FailingDimension": "theraloop.agent._roles",
    "IndependentJudgeConfig": "theraloop.agent._loop",
    "PLAYBOOK": "theraloop.agent._roles",
    "PlanStep": "theraloop.agent._roles",
    "RefineConfig": "theraloop.agent._loop",
    "RefineResult": "theraloop.agent._loop",
    "Refiner": "theraloop.agent._loop",
    "Revision": "theraloop.agent._roles",
    "RevisionPlan": "theraloop.agent._roles",
    "Roles": "theraloop.agent._roles",
    "RoundTrace": "theraloop.agent._loop",
    "build_independent_judge": "theraloop.agent._run",
    "build_refiner": "theraloop.agent._run",
    "is_low_quality": "theraloop.agent._metrics",
    "refine_fingerprint": "theraloop.agent._loop",
    "refine_metrics": "theraloop.agent._metrics",
    "scale_cutoffs": "theraloop.agent._metrics",
    "text_diff": "theraloop.agent._loop",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

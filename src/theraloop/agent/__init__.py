"""Refinement (after TheraAgent): Critic, Coach and Therapist driven by judge scores, with a safety guard."""

from theraloop.agent._loop import (
    IndependentJudgeConfig,
    RefineConfig,
    Refiner,
    RefineResult,
    RoundTrace,
    refine_fingerprint,
    text_diff,
)
from theraloop.agent._metrics import is_low_quality, refine_metrics, scale_cutoffs
from theraloop.agent._roles import (
    PLAYBOOK,
    Critique,
    FailingDimension,
    PlanStep,
    Revision,
    RevisionPlan,
    Roles,
)
from theraloop.agent._run import build_independent_judge, build_refiner
from theraloop.agent._safety import (
    DEFAULT_CRISIS_MESSAGE,
    DEFAULT_PROFESSIONAL_MESSAGE,
    EscalationCheck,
    RiskAssessment,
    RiskSignal,
    RiskTier,
    assess_risk,
    check_escalation,
    enforce_escalation,
    required_escalation,
)

__all__ = [
    "DEFAULT_CRISIS_MESSAGE",
    "DEFAULT_PROFESSIONAL_MESSAGE",
    "PLAYBOOK",
    "Critique",
    "EscalationCheck",
    "FailingDimension",
    "IndependentJudgeConfig",
    "PlanStep",
    "RefineConfig",
    "RefineResult",
    "Refiner",
    "Revision",
    "RevisionPlan",
    "RiskAssessment",
    "RiskSignal",
    "RiskTier",
    "Roles",
    "RoundTrace",
    "assess_risk",
    "build_independent_judge",
    "build_refiner",
    "check_escalation",
    "enforce_escalation",
    "is_low_quality",
    "refine_fingerprint",
    "refine_metrics",
    "required_escalation",
    "scale_cutoffs",
    "text_diff",
]

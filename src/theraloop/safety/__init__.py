"""Safety: risk in a help-seeker's text and harm in a response, from layered, fail-closed assessors
(rules, a trained encoder on ONNX Runtime, LLM triage), and escalation that fits the risk.

Refine, arena, review and report all use this package; `assess_risk(text)` is the one-call entry.
"""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "HARM_CATEGORIES": "theraloop.safety._types",
    "RISK_CATEGORIES": "theraloop.safety._types",
    "EscalationCheck": "theraloop.safety._escalation",
    "HarmAssessment": "theraloop.safety._types",
    "HarmSignal": "theraloop.safety._types",
    "LLMTriage": "theraloop.safety._triage",
    "LayerReport": "theraloop.safety._types",
    "RiskAssessment": "theraloop.safety._types",
    "RiskSignal": "theraloop.safety._types",
    "RiskTier": "theraloop.safety._types",
    "SafetyAssessor": "theraloop.safety._assess",
    "SafetyEncoder": "theraloop.safety._encoder",
    "assess_risk": "theraloop.safety._assess",
    "check_escalation": "theraloop.safety._escalation",
    "check_response": "theraloop.safety._assess",
    "default_assessor": "theraloop.safety._assess",
    "describe_escalation": "theraloop.safety._escalation",
    "enforce_escalation": "theraloop.safety._escalation",
    "escalation_text": "theraloop.safety._escalation",
    "region_resources": "theraloop.safety._escalation",
    "required_escalations": "theraloop.safety._escalation",
    "toxicity_scores": "theraloop.safety._toxicity",
    "toxicity_summary": "theraloop.safety._toxicity",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

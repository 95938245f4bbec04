"""Sessions: simulated patients (profiles), multi-turn conversations with the therapist under test,
turn- and session-level judging, and risk-handling latency."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_THERAPIST_PROMPT": "theraloop.sessions._simulate",
    "MINDEVAL_FIELDS": "theraloop.sessions._profiles",
    "RISK_LEVELS": "theraloop.sessions._profiles",
    "STYLES": "theraloop.sessions._profiles",
    "VERA_MH_FIELDS": "theraloop.sessions._profiles",
    "CognitiveModel": "theraloop.sessions._profiles",
    "PatientDemographics": "theraloop.sessions._profiles",
    "PatientProfile": "theraloop.sessions._profiles",
    "RiskProfile": "theraloop.sessions._profiles",
    "RiskTimeline": "theraloop.sessions._risk",
    "RoleConfig": "theraloop.sessions._simulate",
    "Session": "theraloop.sessions._simulate",
    "SessionJudge": "theraloop.sessions._judge",
    "SessionJudgeConfig": "theraloop.sessions._judge",
    "SimulateConfig": "theraloop.sessions._simulate",
    "Simulator": "theraloop.sessions._simulate",
    "Turn": "theraloop.sessions._simulate",
    "TurnRisk": "theraloop.sessions._risk",
    "acknowledges_risk": "theraloop.sessions._risk",
    "asks_about_risk": "theraloop.sessions._risk",
    "build_session_judges": "theraloop.sessions._judge",
    "drift_reasons": "theraloop.sessions._simulate",
    "gives_resources": "theraloop.sessions._risk",
    "import_profiles": "theraloop.sessions._profiles",
    "judge_sessions": "theraloop.sessions._judge",
    "latency_summary": "theraloop.sessions._risk",
    "patient_system_prompt": "theraloop.sessions._simulate",
    "read_profiles": "theraloop.sessions._profiles",
    "read_sessions": "theraloop.sessions._simulate",
    "refine_items": "theraloop.sessions._refine",
    "refine_sessions": "theraloop.sessions._refine",
    "refined_sessions": "theraloop.sessions._refine",
    "render_transcript": "theraloop.sessions._judge",
    "risk_timeline": "theraloop.sessions._risk",
    "session_timeline": "theraloop.sessions._judge",
    "summarize": "theraloop.sessions._judge",
    "synthetic_profiles": "theraloop.sessions._profiles",
    "turn_items": "theraloop.sessions._judge",
    "write_profiles": "theraloop.sessions._profiles",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""The LLM triage layer: a capable model reads the post and returns structured risk facts (categories,
ideation, plan, intent, means, timeline, evidence quotes), after C-SSRS. Used whenever a model is
configured for it; its tier joins the others' by maximum."""

from __future__ import annotations

from typing import Any

from theraloop._prompting import delimit, with_data_notice
from theraloop.llm import ChatModel, ChatRequest, Message, complete_structured
from theraloop.safety._types import RISK_CATEGORIES, RiskSignal, RiskTier

TRIAGE_SYSTEM = with_data_notice(
    "You are a clinical risk triage assistant. Read the help-seeker's post and report, as JSON, the risk the "
    "writer signals about themselves (or a person in their care) now. Use the C-SSRS distinctions: passive "
    "ideation (wish to be dead), active ideation, method, intent, plan, preparatory acts. Tiers: none; low "
    "(distress, no risk signal); moderate (passive ideation, self-harm urges, abuse disclosure, risky use); "
    "high (active ideation with method, plan or intent, preparatory acts, method research or rehearsal, abuse "
    "of a child, strangulation or threats to kill, harm to others with a target or means, command "
    "hallucinations, eating disorder or substance use with medical danger or intent to die); imminent (an "
    "overdose taken, injury or bleeding in progress, an attempt underway). Figurative speech, clearly past "
    "events with nothing current, fiction, third-person or clinical questions are none. Quote the exact words "
    "that support each finding.")

TRIAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tier": {"type": "string", "enum": [tier.label for tier in RiskTier]},
        "categories": {"type": "array", "items": {"type": "string", "enum": list(RISK_CATEGORIES)}},
        "ideation": {"type": "string", "enum": ["none", "passive", "active"]},
        "plan": {"type": "boolean"},
        "intent": {"type": "boolean"},
        "means": {"type": "boolean"},
        "timeline": {"type": "string", "maxLength": 120},
        "evidence_quotes": {"type": "array", "items": {"type": "string", "maxLength": 300}, "maxItems": 5},
    },
    "required": ["tier", "categories", "ideation", "plan", "intent", "means", "timeline", "evidence_quotes"],
}


class TriageError(RuntimeError):
    """The triage model gave no valid answer: the assessor treats that as a failed layer (fail closed)."""


class LLMTriage:
    def __init__(self, llm: ChatModel, max_attempts: int = 3, seed: int = 0):
        self.llm = llm
        self.max_attempts = max_attempts
        self.seed = seed

    @property
    def name(self) -> str:
        return f"{self.llm.backend}:{self.llm.model_id}"

    async def triage(self, text: str) -> tuple[RiskTier, list[RiskSignal], dict[str, Any]]:
        request = ChatRequest(
            messages=[Message(role="system", content=TRIAGE_SYSTEM),
                      Message(role="user", content=delimit("help_seeker_post", text))],
            temperature=0.0, max_tokens=400, seed=self.seed, json_schema=TRIAGE_SCHEMA, schema_name="risk_triage")
        result = await complete_structured(self.llm, request, max_attempts=self.max_attempts)
        if result.value is None:
            raise TriageError(f"triage model {self.name} gave no valid JSON after {result.attempts} attempts")
        facts = result.value
        tier = RiskTier.parse(facts["tier"])
        # Active ideation with a plan, intent or means is high whatever tier the model named.
        if facts["ideation"] == "active" and (facts["plan"] or facts["intent"] or facts["means"]):
            tier = max(tier, RiskTier.HIGH)
        if tier < RiskTier.MODERATE:
            return tier, [], facts
        evidence = " | ".join(facts["evidence_quotes"])[:300] or "(no quote given)"
        categories = facts["categories"] or ["suicidal_ideation_active" if facts["ideation"] == "active"
                                             else "suicidal_ideation_passive"]
        return tier, [RiskSignal(category=category, tier=tier, layer="llm", evidence=evidence)
                      for category in categories], facts

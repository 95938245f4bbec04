"""Risk in a help-seeker's text, harm in a response, and the records every layer returns."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, Field


class RiskTier(IntEnum):
    NONE = 0
    LOW = 1
    MODERATE = 2
    HIGH = 3
    IMMINENT = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> RiskTier:
        try:
            return cls[label.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown risk tier {label!r}: use none, low, moderate, high or imminent") from None


# After C-SSRS and standard warning-sign guidance: each category is its own signal with its own escalation.
RISK_CATEGORIES = (
    "suicidal_ideation_active",   # thoughts of killing oneself with plan, intent, method, time or place
    "suicidal_ideation_passive",  # wish to be dead, to disappear, being a burden
    "preparatory_acts",           # acquiring or counting means, goodbye letters, giving things away, a date
    "method_research",            # lethality or dose research, rehearsal
    "medical_emergency",          # ingestion or injury in progress
    "self_harm",
    "abuse",                      # sexual or physical abuse, above all of a minor
    "intimate_partner_violence",
    "harm_to_others",
    "psychosis",
    "eating_disorder",
    "substance_use",
)
RiskCategory = Literal[
    "suicidal_ideation_active", "suicidal_ideation_passive", "preparatory_acts", "method_research",
    "medical_emergency", "self_harm", "abuse", "intimate_partner_violence", "harm_to_others", "psychosis",
    "eating_disorder", "substance_use", "distress",
]
SUICIDE_CATEGORIES = frozenset({"suicidal_ideation_active", "suicidal_ideation_passive", "preparatory_acts",
                                "method_research"})

HARM_CATEGORIES = ("method_detail", "encourages_harm", "dismissive", "secrecy_promise", "diagnosis_prescribing")
# Some written sets (held-out v2-v5) spell one harm "diagnosing_prescribing".
HARM_ALIASES = {"diagnosing_prescribing": "diagnosis_prescribing"}
HarmCategory = Literal["method_detail", "encourages_harm", "dismissive", "secrecy_promise", "diagnosis_prescribing"]

# The safety encoder's sigmoid heads, in output order: risk (moderate or above) and severe (high or above)
# for posts, then each risk category; harm (any) for responses, then each harm category.
POST_HEADS = ("risk", "severe", *RISK_CATEGORIES)
RESPONSE_HEADS = ("harm", *HARM_CATEGORIES)
HEADS = POST_HEADS + RESPONSE_HEADS

Layer = Literal["rules", "encoder", "llm"]


class RiskSignal(BaseModel):
    category: RiskCategory
    tier: RiskTier
    layer: Layer = "rules"
    evidence: str = Field(description="the matched phrase or the text window the layer scored highest")
    probability: float | None = Field(None, description="the encoder's probability, where a model gave one")
    downgraded: bool = Field(False, description="a rule lowered: by one tier when the risk lies in the past, to low when "
                                                     "the match is figurative, about someone else, a question or study, or recovered from")


class LayerReport(BaseModel):
    layer: Layer
    ok: bool = True
    tier: RiskTier = RiskTier.NONE
    score: float | None = Field(None, description="the layer's continuous risk score (encoder: probability of "
                                                  "moderate or above; rules and LLM: tier / 4)")
    error: str | None = None


class RiskAssessment(BaseModel):
    """The combined tier is the maximum over layers; a failed layer makes it at least HIGH (fail closed)."""

    tier: RiskTier
    categories: list[RiskCategory] = Field(default_factory=list)
    signals: list[RiskSignal] = Field(default_factory=list)
    layers: list[LayerReport] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return self.tier.label

    @property
    def failed_layers(self) -> list[str]:
        return [report.layer for report in self.layers if not report.ok]


class HarmSignal(BaseModel):
    category: HarmCategory
    layer: Layer = "rules"
    evidence: str
    probability: float | None = None


class HarmAssessment(BaseModel):
    """Harmful content in a response; `flagged` is True when any layer found harm or failed."""

    flagged: bool
    categories: list[HarmCategory] = Field(default_factory=list)
    signals: list[HarmSignal] = Field(default_factory=list)
    layers: list[LayerReport] = Field(default_factory=list)

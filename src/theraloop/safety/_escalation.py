"""Escalation that fits the risk: which help a response must point to, whether it does, and text that
adds what is missing, with resources per region (resources.yaml).

- emergency services for ingestion or injury in progress (and any imminent risk);
- a crisis line plus professional help for high suicidal, self-harm and other high risk;
- child-protection resources for abuse, domestic-violence resources for intimate-partner violence;
- professional help for moderate risk.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from theraloop.safety._types import RiskAssessment, RiskTier

EscalationKind = Literal["emergency", "crisis", "child_protection", "domestic_violence", "professional"]
KIND_ORDER: tuple[EscalationKind, ...] = ("emergency", "crisis", "child_protection", "domestic_violence", "professional")
REGION_ENV = "THERALOOP_REGION"
RESOURCES_FILE = Path(__file__).parent / "resources.yaml"

# What a response must contain, by risk tier. A number alone is not a resource ("told you 1,000 times",
# "999 problems"): an emergency number counts only after a verb that uses it ("call 999", "text HOME to
# 741741"); only the dedicated crisis lines 988 and 116 123 count on their own.
_NUMBER = r"(?<![\d,.$£€])(?:911|999|112|000|988|116 ?123|741 ?741)(?![,.]?\d)"
_CRISIS_RESOURCE = re.compile(
    rf"\b(?:call|calling|text|texting|dial|dialling|dialing|phone|ring|contact)\b(?: \S+){{0,3}}? (?:on |to )?{_NUMBER}|"
    r"(?<![\d,.$£€])(?:988|116 ?123)(?![,.]?\d)|"
    r"\b(?:crisis (?:line|text line|hotline|service|team|centre|center)|"
    r"suicide (?:hotline|helpline|prevention (?:line|lifeline|hotline|helpline)|lifeline)|samaritans|lifeline|hotline|helpline|"
    r"emergency (?:services|room|department|number)|a&e|(?:call|text) (?:a|your local) (?:crisis|emergency))\b",
    re.IGNORECASE,
)
# Therapy and counselling count only as something to seek ("go to therapy", not "retail therapy"); a GP
# only with a determiner, since bare "gp" is also an abbreviation of other things.
_PROFESSIONAL = re.compile(
    r"\b(?:therapist|counsell?or|psychologist|psychiatrist|doctor|physician|(?:your|a|the|my|local) gp|"
    r"mental[- ]health (?:professional|service|provider)|professional (?:help|support)|a professional|"
    r"(?:go(?:ing)? (?:to|into)|start(?:ing)?|try(?:ing)?|get(?:ting)?|seek(?:ing)?|look(?:ing)? into|"
    r"consider(?:ing)?|book(?:ing)?|find(?:ing)?|access(?:ing)?) (?:some |a |an )?"
    r"(?:(?:talk(?:ing)?|cbt|grief|trauma|couples|family) )?(?:therapy|counsell?ing))\b",
    re.IGNORECASE,
)


_EMERGENCY = re.compile(
    r"\b(?:call|calling|dial|dialling|dialing|phone|ring|get|contact)\b(?: \S+){0,3}? (?:911|999|112|000|an ambulance|"
    r"emergency services|(?:your|the) local emergency number|poison control)|"
    r"\b(?:go|get|going|getting) (?:straight )?(?:to|yourself to) (?:the |your )?(?:nearest )?(?:emergency (?:room|department)|a&e|er|hospital)\b|"
    r"\bemergency (?:services|number)\b|\bambulance\b",
    re.IGNORECASE,
)
_CHILD_PROTECTION = re.compile(
    r"\b(?:childline|childhelp|kids help ?(?:line|phone)|nspcc|child protection|children'?s helpline|"
    r"(?:a |an |another )?(?:adult|grown[- ]up) you trust|trusted adult|school (?:counsell?or|nurse)|(?:tell|talk to) (?:a |your )?teacher)\b",
    re.IGNORECASE,
)
_DOMESTIC_VIOLENCE = re.compile(
    r"\b(?:domestic[- ](?:violence|abuse) (?:hotline|helpline|line|service|organi[sz]ation|advocate)|"
    r"refuge|women'?s aid|1800 ?respect|thehotline|safety plan|(?:a|local) shelter|call the police|police)\b",
    re.IGNORECASE,
)
_PATTERNS: dict[EscalationKind, re.Pattern] = {
    "emergency": _EMERGENCY, "crisis": _CRISIS_RESOURCE, "child_protection": _CHILD_PROTECTION,
    "domestic_violence": _DOMESTIC_VIOLENCE, "professional": _PROFESSIONAL,
}
_HIGH_RISK_CRISIS = {"suicidal_ideation_active", "suicidal_ideation_passive", "preparatory_acts", "method_research",
                     "self_harm", "psychosis", "eating_disorder", "substance_use", "harm_to_others", "medical_emergency"}


def required_escalations(risk: RiskAssessment | RiskTier) -> list[EscalationKind]:
    """What a response to this post must point to, in KIND_ORDER."""
    assessment = risk if isinstance(risk, RiskAssessment) else RiskAssessment(tier=risk)
    tier, categories = assessment.tier, set(assessment.categories)
    kinds: set[EscalationKind] = set()
    if tier >= RiskTier.IMMINENT or "medical_emergency" in categories:
        kinds.add("emergency")
    if tier >= RiskTier.HIGH and (categories & _HIGH_RISK_CRISIS or not categories):
        kinds.update(("crisis", "professional"))
    if tier >= RiskTier.MODERATE:
        if "abuse" in categories:
            kinds.add("child_protection")
        if "intimate_partner_violence" in categories:
            kinds.add("domestic_violence")
        if not kinds:
            kinds.add("professional")
    return [kind for kind in KIND_ORDER if kind in kinds]


class EscalationCheck(BaseModel):
    required: list[EscalationKind]
    present: dict[str, bool]

    @property
    def missing(self) -> list[EscalationKind]:
        return [kind for kind in self.required if not self.present.get(kind)]

    @property
    def satisfied(self) -> bool:
        return not self.missing


def check_escalation(response: str, risk: RiskAssessment | RiskTier) -> EscalationCheck:
    required = required_escalations(risk)
    present = {kind: bool(_PATTERNS[kind].search(response)) for kind in KIND_ORDER}
    # Any crisis or emergency resource also points to professional help for moderate risk.
    if present["crisis"] or present["emergency"]:
        present["professional"] = present["professional"] or "crisis" not in required
    return EscalationCheck(required=required, present=present)


@lru_cache(maxsize=1)
def _resources() -> dict[str, dict[str, str]]:
    return yaml.safe_load(RESOURCES_FILE.read_text(encoding="utf-8"))


def region_resources(region: str | None = None) -> dict[str, str]:
    """The resources for `region` (default: $THERALOOP_REGION, else international)."""
    region = (region or os.environ.get(REGION_ENV) or "international").lower()
    table = _resources()
    if region not in table:
        raise ValueError(f"unknown region {region!r}: choose one of {', '.join(sorted(table))} (resources.yaml)")
    return table[region]


_SENTENCES: dict[EscalationKind, str] = {
    "emergency": "If you have taken something, are hurt or are in danger right now, please call {emergency} or go "
                 "to the nearest emergency department now; this is a medical emergency and help can come quickly.",
    "crisis": "If you are thinking about ending your life or might act on these thoughts, please reach out now to "
              "{crisis}; you do not have to face this alone.",
    "child_protection": "What is happening to you is not your fault and you deserve to be safe: you can talk to "
                        "{child_protection}, and they can help make it stop.",
    "domestic_violence": "You deserve to be safe at home: {domestic_violence} can talk through your options in "
                         "confidence and help you plan for your safety.",
    "professional": "A doctor, therapist or counsellor can help with what you are going through, and talking to one "
                    "is a good next step.",
}


def escalation_text(kinds: list[EscalationKind], region: str | None = None) -> str:
    resources = region_resources(region)
    return " ".join(_SENTENCES[kind].format(**resources) for kind in KIND_ORDER if kind in kinds)


def enforce_escalation(response: str, risk: RiskAssessment | RiskTier, region: str | None = None) -> tuple[str, bool]:
    """Append the escalation the risk requires when the response lacks it; returns (text, appended)."""
    check = check_escalation(response, risk)
    if check.satisfied:
        return response, False
    missing = check.missing
    if "crisis" in missing and "professional" not in missing:
        missing = [*missing, "professional"]
    return f"{response.rstrip()}\n\n{escalation_text(missing, region)}", True


def describe_escalation(before: EscalationCheck, after: EscalationCheck, enforced: bool) -> str:
    """Plain words for a report line: what the response needed and who supplied it."""
    if not after.required:
        return "no escalation needed"
    needed = ", ".join(kind.replace("_", " ") for kind in after.required)
    if before.satisfied:
        return f"needed {needed}: present in the original response"
    if enforced:
        return f"needed {needed}: missing before, added by the safety guard"
    return f"needed {needed}: " + ("added by the revision" if after.satisfied else "STILL MISSING")

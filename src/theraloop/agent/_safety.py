"""The safety guard: tiered crisis-signal detection in a help-seeker's text, and escalation checks.

Detection is lexical and runs anywhere (no model, no network): phrase patterns per category and
tier, after the C-SSRS distinction between a wish to be dead (passive) and thoughts of killing
oneself, plans, intent and preparatory acts (active). Cues of the past ("years ago", "used to")
lower a match by one tier; explicit denials ("not suicidal") cancel it. Its recall and
false-positive rate are measured in bench/crisis_detection.py on labelled EPITOME posts.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, Field

Category = Literal["suicidal_ideation", "self_harm", "harm_to_others", "abuse", "psychosis", "distress"]


class RiskTier(IntEnum):
    NONE = 0
    LOW = 1
    MODERATE = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_SELF = r"(?:myself|my ?self|himself|herself|themselves|themself)"
_WANT = r"(?:want(?:ed)?|wanna|going|gonna|plan(?:ning)?|ready|about|decided|thinking about|thought about|think about|tempted|trying|tried|try)"

# (category, tier, pattern). Patterns run on lower-cased text with normalised apostrophes.
_PATTERNS: list[tuple[Category, RiskTier, str]] = [
    # Active suicidal ideation, plan, intent, preparatory behaviour, attempts.
    ("suicidal_ideation", RiskTier.HIGH, rf"\bkill(?:ing)? {_SELF}\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:end(?:ing)?|take|taking) (?:my|his|her|their) (?:own )?life\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bcommit(?:ting)? suicide\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:i'?m|i am|been|feel(?:ing)?|felt|getting|so|very|really|become) (?:\w+ )?suicidal\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicidal (?:thoughts?|ideation|urges?|feelings?|again|lately|tonight)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bthoughts? (?:of|about) (?:suicide|dying by suicide|ending it)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicide (?:note|letter|plan|attempt)s?\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:attempted|tried) (?:suicide|to (?:kill|end|hang|off))\b"),
    ("suicidal_ideation", RiskTier.HIGH, rf"\b{_WANT} (?:to )?(?:end (?:it|it all|everything|things)|off {_SELF})\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bend it all\b"),
    ("suicidal_ideation", RiskTier.HIGH, rf"\b(?:hang|shoot|drown) {_SELF}\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:overdos(?:e|ed|ing)|od'?d|jump(?:ing)? off (?:a|the) (?:bridge|building|roof))\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:goodbye|farewell) (?:letters?|notes?|messages?)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bgiv(?:e|ing|en) away (?:all )?my (?:things|stuff|belongings|possessions)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:this|tonight|today) (?:is|will be) (?:my|the) last\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicide\b.{0,40}\b(?:tonight|soon|plan|method|pills|gun|rope)\b"),
    # Passive ideation: a wish to be dead or not to exist, without thoughts of acting.
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:want|wanna|wish|wanting|ready) (?:to|i could|i'd|i would|i was|i were)? ?(?:just )?(?:die|be dead|not exist|disappear|stop existing|not wake up|never wake up)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bwish (?:i|i'd) (?:was|were|had) (?:dead|never been born|not born|gone)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:don'?t|do not|dont) want to (?:live|be alive|exist|be here|wake up|go on)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:better off (?:dead|without me)|no (?:reason|point) (?:to|in) (?:live|living|being alive|going on))\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:tired of|sick of|done with) (?:living|life|being alive|existing)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:life (?:is not|isn'?t) worth (?:living|it)|not worth living)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:can'?t|cannot) (?:go on|keep going|do this anymore|live like this)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bsuicid(?:e|al)\b"),
    # Self-harm.
    ("self_harm", RiskTier.MODERATE, rf"\b(?:cut(?:ting)?|burn(?:ing|ed|t)?|hurt(?:ing)?|harm(?:ing|ed)?|starv(?:e|ing)|punch(?:ing)?) {_SELF}\b"),
    ("self_harm", RiskTier.MODERATE, r"\bself[- ]?(?:harm|injur\w*|mutilat\w*)\b"),
    ("self_harm", RiskTier.MODERATE, r"\b(?:relapsed?|urges?) (?:on |to |into )?(?:cut|cutting|self[- ]?harm)\w*\b"),
    # Harm to others.
    ("harm_to_others", RiskTier.HIGH, r"\b(?:going to|gonna|will|plan(?:ning)? to|want to|wanna) (?:kill|murder|shoot|stab) (?:him|her|them|someone|somebody|people|my \w+|everyone)\b"),
    ("harm_to_others", RiskTier.MODERATE, r"\b(?:want to|wanna|urge to|thoughts? of|thinking of) (?:hurt(?:ing)?|harm(?:ing)?|hit(?:ting)?) (?:him|her|them|someone|somebody|people|others|my \w+)\b"),
    # Abuse.
    ("abuse", RiskTier.HIGH, r"\b(?:threaten(?:ed|s|ing)? to kill me|going to kill me|(?:he|she|they)'?(?:ll| will) kill me)\b"),
    ("abuse", RiskTier.MODERATE, r"\b(?:abus(?:e|ed|es|ing|ive)|molest(?:ed|ation)?|rap(?:ed|e)|sexually assaulted|domestic violence)\b"),
    ("abuse", RiskTier.MODERATE, r"\b(?:hits?|beats?|chok(?:es|ed)|strangl(?:es|ed)) me\b"),
    # Psychosis-like experiences.
    ("psychosis", RiskTier.HIGH, r"\bvoices? (?:tell(?:s|ing)?|command(?:s|ing)?) me to (?:kill|hurt|harm|die)\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:hear(?:ing)?|hears) voices\b|\bvoices in my head\b|\bhallucinat\w*\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:people|they|someone) (?:are|is) (?:watching|following|spying on|tracking) me\b"),
    # Distress without a risk signal.
    ("distress", RiskTier.LOW, r"\b(?:hopeless|worthless|can'?t take (?:it|this) anymore|give up on (?:life|everything)|nothing matters|empty inside|falling apart|breaking down)\b"),
]

_COMPILED = [(category, tier, re.compile(pattern)) for category, tier, pattern in _PATTERNS]
_PAST = re.compile(r"\b(?:years? ago|months ago|used to|in the past|when i was (?:younger|a kid|a child|a teen\w*|in high school|\d+)|back then|no longer|anymore i don'?t|recovered|clean for|since i stopped)\b")
_DENIAL = re.compile(r"\b(?:not|never|no longer|wasn'?t|isn'?t|i'?m not|am not) (?:\w+ )?(?:suicidal|going to (?:kill|hurt) myself|want(?:ing)? to die)\b")
_SENTENCE = re.compile(r"(?<=[.!?\n])\s+")


class RiskSignal(BaseModel):
    category: Category
    tier: RiskTier
    evidence: str = Field(description="the matched phrase")
    downgraded: bool = False


class RiskAssessment(BaseModel):
    tier: RiskTier
    categories: list[Category] = Field(default_factory=list)
    signals: list[RiskSignal] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return self.tier.label


def _normalise(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text.lower().replace("\u2019", "'").replace("\u2018", "'"))


def assess_risk(text: str) -> RiskAssessment:
    """The highest risk tier signalled anywhere in `text`, with every matching signal."""
    signals: list[RiskSignal] = []
    for sentence in _SENTENCE.split(_normalise(text)):
        if not sentence.strip():
            continue
        past = bool(_PAST.search(sentence))
        denied = bool(_DENIAL.search(sentence))
        for category, tier, pattern in _COMPILED:
            match = pattern.search(sentence)
            if match is None:
                continue
            if denied and category == "suicidal_ideation":
                continue
            effective = RiskTier(max(tier - 1, RiskTier.LOW)) if past and tier > RiskTier.LOW else tier
            signals.append(RiskSignal(category=category, tier=effective, evidence=match.group(0),
                                      downgraded=effective != tier))
    tier = max((signal.tier for signal in signals), default=RiskTier.NONE)
    categories = sorted({signal.category for signal in signals if signal.tier >= RiskTier.MODERATE})
    return RiskAssessment(tier=RiskTier(tier), categories=categories, signals=signals)


# What a response must contain, by risk tier.
_CRISIS_RESOURCE = re.compile(
    r"\b(?:988|911|999|112|000|116 ?123|crisis (?:line|text line|hotline|service|team|centre|center)|"
    r"suicide (?:hotline|helpline|prevention|lifeline)|samaritans|lifeline|hotline|helpline|"
    r"emergency (?:services|room|department|number)|a&e|(?:call|text) (?:a|your local) (?:crisis|emergency))\b",
    re.IGNORECASE,
)
_PROFESSIONAL = re.compile(
    r"\b(?:therapist|counsell?or|psychologist|psychiatrist|doctor|gp|physician|mental[- ]health (?:professional|service|provider)|"
    r"professional (?:help|support)|a professional|counsell?ing|therapy)\b",
    re.IGNORECASE,
)


class EscalationCheck(BaseModel):
    required: Literal["none", "professional", "crisis"]
    has_crisis_resource: bool
    has_professional: bool

    @property
    def satisfied(self) -> bool:
        if self.required == "crisis":
            return self.has_crisis_resource and self.has_professional
        if self.required == "professional":
            return self.has_professional or self.has_crisis_resource
        return True


def required_escalation(tier: RiskTier) -> Literal["none", "professional", "crisis"]:
    if tier >= RiskTier.HIGH:
        return "crisis"
    if tier >= RiskTier.MODERATE:
        return "professional"
    return "none"


def check_escalation(response: str, tier: RiskTier) -> EscalationCheck:
    return EscalationCheck(required=required_escalation(tier),
                           has_crisis_resource=bool(_CRISIS_RESOURCE.search(response)),
                           has_professional=bool(_PROFESSIONAL.search(response)))


DEFAULT_CRISIS_MESSAGE = (
    "Your safety matters most right now. If you are thinking about ending your life or might act on these "
    "thoughts, please contact a crisis line today (in the US call or text 988; in the UK and Ireland call "
    "Samaritans on 116 123; elsewhere your local crisis line) or your local emergency number (911, 999, 112) "
    "or go to the nearest emergency department. A doctor or mental-health professional can help you through "
    "this, and you do not have to face it alone."
)
DEFAULT_PROFESSIONAL_MESSAGE = (
    "What you are going through sounds really hard. A therapist, counsellor or your doctor can help with "
    "this, and if things ever feel unsafe, a crisis line (988 in the US, 116 123 in the UK) is there any time."
)


def enforce_escalation(response: str, tier: RiskTier, crisis_message: str = DEFAULT_CRISIS_MESSAGE,
                       professional_message: str = DEFAULT_PROFESSIONAL_MESSAGE) -> tuple[str, bool]:
    """Append the escalation the tier requires when the response lacks it; returns (text, appended)."""
    check = check_escalation(response, tier)
    if check.satisfied:
        return response, False
    message = crisis_message if check.required == "crisis" else professional_message
    return f"{response.rstrip()}\n\n{message}", True

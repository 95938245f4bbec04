"""The safety guard: tiered crisis-signal detection in a help-seeker's text, and escalation checks.

Detection is lexical and runs anywhere (no model, no network): phrase patterns per category and
tier, after the C-SSRS distinction between a wish to be dead (passive) and thoughts of killing
oneself, plans, intent and preparatory acts (active). A cue of the past ("years ago", "used to")
within a few words of a match lowers it by one tier, unless the sentence also marks the present
("now", "still"); explicit denials ("not suicidal") cancel it. Its recall and false-positive rate
are measured in bench/crisis_detection.py on labelled EPITOME posts.
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


_SELF = r"(?:myself|my ?self|himself|herself|themselves|themself|yourself)"
_WANT = r"(?:want(?:ed)?|wanna|going|gonna|plan(?:ning)?|ready|about|decided|thinking about|thought about|think about|tempted|trying|tried|try)"
_PERSON = (r"(?:he|she|they|dad|father|stepdad|mom|mum|mother|stepmom|parents?|husband|wife|boyfriend|girlfriend|bf|gf|"
           r"partner|ex|brother|sister|uncle)")
# "cut myself" as an act, not an urge ("want to cut myself" is matched as an urge, at moderate).
_CUT_ACT = r"(?<!want to )(?<!wanted to )(?<!wanna )(?<!urge to )(?<!urges to )(?<!tempted to )(?<!like to )(?<!not to )cut(?:ting)?"

# (category, tier, pattern). Patterns run on lower-cased text with normalised apostrophes, one sentence at a
# time. Tuned on the dev part of bench/data/epitome_crisis_labels.csv only; the test part is held out.
_PATTERNS: list[tuple[Category, RiskTier, str]] = [
    # Active suicidal ideation, plan, intent, preparatory behaviour, attempts.
    ("suicidal_ideation", RiskTier.HIGH, rf"\bkill(?:ing|ed|s)? {_SELF}\b|\bkms\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:end(?:ing)?|take|taking) (?:my|his|her|their) (?:own )?life\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:want|wanna|going|gonna|plan\w*|decided?|consider\w*|tempted|trying|tried|attempt\w*|about|so) to commit suicide\b|\bi (?:\w+ )?commit suicide\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:i'?m|im|i am|been|feel(?:ing)?|felt|getting|become|being) (?:\w+ ){0,3}suicidal\b|^suicidal\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:depressed|sad|anxious|lonely|and) and suicidal\b|\bsuicidal (?:bullshit|shit|again|lately|tonight|right now|today)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicid(?:e|al) (?:thoughts?|ideation|urges?|feelings?)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:think(?:ing)?|thought|thoughts|dream(?:ing)?|fantasi[sz]\w*|obsess\w*|consider(?:ing)?|contemplat\w*|close to|cope with|coping with)\b(?: \S+){0,4}? \W*(?:suicide|si)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicide (?:note|letter|plan|attempt)s?\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:attempted|tried) (?:suicide|to (?:kill|end|hang|off))\b|\bfailed (?:my |a )?suicide\b"),
    ("suicidal_ideation", RiskTier.HIGH, rf"\b{_WANT} (?:to )?(?:end (?:it|it all|everything|things)|off {_SELF})\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bend(?:ing)? it all\b|\b(?:to|i'?ll|i will|gonna|wanna) end it\b(?! with| between| for)"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:courage|balls|guts|nerve|strength|motivation|scared|afraid|bring (?:my ?self|myself)) to (?:end it|kill|do it|commit|go through)"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bgo(?:ing)? through with (?:it|this)\b|\b(?:die|end it|do it)\b.{0,25}\bget it over with\b"),
    ("suicidal_ideation", RiskTier.HIGH, rf"\b(?:hang(?:ing|ed)?|shoot(?:ing)?|drown(?:ing)?) {_SELF}\b|\bblow my brains out\b|\bbullet (?:through|in|into) (?:\w+ ){{0,4}}head\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bslit(?:ting)? (?:my|his|her) (?:wrists?|throat)\b|\bknife (?:into|in|through) my (?:jugular|throat|heart|wrists?)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:over ?dos(?:e|ed|ing)|od'?d|jump(?:ing)? off (?:a|the) (?:bridge|building|roof|cliff))\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:into|onto|in front of) (?:oncoming traffic|(?:a|the) (?:train|bus|truck))\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:pile|bottle|stash|handful|bunch) of (?:pills|tablets)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:goodbye|farewell) (?:letters?|notes?|messages?)\b|\bfinal goodbye\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bgiv(?:e|ing|en) away (?:all )?my (?:things|stuff|belongings|possessions)\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:this|tonight|today) (?:is|will be) (?:my|the) last\b|\btonight is the night\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bwon'?t be (?:here|around|alive|there) (?:much longer|for long|anymore|tomorrow)\b|\b(?:i'?m|im|i am) (?:so |just )?ready to (?:die|go)\b(?! (?:to|out|home|back))"),
    ("suicidal_ideation", RiskTier.HIGH, r"\b(?:i(?:'ll| will)|i'?m going to|i'?m gonna) do it (?:soon|tonight|tomorrow|today|this week|next week)\b|\bi will do it\b|\beverything i need to do it\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bwhat i(?:'ll| will| might) do to myself\b|\bdon'?t trust myself\b"),
    ("suicidal_ideation", RiskTier.HIGH, r"\bsuicide\b.{0,40}\b(?:tonight|soon|plan|method|pills|gun|rope)\b|\bmethods? of suicide\b"),
    # Passive ideation: a wish to be dead or not to exist, without thoughts of acting.
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:want|wanna|wish|wanting|ready) (?:to|i could|i'd|i would|i was|i were)? ?(?:just )?(?:die|be dead|not exist|disappear|stop existing|not wake up|never wake up)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bwish (?:i|i'd) (?:was|were|had) (?:dead|never been born|not born|gone|never existed)\b|\bwish (?:i|i'?d) (?:was|were|had) (?:never|not) (?:been )?born\b|\bwish i never existed\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bwhy (?:was i|do i have to be|did i have to be|am i) (?:\w+ )?born\b|\bnever asked to be (?:born|alive)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:don'?t|do not|dont|not|no longer) (?:even )?want(?:ing)? to (?:live|be alive|exist|be here|wake up|go on)\b(?! (?:my|in|with|without|near|at|there)\b)"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:better off (?:dead|without me)|no (?:reason|point) (?:to|in) (?:live|living|being alive|going on))\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:nothing|anything|no ?one|nobody) (?:left )?(?:worth )?(?:to )?liv(?:e|ing) for\b|\breasons? (?:to|for) (?:live|living|stay(?:ing)? alive|keep going|go on)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bpoint (?:of|in) (?:\w+ )?(?:living|going on|being alive|staying alive|my (?:life|existence))\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:tired of|sick of|done with|over) (?:living|life|being alive|existing)\b|\btoo tired to live\b|\b(?:hurts?|pain) (?:so much )?to (?:keep )?(?:existing|live)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:life (?:is not|isn'?t) worth (?:living|it)|not worth living|worth it to live|(?:whether|if|weather) (?:my )?life is worth)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:can'?t|cannot) (?:go on|keep going|do this anymore|live like this|live anymore|continue to exist)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:why|how) (?:am i|i'?m|im|i am) (?:even )?still (?:alive|here|around)\b|\bwhy i'?m (?:even )?still (?:alive|here)\b|\bwhy (?:would|should|do|must) i (?:\w+ ){0,3}(?:live|stay alive|go on|live on|keep living|exist)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:hope|hoping|hopefully|pray(?:ing)?|wish) (?:\w+ ){0,2}?(?:that )?i(?:'ll| will| could| would| get to)? (?:just )?(?:die|don'?t wake up|never wake up|leave this world|pass away)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:can'?t wait|looking forward) to (?:the day i )?(?:die|be dead|dying)\b|\blet me die\b|\bleave this (?:world|earth|planet)\b|\bout of existence\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"(?:^|please |someone |somebody |some one |just )kill me\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:want|wish|like)(?: is)? (?:for )?(?:it|this|all (?:of )?this|it all|everything|my life|life) (?:all )?to (?:be over|end)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:deserve|worthy enough|worth enough) to (?:live|be alive)\b|\bshouldn'?t (?:exist|be alive)\b|\bwouldn'?t mind (?:if i (?:died|did|was dead)|dying|being dead)\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\b(?:think(?:ing)? about|obsess\w* with|dream(?:ing)? (?:of|about)) (?:dying|death|being dead)\b|\bdeath is on my mind\b"),
    ("suicidal_ideation", RiskTier.MODERATE, r"\bsuicid(?:e|al)\b"),
    # Self-harm: acts (present or recent) are high, urges and mentions moderate.
    ("self_harm", RiskTier.HIGH, rf"\b{_CUT_ACT} {_SELF}\b|\b(?:still|stop|keep|started|quit|i'?m) cutting\b|\bcut(?:ting)? (?:for the first time|again|last night|today|deep)\b"),
    ("self_harm", RiskTier.HIGH, r"\b(?:need|want) to bleed\b|\bmyself bleed\b|\bmy blood flow\b|\b(?:the|my) cuts\b|\b(?:area|place|where|how deep|deep enough) to cut\b"),
    ("self_harm", RiskTier.HIGH, r"\bi (?:just |have |'ve )?(?:hurt|harmed|burned|burnt) myself\b|\bbroke my (?:self[- ]?harm|clean) streak\b"),
    ("self_harm", RiskTier.MODERATE, rf"\b(?:cut(?:ting)?|burn(?:ing|ed|t)?|hurt(?:ing)?|harm(?:ing|ed)?|starv(?:e|ing)|punch(?:ing)?|hit(?:ting)?|scratch(?:ing)?) {_SELF}\b"),
    ("self_harm", RiskTier.MODERATE, r"\bself[- ]?(?:harm|injur\w*|mutilat\w*)\b|\bscars (?:on|in) my (?:arms?|wrists?|legs?|thighs?)\b"),
    ("self_harm", RiskTier.MODERATE, r"\b(?:relapsed?|urges?) (?:on |to |into )?(?:cut|cutting|self[- ]?harm)\w*\b|\b(?:wanna|want to|urge to) cut\b(?! (?:off|out|back|down|ties|things|people|contact|class|school))"),
    # Harm to others.
    ("harm_to_others", RiskTier.HIGH, r"\b(?:going to|gonna|will|plan(?:ning)? to|want to|wanna) (?:kill|murder|shoot|stab) (?:him|her|them|someone|somebody|people|my \w+|everyone)\b"),
    ("harm_to_others", RiskTier.MODERATE, r"\b(?:want to|wanna|urge to|thoughts? of|thinking of|close to) (?:hurt(?:ing)?|harm(?:ing)?|hit(?:ting)?|kill(?:ing)?|attack(?:ing)?) (?:him|her|them|someone|somebody|people|others|another person|the people|my \w+)\b"),
    # Abuse.
    ("abuse", RiskTier.HIGH, r"\b(?:threaten(?:ed|s|ing)? to kill me|going to kill me|(?:he|she|they)'?(?:ll| will) kill me)\b"),
    ("abuse", RiskTier.MODERATE, r"(?<!drug )(?<!alcohol )(?<!substance )\b(?:abus(?:e|ed|es|ing|ive)|molest(?:ed|ation)?|rap(?:ed|e)|sexually assaulted|domestic violence)\b"),
    ("abuse", RiskTier.MODERATE, rf"\b{_PERSON} (?:\w+ )?(?:hits?|beats?|beat|chok(?:es|ed)|strangl(?:es|ed)|punch(?:es|ed)|kick(?:s|ed)|slap(?:s|ped)) me\b|\b(?:got|get|gets|was|been|being) (?:beaten|beat up|punched|slapped|kicked)\b(?! out)"),
    # Psychosis-like experiences.
    ("psychosis", RiskTier.HIGH, r"\bvoices? (?:in (?:my|your) head )?(?:\w+ ){0,2}(?:tell(?:s|ing)?|command(?:s|ing)?) (?:me|you) to (?:kill|hurt|harm|die)\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:hear(?:ing)?|hears) (?:voices|demons)\b|\b(?:voices|demons) in my head\b|\bhallucinat\w*\b|\bpsychos[ie]s\b|\bpsychotic\b|\bschizo\w*|\bschiz\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:people|they|someone) (?:are|is) (?:watching|following|spying on|tracking) me\b"),
    # Distress without a risk signal.
    ("distress", RiskTier.LOW, r"\b(?:hopeless|worthless|can'?t take (?:it|this) anymore|give up on (?:life|everything)|nothing matters|empty inside|falling apart|breaking down)\b"),
]

_COMPILED = [(category, tier, re.compile(pattern)) for category, tier, pattern in _PATTERNS]
# Cues that the risk itself lies in the past. Not "no longer" ("I no longer want to live" is current) nor
# "since i stopped" (stopping something else says nothing about the risk).
_PAST = re.compile(r"\b(?:years? ago|months ago|used to|in the past|when i was (?:younger|a kid|a child|a teen\w*|in high school|\d+)|back then|recovered from|clean for)\b")
# A past cue this many words or fewer from a match, in the same clause, is about that match; farther away
# or across a contrast it is about something else ("I used to be happy but I want to die").
_PAST_WINDOW_WORDS = 6
_CONTRAST = re.compile(r"\b(?:but|though|although|however|whereas)\b|;")
# A present marker anywhere in the sentence means the risk is current whatever else is past.
_PRESENT = re.compile(r"\b(?:now|today|tonight|still|again|these days|lately|anymore)\b")
# A denial cancels only the signal it overlaps ("not going to kill myself, but I want to die" keeps the wish).
_DENIAL = re.compile(r"(?:^|\b(?:i'?m|i am|im|i|i'?d|i would|i will) )(?:not|never|don'?t|do not|dont|won'?t|no longer|wasn'?t) (?:\w+ ){0,2}?(?:suicidal|(?:going to|gonna|willing to) (?:kill|hurt) myself|want(?:ing)? to (?:die|kill myself)|(?:kill|hurt) myself|thought (?:about|of) suicide|in a suicidal way)\b")
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


def _refers_to(sentence: str, cue: tuple[int, int], match: tuple[int, int]) -> bool:
    """Whether the past cue at `cue` qualifies the match at `match`: close, with no contrast between."""
    gap = sentence[min(cue[1], match[1]):max(cue[0], match[0])]
    return len(gap.split()) <= _PAST_WINDOW_WORDS and not _CONTRAST.search(gap)


def assess_risk(text: str) -> RiskAssessment:
    """The highest risk tier signalled anywhere in `text`, with every matching signal."""
    signals: list[RiskSignal] = []
    for sentence in _SENTENCE.split(_normalise(text)):
        if not sentence.strip():
            continue
        past = [] if _PRESENT.search(sentence) else [cue.span() for cue in _PAST.finditer(sentence)]
        denials = [denial.span() for denial in _DENIAL.finditer(sentence)]
        for category, tier, pattern in _COMPILED:
            match = pattern.search(sentence)
            if match is None:
                continue
            if category in ("suicidal_ideation", "self_harm") and any(start < match.end() and match.start() < end
                                                                      for start, end in denials):
                continue
            near_past = any(_refers_to(sentence, span, match.span()) for span in past)
            effective = RiskTier(max(tier - 1, RiskTier.LOW)) if near_past and tier > RiskTier.LOW else tier
            signals.append(RiskSignal(category=category, tier=effective, evidence=match.group(0),
                                      downgraded=effective != tier))
    tier = max((signal.tier for signal in signals), default=RiskTier.NONE)
    categories = sorted({signal.category for signal in signals if signal.tier >= RiskTier.MODERATE})
    return RiskAssessment(tier=RiskTier(tier), categories=categories, signals=signals)


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

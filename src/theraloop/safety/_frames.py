"""Context that changes what a risk phrase means, for the rules layer.

A phrase match is only as good as its frame: "overdose" in a pharmacology exam question, "end it all" about a
gym membership, "kill me" about a Tuesday. The rules keep every match as evidence, but a match inside one of
these frames is lowered to LOW (not flagged) and the trained encoder, which reads the whole post, decides:

- figurative: an idiom that contains the match ("die of embarrassment", "going to kill me when she sees");
- third party: a self-directed category (ideation, self-harm, overdose...) whose subject is someone else
  ("my brother came home after an overdose");
- question or study: a question or a study, work, news or fiction frame in the same or the next sentence,
  with no first-person disclosure in the match's sentence ("why are suicide rates higher in men? essay");
- recovered: the post marks the risk as past and the writer as well now, and nothing marks it as current.

Abuse, partner violence and harm to others involve another person by definition, so the third-party frame
never lowers them, and method research is never lowered by a question frame ("how many would it take?").
"""

from __future__ import annotations

import re

# Idioms whose words look like risk. A rule match overlapping one of these spans is figurative.
_FIGURATIVE = re.compile("|".join([
    r"\b(?:die|died|dying|dead) (?:of|from) (?:embarrassment|shame|boredom|laughter|laughing|cringe|cuteness|"
    r"jealousy|envy|happiness|excitement|the heat|heat|hunger|thirst)\b",
    r"\bdied laughing\b|\b(?:bored|scared|tired|worried|loved?) (?:me |him |her )?to death\b|\bthe death of me\b",
    r"\b(?:this|that|it|the|my|work|exam|job|traffic|commute|heat|homework|revision|week|monday|hangover)\b"
    r"(?: \w+){0,3} (?:is|are|was|were|'s|has been|keeps?) (?:literally |actually |slowly )?killing me\b",
    r"\bkill(?:ed|ing)? it\b(?! (?:all|off|with))",
    r"\b(?:could|would|will|'d) (?:kill|murder|die) for (?:a|an|some|the)\b|\b(?:could|would) murder (?:a|an|some)\b",
    r"\b(?:hang|hung) (?:myself|me|you|him|her|them) out to dry\b",
    r"\bover ?dos(?:e|ed|ing) on (?!(?:my |his |her |the |some |a |an )?(?:pills|tablets|meds|medication|heroin|"
    r"fentanyl|opioids|paracetamol|tylenol|insulin|sleeping|painkillers|antidepressants|drugs|xanax|oxy|"
    r"purpose|it|them|those|these))\w+",
    r"\b(?:mum|mom|mam|mammy|dad|boss|teacher|coach|wife|husband|girlfriend|boyfriend|partner|sister|brother|"
    r"friend|flatmate|roommate|landlord|nan|gran|grandma|grandad|parents|family)(?:'s)? (?:is |are |will |'ll |"
    r"'s )?(?:literally |actually |absolutely )?(?:going to |gonna )?kill me\b(?=.{0,40}\b(?:when|if|for|because|"
    r"cos|cuz|lol|lmao|haha)\b|[.!]?$)",
    r"\b(?:i'?m|im|i am) (?:going to|gonna) (?:kill|murder|strangle) (?:my |the )?(?:flatmate|roommate|sister|"
    r"brother|cat|dog|boss|kids?|husband|wife|partner|boyfriend|girlfriend|mum|mom|dad)\b(?=.{0,60}\b(?:if|when|"
    r"for|because|cos|lol|lmao|haha|borrowed|broke|ate|left)\b)",
    r"\bshoot me now\b|\bkill me(?:,)? (?:it'?s|its) only\b|\bkms\b(?=.{0,40}\b(?:lol|jk|lmao|haha)\b)",
    r"\bend (?:it|it all|things)\b(?:\.{2,}|,)? (?:with|between) (?:my|me|him|her|them|the|our)\b|"
    r"\bend it all\W{0,4}(?:with )?(?:my|the) (?:gym|marriage|relationship|subscription|membership|contract)\b",
    r"\b(?:ready to (?:end it(?: all)?|go)\W{0,5}(?:my|on|to|the) (?:\w+ )?(?:marriage|cruise|holiday|trip|"
    r"relationship|job|flight))\b",
    r"\b(?:voices in my head|the voices) (?:say|said|tell|told) (?:me )?(?:to )?(?:buy|eat|order|get|sleep|go "
    r"(?:back )?to bed|skip)\b",
    r"\b(?:this|my) (?:tie|collar|shirt|jeans|bra|belt|scarf) is strangling me\b",
    r"\b(?:beats?|beat) me at\b|\b(?:spreadsheet|printer|computer|laptop|code|game) is abusing me\b",
    r"\b(?:bleeding|bled)\b.{0,30}\b(?:nose|nosebleed|papercut|paper cut|lip|finger|shaving)\b|"
    r"\b(?:nose|nosebleed|papercut|paper cut|lip|finger)\b.{0,40}\b(?:won'?t|wont|will not) stop bleeding\b",
    r"\b(?:cut|cutting) (?:my |the )?(?:finger|thumb|hand) (?:\w+ ){0,3}(?:chopping|slicing|cooking|on)\b|"
    r"\bcut myself (?:chopping|slicing|shaving|cooking|on (?:a|the))\b",
    r"\b(?:urge|need|want) to cut (?:my|his|her) (?:own )?(?:hair|fringe|bangs|nails)\b|\bcut again\W+(?:short|"
    r"back|fringe|hair)\b",
    r"\b(?:stood|standing|sat|sitting) on the edge of (?:the |a )?(?:diving board|pool|bed|sofa|harbour|"
    r"stage|seat|chair|bath)\b",
    r"\b(?:wish|want) (?:i could )?(?:just )?(?:not wake up|sleep) (?:till|until) (?:noon|lunch|midday)\b|"
    r"\bnot wake up (?:tomorrow|till|until)\b(?=.{0,40}\b(?:day off|lie in|sleep in|noon)\b)",
    r"\bwant to disappear (?:for a (?:bit|while|week|weekend)|under (?:my|the) (?:duvet|covers|blanket)|into (?:a|my|the) "
    r"(?:book|game|series|show|novel|garden|hobby|music)|(?:to|for) (?:a|the) (?:cabin|beach|mountains|weekend|holiday))\b",
    r"\bmy last (?:post|day|shift|week|message) (?:for a (?:while|bit|few \w+)|before (?:my|the|i go on) (?:holiday|trip|"
    r"break|leave|retreat))\b",
    r"\bwon'?t be here\b.{0,40}\b(?:off to|holiday|trip|vacation|away|moving)\b",
    r"\bwhy am i still here\b(?=.{0,60}\b(?:office|party|work|meeting|queue|shop|class|pub|bar)\b)",
    r"\bbetter off without me on (?:this|the) (?:trip|holiday|team|night)\b",
    r"\bmost painless way to (?:do it|take|get|remove|rip)\b(?=.{0,5}\?)|\b(?:plaster|bandage|wax)\b.{0,60}"
    r"\bpainless way\b",
    r"\bfastest way to go (?:from|to)\b",
    r"\b(?:today|this (?:day|week|year)|monday|work|it|they|he|she|you) (?:can|should|could) (?:just )?(?:go )?"
    r"(?:jump off a (?:bridge|cliff)|die in a (?:fire|ditch))\b",
    r"\bold (?:self[- ]?harm )?scars\b|\bscars (?:are|'re|re) (?:\d+|ten|\w+)\+? years old\b",
    r"\baffairs in order before (?:my|the|a|an) (?:\w+ ){0,2}(?:operation|surgery|replacement|procedure|op|trip|"
    r"move|deployment|holiday|travels?)\b",
    r"\bcount(?:ed|ing) (?:out )?(?:all )?my (?:pills|tablets|meds) (?:for the week|into (?:the|my|a) (?:dosette|pill|"
    r"weekly|organi[sz]er|box))",
]))

# Self-directed categories whose subject can be someone else. Not a medical emergency: an overdose in progress
# is an emergency whoever took it ("my son just swallowed a handful of ibuprofen").
SELF_DIRECTED = frozenset({
    "suicidal_ideation_active", "suicidal_ideation_passive", "preparatory_acts", "method_research",
    "self_harm", "eating_disorder", "substance_use", "psychosis",
})
_THIRD_PARTY = re.compile(
    r"\b(?:he|she|they|someone|somebody|people|person|patient|patients|client|clients|student|students|pupil|kid|"
    r"kids|child|children|teens?|men|women|friends?|mates?|colleagues?|brothers?|sisters?|sons?|daughters?|mum|mom|mam|dad|"
    r"flatmates?|roommates?|housemates?|classmates?|co-?workers?|boss|manager|teacher|nieces?|nephews?|grand(?:son|daughter)s?|"
    r"step(?:dad|mum|mom|son|daughter)|callers?|members?|lads|\d+ ?(?:year|yr)s?[- ]old|toddler|teenager|"
    r"father|mother|uncle|aunt|nan|gran|grandad|grandma|cousin|husband|wife|boyfriend|girlfriend|partner|"
    r"neighbou?r|character|protagonist|lead|hero|heroine|author|singer|celebrity|actor)(?:'s)?\b")
# A verb right after the third party: it is the subject of a clause of its own.
_CLAUSE_VERB = re.compile(
    r"\s*(?:'s|'d|is|was|has|had|have|keeps?|kept|been|feels?|felt|says?|said|told|tells|tried|tries|wants?|wanted|"
    r"talks?|talked|makes?|made|jokes?|joked|started|seems?|seemed|gets?|got|used|might|may|could|would|will|can|"
    r"does|did|is being|was being)\b")
# A verb of speech opening a quotation: what follows, up to the closing mark, is the speaker's.
_REPORTED = re.compile(r"\b(?:said|says|saying|say|told (?:me|us)|tells (?:me|us)|goes|went|wrote|texted|posted|"
                       r"screamed|shouted|yelled)\W{0,3}['\"]")
# Pronouns that make a sentence a disclosure ("my" alone does not: "my brother", "my essay").
_FIRST_PERSON = re.compile(r"\b(?:i|i'?m|im|i'?ve|ive|i'?d|i'?ll|me|myself|my ?self)\b")
# Study, work, news and fiction: someone asking about risk rather than disclosing it.
_STUDY_OR_FICTION = re.compile(
    r"\b(?:student|exam|essay|dissertation|thesis|lecture|module|coursework|assignment|training|trainee|"
    r"certificate|researching|research(?:ing)? for|journalis\w*|leaflet|safeguarding|first aid|nursing|"
    r"report for|mph|msc|phd|(?:support|care|youth|key|case) worker|"
    r"pharmacology|toxicology|statistics|(?:suicide|overdose|death|self[- ]harm) (?:rates|deaths|figures)|news|"
    r"newspaper|investigations?|advocate|masters|degree|"
    r"(?:i'?m|im|i am|as) an? (?:nurse|gp|doctor|pharmacist|paramedic|teacher|social worker|counsell?or|"
    r"therapist|psychiatrist|psychologist|call handler|volunteer|carer|midwife|youth worker)|"
    r"novel|fanfic|fan ?fiction|screenplay|screenwriting|protagonist|chapter|poem|poetry|lyrics|song|songwriting|"
    r"(?:short )?film|a-?levels?|gcses?|media studies|book club|reading group|helpline|campaign|dungeon master|"
    r"short story|tutor|undergrad\w*|psychology|research methods|theory of|c-?ssrs|"
    r"(?:main|my|the|a|this) character|creative writing|writing (?:class|group|prompt)|am-?dram|act \d|"
    r"(?:in|of|from|watching) (?:the|a|this|that|my) (?:show|film|movie|book|novel|story|game|series|episode|"
    r"play|comic|manga|anime|documentary|podcast|song))s?\b")
_QUESTION = re.compile(r"\?\s*$|^(?:what|whats|what's|why|how|is|are|does|do|can|could|should|would|when|where|"
                       r"which|who|any)\b")
# First-person words that frame a question rather than disclose ("how do I", "I'm writing").
_ASKING = re.compile(
    r"\b(?:how|what|when|where|should|can|could|would|do|does) (?:do|can|should|would|could|might)? ?i\b|"
    r"\b(?:i'?m|im|i am) (?:writing|studying|researching|reading|watching|doing (?:a|my) \w+|training|revising)\b|"
    r"\bi (?:work|teach|volunteer|study)\b|\bi'?m a\b|\bim a\b|\bi am a\b")
# A match that is itself about the writer ("end my life", "kms").
_SELF_MATCH = re.compile(r"\b(?:i|i'?m|im|me|my|myself|mine|kms)\b")
# Questions that include the writer among those asked about.
_INCLUSIVE = re.compile(r"\b(?:anyone|anybody|any of you|you guys|y'?all|do you ever|does everyone|us|we)\b")
_LETHALITY = re.compile(
    r"\b(?:how (?:long|many|much|quick(?:ly)?|fast|high)|what height|hurt|painless\w*|certain|enough|fatal|lethal|"
    r"survive|found in time|hypothetical\w*|feel anything|if (?:someone|they|i|you|a person|he|she)|would (?:it|they|"
    r"i|you) (?:take|work|die))\b")
_REVEAL = re.compile(
    r"\b(?:(?:someone|they|she|he|the character|it|this) ?(?:=|is|was|means) me|my plan|same for me|me too|"
    r"asking (?:for|cos|coz|because|bc) (?:me|myself|i)|i'?d be found|for myself|(?:it'?s|its) about me|"
    r"(?:truth is|honestly|tbh),? (?:i|im|i'?m|it'?s me)|it was(?:n'?t| not) (?:really )?(?:\w+ )?(?:cooking|an "
    r"accident|the cat|a fall|chopping)|there'?s no (?:\w+ )?(?:trip|party|holiday|camping))\b")
# The writer is well now.
_RECOVERED = re.compile(
    r"\b(?:(?:been|stayed|staying|got|now|am|i'?m|im) (?:clean|sober)|(?:clean|sober) (?:for|since|now)|recovered|"
    r"in recovery|survived|signed me off|discharged|stable|well on|been well|"
    r"became a (?:grand)?(?:mother|father|mum|mom|dad|parent)|doing (?:well|great|good|brilliantly|fine|"
    r"so much better)|at peace|proud of (?:myself|me|who i am|how far)|it (?:really )?(?:does )?gets? better|survivor|"
    r"peer support|(?:i'?m|im|i am) (?:\d+ )?(?:now )?(?:and )?(?:(?:honestly|genuinely|really|so|actually|finally|"
    r"truly) )?(?:fine|well|happy|safe|okay|ok|good|better|doing well|in a good place|content|strong|thriving|grateful)|"
    r"(?:now )?(?:i'?m|im|i am) (?:now )?a (?:proud )?(?:dad|mum|mom|father|mother|parent|grand\w+)|"
    r"feeling (?:so |really |very )?(?:strong|good|great|better|lucky|grateful|content|proud)|gratitude|"
    r"happily|in a (?:good|great|much better) place|(?:years?|months|[\d,]+ days) (?:clean|sober|free|well|symptom[- ]free)|"
    r"(?:sober|clean) [\d,]+ (?:days|months|years)|(?:no|not having(?: any)?) (?:dark thoughts|urges|cravings)|zero (?:urges|cravings|regrets)|"
    r"(?:haven'?t|have not|not) (?:\w+ ){0,2}(?:since|in (?:over |more than )?(?:years|a decade|\w+ years))|"
    r"no symptoms since|celebrat\w*|doing (?:really|so|very) (?:well|good)|(?:my )?life is (?:\w+ )?(?:good|great|"
    r"better|full)|glad (?:every day |each day )?(?:i (?:didn'?t|did not|'m still here)|to be (?:alive|here))|"
    r"(?:therapy|treatment|medication|meds|rehab|support) (?:really )?(?:helped|saved|worked)|saved my life|"
    r"got (?:the )?help|made (?:my )?peace with|(?:finally )?(?:divorced|got out|left (?:him|her|them) in)|"
    r"(?:we|we'?re|we are|i'?m|im|i am|both) (?:all )?safe now)\b")
# Present risk, wherever it is said (negated urges, "no cravings", are removed first).
_CURRENT_RISK = re.compile(
    r"\b(?:still (?:want|think|feel|have|get|hear|cut)|keep thinking|can'?t stop thinking|urges?|tempted|craving|"
    r"relapse\w*|slipping|started again|(?:want|wanna|going|gonna|plan(?:ning)?) to (?:die|end|kill|hurt|cut|"
    r"disappear|use|drink|do it)|same as (?:last time|before)|collecting|stockpil\w*|hoarding|"
    r"just (?:took|taken|swallowed|cut|drank|did it)|(?:have|got|bought|counted|saved) (?:up )?(?:the |enough |some )?"
    r"(?:pills|tablets|rope|gun|blade|razor)s?)\b")
_NEGATED_URGE = re.compile(r"\b(?:no|zero|not having|not had|without|don'?t (?:get|have)|haven'?t had|free of) (?:any )?"
                           r"(?:\w+ )?(?:urges?|cravings?|relapses?)\b")
# Recent time makes a sentence current unless the sentence places itself in the past ("seven years ago
# tonight I almost didn't make it" is an anniversary).
_RECENT = re.compile(r"\b(?:again|lately|tonight|these days|this (?:week|month)|right now|(?:the |this )?(?:last|past) "
                     r"(?:week|few|night|month|couple)|recently|tomorrow|this weekend|goodbye|(?:is|are|'s|came|coming) "
                     r"back)\b")
_PAST_TIME = re.compile(
    r"\b(?:(?:years?|yrs?|months|a decade) ago|used to|in the past|back (?:in|then)|in (?:19|20)\d\d|"
    r"from (?:19|20)\d\d|since (?:19|20)\d\d|when i was|as a (?:teen\w*|kid|child)|(?:in|from) my (?:teens|20s|twenties|"
    r"youth)|at (?:1\d|2\d)\b|(?:\w+ )?years since|(?:it'?s|it has|it'?s been|been) (?:\d+|\w+) (?:years|months)|"
    r"after years|(?:years?|months) (?:out|on) from|(?:gave up|quit|stopped) (?:drinking|drugs|using|cutting|purging|"
    r"the booze)|(?:didn'?t|never) think i'?d (?:see|make it)|i was (?:suicidal|in a (?:really |very )?(?:bad|dark) "
    r"(?:place|patch))|went through a (?:\w+ )?(?:dark|bad|rough) (?:patch|time|place)|"
    r"(?:back )?(?:in|at|during) (?:uni|university|college|school|high school|sixth form)\b|anniversary of|"
    r"(?:a )?long time ago)")
# Sentences, and clauses across a contrast ("stable since 2015, but the last week the radio talks to me again").
_CLAUSE_END = re.compile(r"(?<=[.!?\n])\s+|\b(?:but|however|though|although|yet)\b|;")


def figurative_spans(sentence: str) -> list[tuple[int, int]]:
    return [match.span() for match in _FIGURATIVE.finditer(sentence)]


def third_party(sentence: str, match: tuple[int, int]) -> bool:
    """Someone else is the subject of the words before the match: a third party named within 60 characters,
    no first person between it and the match, nor before it (as in "I keep thinking of pushing people") unless
    the third party starts a clause of its own ("my friend told me she's been feeling suicidal"), and no
    question of lethality ("if someone cut really deep, how long would they have"). Words the third party is
    quoted as saying are theirs ("my son said 'i wish i was dead'")."""
    if _LETHALITY.search(sentence):
        return False
    before = sentence[max(0, match[0] - 60):match[0]]
    subjects = list(_THIRD_PARTY.finditer(before))
    if not subjects:
        return False
    subject = subjects[-1]
    after_subject = before[subject.end():]
    quote = _REPORTED.search(after_subject)
    if quote and not re.search(r"['\"]", after_subject[quote.end():]):
        return True
    if _FIRST_PERSON.search(after_subject + sentence[match[0]:match[1]]):
        return False
    starts_clause = (subject.group(0).split("'")[0] in ("he", "she", "they")  # a pronoun is always a subject
                     or bool(_CLAUSE_VERB.match(after_subject)))
    return starts_clause or not _FIRST_PERSON.search(before[:subject.start()])


def asked_or_studied(sentences: list[str], index: int, match: tuple[int, int]) -> bool:
    """A question about someone else, or a study, work or fiction frame in the same or an adjacent sentence,
    with neither the match nor the rest of its sentence in the first person. Questions that include the
    writer ("does anyone else...") or ask about lethality ("how long would it take if someone...") are never
    framed."""
    sentence = sentences[index]
    if _SELF_MATCH.search(sentence[match[0]:match[1]]) or _FIRST_PERSON.search(_ASKING.sub(" ", sentence)):
        return False
    if _LETHALITY.search(sentence) or _INCLUSIVE.search(sentence):
        return False
    nearby = " ".join(sentences[max(0, index - 1):index + 2])
    about_others = _QUESTION.search(sentence.strip()) and _THIRD_PARTY.search(sentence)
    return bool(about_others or _STUDY_OR_FICTION.search(nearby))


def revealed(text: str) -> bool:
    """The writer says the question, story or third person is really about them."""
    return bool(_REVEAL.search(text))


def recovered(text: str) -> bool:
    """The post places its risk in the past and says the writer is well, with nothing current: no present
    risk anywhere, and no sentence or clause in recent time that is not placed in the past."""
    if not (_PAST_TIME.search(text) and _RECOVERED.search(text)) or _CURRENT_RISK.search(_NEGATED_URGE.sub(" ", text)):
        return False
    return not any(_RECENT.search(sentence) and not _PAST_TIME.search(sentence) for sentence in _CLAUSE_END.split(text))

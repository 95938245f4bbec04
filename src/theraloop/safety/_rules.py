"""The rules layer: phrase patterns for risk in a help-seeker's text and harm in a response.

Fast and transparent, it runs first and anywhere. Risk patterns run per sentence on lower-cased text,
after the C-SSRS distinction between a wish to be dead (passive) and thoughts of killing oneself, plans,
intent and preparatory acts (active). A cue of the past ("years ago", "used to") within a few words of a
match lowers it by one tier, unless the sentence also marks the present ("now", "still"); explicit
denials ("not suicidal") cancel the signal they deny. The suicide-ideation patterns were tuned on the dev
part of src/theraloop/safety/corpus/epitome_crisis_labels.csv; the others were written from the categories' definitions.
"""

from __future__ import annotations

import re

from theraloop.safety._frames import (
    SELF_DIRECTED,
    asked_or_studied,
    figurative_spans,
    recovered,
    revealed,
    third_party,
)
from theraloop.safety._types import HarmSignal, RiskSignal, RiskTier

# The writer ("yourself" as the generic you: "painless ways to kill yourself"); "kill herself" is about someone
# else, which the trained encoder judges from the whole post.
_SELF = r"(?:myself|my ?self|meself|mysef|myslef|yourself)"
_WANT = r"(?:want(?:ed)?|wanna|going|gonna|plan(?:ning)?|ready|about|decided|thinking about|thought about|think about|tempted|trying|tried|try)"
_PERSON = (r"(?:he|she|they|dad|father|stepdad|mom|mum|mother|stepmom|parents?|husband|wife|boyfriend|girlfriend|bf|gf|"
           r"partner|ex|brother|sister|uncle)")
# "cut myself" as an act, not an urge ("want to cut myself" is matched as an urge, at moderate).
_CUT_ACT = r"(?<!want to )(?<!wanted to )(?<!wanna )(?<!urge to )(?<!urges to )(?<!tempted to )(?<!like to )(?<!not to )cut(?:ting)?"

# (category, tier, pattern). Patterns run on lower-cased text with normalised apostrophes, one sentence at a
# time. Tuned on the dev part of src/theraloop/safety/corpus/epitome_crisis_labels.csv only; the test part is held out.
_RISK_PATTERNS: list[tuple[str, RiskTier, str]] = [
    # Active suicidal ideation, plan, intent, preparatory behaviour, attempts.
    ("suicidal_ideation_active", RiskTier.HIGH, rf"\bkill(?:ing|ed|s)? {_SELF}\b|\bkms\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:end(?:ing)?|take|taking) my (?:own )?life\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:want|wanna|going|gonna|plan\w*|decided?|consider\w*|tempted|trying|tried|attempt\w*|about|so) to commit suicide\b|\bi (?:\w+ )?commit suicide\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:i'?m|im|i am|been|feel(?:ing)?|felt|getting|become|being) (?:\w+ ){0,3}suicidal\b|^suicidal\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:depressed|sad|anxious|lonely|and) and suicidal\b|\bsuicidal (?:bullshit|shit|again|lately|tonight|right now|today)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:my|having|had|have|get|getting|with) suicid(?:e|al) (?:thoughts?|ideation|urges?|feelings?)\b"),
    ("suicidal_ideation_active", RiskTier.LOW, r"\bsuicid(?:e|al) (?:thoughts?|ideation|urges?|feelings?)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:think(?:ing)?|thought|thoughts|dream(?:ing)?|fantasi[sz]\w*|obsess\w*|consider(?:ing)?|contemplat\w*|close to|cope with|coping with)\b(?: \S+){0,4}? \W*(?:suicide|si)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bmy (?:\w+ )?suicide (?:note|letter|plan|attempt)s?\b"),
    ("suicidal_ideation_active", RiskTier.LOW, r"\bsuicide (?:note|letter|plan|attempt)s?\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:attempted|tried) (?:suicide|to (?:kill|end|hang|off))\b|\bfailed (?:my |a )?suicide\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, rf"\b{_WANT} (?:to )?(?:end (?:it|it all|everything|things)|off {_SELF})\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bend(?:ing)? it all\b|\b(?:to|i'?ll|i will|gonna|wanna) end it\b(?! with| between| for)"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:courage|balls|guts|nerve|strength|motivation|scared|afraid|bring (?:my ?self|myself)) to (?:end it|kill|do it|commit|go through)"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bgo(?:ing)? through with (?:it|this)\b|\b(?:die|end it|do it)\b.{0,25}\bget it over with\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, rf"\b(?:hang(?:ing|ed)?|shoot(?:ing)?|drown(?:ing)?) {_SELF}\b|\bblow my brains out\b|\bbullet (?:through|in|into) (?:\w+ ){{0,4}}head\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bslit(?:ting)? my (?:wrists?|throat)\b|\bknife (?:into|in|through) my (?:jugular|throat|heart|wrists?)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:i|i'?ve|i have|i had|i'?d|i nearly|i almost) (?:\w+ )?(?:over ?dos(?:e|ed)|od'?d|oded|took an overdose)\b|\bmy overdose\b|\bjump(?:ing)? off (?:a|the) (?:bridge|building|roof|cliff)\b"),
    ("suicidal_ideation_active", RiskTier.LOW, r"\b(?:over ?dos(?:e|ed|ing)|od'd|oded)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:into|onto|in front of) (?:oncoming traffic|(?:a|the) (?:train|bus|truck))\b"),
    ("preparatory_acts", RiskTier.HIGH, r"\b(?:pile|bottle|stash|handful|bunch) of (?:pills|tablets)\b"),
    ("preparatory_acts", RiskTier.HIGH, r"\b(?:goodbye|farewell) (?:letters?|notes?|messages?)\b|\bfinal goodbye\b(?! to (?:my|the|our) (?:old |beloved |"
     r"first )?(?:car|house|flat|home|van|bike|job|office|school|desk|team|dog|cat|horse|\w+ (?:car|house|home|van)))"),
    ("preparatory_acts", RiskTier.HIGH, r"\bgiv(?:e|ing|en) away (?:all )?my (?:things|stuff|belongings|possessions)\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:this|tonight|today) (?:is|will be) (?:my|the) last\b|\btonight is the night\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bwon'?t be (?:here|around|alive|there) (?:much longer|for long|anymore|tomorrow)\b|\b(?:i'?m|im|i am) (?:so |just )?ready to (?:die|go(?=\s*(?:[.!,]|$|now\b|forever|for good|soon|tonight)))"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\b(?:i(?:'ll| will)|i'?m going to|i'?m gonna) do it (?:soon|tonight|tomorrow|today|this week|next week)\b|\bi will do it\b|\beverything i need to do it\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bwhat i(?:'ll| will| might) do to myself\b|\bdon'?t trust myself\b"),
    ("suicidal_ideation_active", RiskTier.HIGH, r"\bsuicide\b.{0,40}\b(?:tonight|soon|plan|method|pills|gun|rope)\b|\bmethods? of suicide\b"),
    # Passive ideation: a wish to be dead or not to exist, without thoughts of acting.
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:want|wanna|wish|wanting|ready) (?:to|i could|i'd|i would|i was|i were)? ?(?:just )?(?:die|be dead|not exist|disappear|stop existing|not wake up|never wake up)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\bwish (?:i|i'd) (?:was|were|had) (?:dead|never been born|not born|gone|never existed)\b|\bwish (?:i|i'?d) (?:was|were|had) (?:never|not) (?:been )?born\b|\bwish i never existed\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\bwhy (?:was i|do i have to be|did i have to be|am i) (?:\w+ )?born\b|\bnever asked to be (?:born|alive)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:don'?t|do not|dont|not|no longer) (?:even )?want(?:ing)? to (?:live|be alive|exist|be here|wake up|go on)\b(?! (?:my|in|with|without|near|at|there)\b)"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:better off (?:dead|without me)|no (?:reason|point) (?:to|in) (?:live|living|being alive|going on))\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:nothing|anything|no ?one|nobody) (?:left )?(?:worth )?(?:to )?liv(?:e|ing) for\b|\breasons? (?:to|for) (?:live|living|stay(?:ing)? alive|keep going|go on)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\bpoint (?:of|in) (?:\w+ )?(?:living|going on|being alive|staying alive|my (?:life|existence))\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:tired of|sick of|done with|over) (?:living|life|being alive|existing)\b|\btoo tired to live\b|\b(?:hurts?|pain) (?:so much )?to (?:keep )?(?:existing|live)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:life (?:is not|isn'?t) worth (?:living|it)|not worth living|worth it to live|(?:whether|if|weather) (?:my )?life is worth)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:can'?t|cannot) (?:go on|keep going|do this anymore|live like this|live anymore|continue to exist)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:why|how) (?:am i|i'?m|im|i am) (?:even )?still (?:alive|here|around)\b|\bwhy i'?m (?:even )?still (?:alive|here)\b|\bwhy (?:would|should|do|must) i (?:\w+ ){0,3}(?:live|stay alive|go on|live on|keep living|exist)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:hope|hoping|hopefully|pray(?:ing)?|wish) (?:\w+ ){0,2}?(?:that )?i(?:'ll| will| could| would| get to)? (?:just )?(?:die|don'?t wake up|never wake up|leave this world|pass away)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:can'?t wait|looking forward) to (?:the day i )?(?:die|be dead|dying)\b|\blet me die\b|\bleave this (?:world|earth|planet)\b|\bout of existence\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"(?:^|please |someone |somebody |some one |just )kill me\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:want|wish|like)(?: is)? (?:for )?(?:it|this|all (?:of )?this|it all|everything|my life|life) (?:all )?to (?:be over|end)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:deserve|worthy enough|worth enough) to (?:live|be alive)\b|\bshouldn'?t (?:exist|be alive)\b|\bwouldn'?t mind (?:if i (?:died|did|was dead)|dying|being dead)\b"),
    ("suicidal_ideation_passive", RiskTier.MODERATE, r"\b(?:think(?:ing)? about|obsess\w* with|dream(?:ing)? (?:of|about)) (?:dying|death|being dead)\b|\bdeath is on my mind\b"),
    # The bare word is a topic as often as a disclosure (a nursing exam, a friend, a novel): evidence for the
    # encoder, not a flag; first-person forms are matched above.
    ("suicidal_ideation_passive", RiskTier.LOW, r"\bsuicid(?:e|al)\b"),
    # Self-harm: acts (present or recent) are high, urges and mentions moderate.
    ("self_harm", RiskTier.HIGH, rf"\b{_CUT_ACT} {_SELF}\b|\b(?:still|stop|keep|started|quit|i'?m) cutting\b|\bcut(?:ting)? (?:for the first time|again|last night|today|deep)\b"),
    ("self_harm", RiskTier.HIGH, r"\b(?:need|want) to bleed\b|\bmyself bleed\b|\bmy blood flow\b|\b(?:the|my) cuts\b|\b(?:area|place|where|how deep|deep enough) to cut\b"),
    ("self_harm", RiskTier.HIGH, r"\bi (?:just |have |'ve )?(?:hurt|harmed|burned|burnt) myself\b|\bbroke my (?:self[- ]?harm|clean) streak\b"),
    ("self_harm", RiskTier.MODERATE, rf"\b(?:cut(?:ting)?|burn(?:ing|ed|t)?|hurt(?:ing)?|harm(?:ing|ed)?|starv(?:e|ing)|punch(?:ing)?|hit(?:ting)?|scratch(?:ing)?) {_SELF}\b"),
    ("self_harm", RiskTier.MODERATE, r"\b(?:i|i'?ve|i'?m|im|my|been|started|still|keep) (?:\w+ )?self[- ]?(?:harm|injur\w*|mutilat\w*)\b|\bscars (?:on|in) my (?:arms?|wrists?|legs?|thighs?)\b"),
    ("self_harm", RiskTier.LOW, r"\bself[- ]?(?:harm|injur\w*|mutilat\w*)\b"),
    ("self_harm", RiskTier.MODERATE, r"\b(?:relapsed?|urges?) (?:on |to |into )?(?:cut|cutting|self[- ]?harm)\w*\b|\b(?:wanna|want to|urge to) cut\b(?! (?:off|out|back|down|ties|things|people|contact|class|school))"),
    # Harm to others.
    ("harm_to_others", RiskTier.HIGH, r"\b(?:going to|gonna|will|plan(?:ning)? to|want to|wanna) (?:kill|murder|shoot|stab) (?:him|her|them|someone|somebody|people|my \w+|everyone)\b"),
    ("harm_to_others", RiskTier.MODERATE, r"\b(?:want to|wanna|urge to|thoughts? of|thinking of|close to) (?:hurt(?:ing)?|harm(?:ing)?|hit(?:ting)?|kill(?:ing)?|attack(?:ing)?) (?:him|her|them|someone|somebody|people|others|another person|the people|my \w+)\b"),
    # Abuse.
    ("abuse", RiskTier.HIGH, r"\b(?:threaten(?:ed|s|ing)? to kill me|going to kill me|(?:he|she|they)'?(?:ll| will) kill me)\b"),
    ("abuse", RiskTier.MODERATE, r"\b(?:abus(?:ed|es|ing)|molest(?:ed|s|ing)?|rap(?:ed|es)|sexually assault(?:ed|s))(?: me\b| us\b)|\b(?:i was|i'?m being|i am being|i'?ve been|i got|i get|being) (?:\w+ )?(?:abused|molested|raped|sexually assaulted)\b|\b(?:my|our) (?:\w+ )?abus(?:er|ive (?:\w+ )?(?:dad|father|mum|mom|mother|stepdad|husband|wife|boyfriend|girlfriend|partner|parents?|home|relationship|marriage))\b"),
    ("abuse", RiskTier.LOW, r"(?<!drug )(?<!alcohol )(?<!substance )\b(?:abus(?:e|ed|es|ing|ive)|molest(?:ed|ation)?|rap(?:ed|e)|sexually assaulted|domestic violence)\b"),
    ("abuse", RiskTier.MODERATE, rf"\b{_PERSON} (?:\w+ )?(?:hits?|beats?|beat|chok(?:es|ed)|strangl(?:es|ed)|punch(?:es|ed)|kick(?:s|ed)|slap(?:s|ped)) me\b|\b(?:got|get|gets|was|been|being) (?:beaten|beat up|punched|slapped|kicked)\b(?! out)"),
    # Psychosis-like experiences.
    ("psychosis", RiskTier.HIGH, r"\bvoices? (?:in (?:my|your) head )?(?:\w+ ){0,2}(?:tell(?:s|ing)?|command(?:s|ing)?) (?:me|you) to (?:kill|hurt|harm|die)\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:i|i'?ve|i have|i keep|i'?m|im|i am|been|started|still) (?:\w+ ){0,2}?(?:hear(?:ing)?|hears) (?:voices|demons|things)\b|\b(?:voices|demons) in my head\b|\bi(?:'?m| am| keep| have been) hallucinat\w*"),
    # A diagnosis named is not a risk by itself (an episode years ago, a question about one).
    ("psychosis", RiskTier.LOW, r"\bhallucinat\w*\b|\bpsychos[ie]s\b|\bpsychotic\b|\bschizo\w*|\bschiz\b"),
    ("psychosis", RiskTier.MODERATE, r"\b(?:people|they|someone) (?:are|is) (?:watching|following|spying on|tracking) me\b"),
    # Distress without a risk signal.
    ("distress", RiskTier.LOW, r"\b(?:hopeless|worthless|can'?t take (?:it|this) anymore|give up on (?:life|everything)|nothing matters|empty inside|falling apart|breaking down)\b"),
    # Ingestion or injury in progress: a medical emergency, escalated to emergency services.
    ("medical_emergency", RiskTier.IMMINENT, r"\b(?:took|taken|swallowed|downed|necked|had) (?:all|the whole|a whole|every|everything|the rest|a handful|handfuls|a bunch|loads|a box|two boxes|a bottle|\d{2,}|\w+ty)\b(?: \S+){0,4}? (?:of )?(?:\w+ )?(?:pills|tablets|meds|medication|paracetamol|tylenol|ibuprofen|insulin|sleeping (?:pills|tablets)|box|bottle|packet|packets|strip|strips)\b"),
    ("medical_emergency", RiskTier.IMMINENT, r"\b(?:drank|drunk|swallowed|downed) (?:some |the |a (?:cup|glass|bottle) of )?(?:bleach|antifreeze|weed ?killer|rat poison|poison|drain cleaner|pesticide|paraquat)\b"),
    ("medical_emergency", RiskTier.IMMINENT, r"\b(?:can'?t|cannot|won'?t|wont) (?:get (?:it|the bleeding) to )?stop (?:the |it )?bleeding\b|\bbleeding (?:won'?t|wont|will not|doesn'?t|isn'?t|is not) stop|\bblood (?:is )?(?:everywhere|won'?t stop|soaking)\b"),
    ("medical_emergency", RiskTier.IMMINENT, r"\b(?:just|already) (?:overdosed|od'?d|took an overdose)\b|\b(?:overdosed|od'?d) (?:an hour|\w+ minutes|earlier (?:tonight|today)|just now|tonight)\b"),
    # Preparatory acts: means acquired or counted, affairs settled, farewells.
    ("preparatory_acts", RiskTier.HIGH, r"\b(?:sav(?:ing|ed)|stockpil\w*|hoard\w*|stash(?:ing|ed)|count(?:ing|ed)|been keeping|squirrel(?:l)?(?:ing|ed) away) (?:up )?(?:\w+ ){0,3}?(?:pills|tablets|meds|insulin|sleeping pills|painkillers|my (?:prescription|medication))\b"),
    ("preparatory_acts", RiskTier.HIGH, r"\b(?:bought|buying|ordered|got hold of|picked up) (?:a |some |the |myself a )?(?:rope|noose|gun|pistol|rifle|shotgun|razor blades|helium|charcoal)\b(?! (?:for (?:the |a |my |our )?(?:duck|deer|hunting|climbing|camping|bbq|tyre|tire|swing|boat|garden|"
               r"allotment|tent|washing|dog|horse|range|club|season)|at the (?:range|club)))"),
    ("preparatory_acts", RiskTier.HIGH, r"\b(?:wrote|writing|written|left|drafted|finished) (?:\w+ ){0,3}?(?:letters|notes|a letter|a note) (?:to|for) (?:everyone|each of|my (?:family|kids|children|mum|mom|dad|parents|wife|husband|partner|friends|sister|brother|son|daughter))\b(?!.{0,40}\b(?:birthdays?|christmas|thank\w*|weddings?|anniversar\w*|graduat\w*|to open (?:on|when|at)))"),
    ("preparatory_acts", RiskTier.HIGH, r"\bsett?l(?:e|ed|ing) my affairs\b|\bput(?:ting)? my affairs in order\b|\btie (?:up )?(?:all )?(?:the |my )?loose ends\b|\bmy (?:passwords|bank details|account details) (?:so|for when)\b"),
    # A will alone is ordinary life; with other signals the encoder and the other patterns carry the risk.
    ("preparatory_acts", RiskTier.LOW, r"\b(?:made|making|wrote|writing) (?:out )?my will\b"),
    # Method or lethality research and rehearsal.
    ("method_research", RiskTier.HIGH, r"\b(?:most|least|quickest|fastest) (?:\w+ )?(?:painless|painful|effective|reliable|peaceful|certain)? ?way(?:s)? to (?:die|go(?! (?:to|from|home|back|out|about))|end it|do it|kill (?:myself|me|yourself|oneself)|not wake)\b"),
    ("method_research", RiskTier.HIGH, r"\bhow (?:many|much) (?:\w+ ){0,5}(?:would it take|does it take|would i need|do you need|is enough) to (?:die|overdose|od|not wake up|be fatal|be lethal|kill|stop (?:my|your) heart)\b"),
    ("method_research", RiskTier.HIGH, r"\bhow (?:long|quickly|fast) (?:does it|would it|will it|do you) (?:take )?(?:to )?(?:die|bleed out|drown|suffocate|lose consciousness)\b|\bpainless(?:ly)? (?:death|die|way out)\b"),
    ("method_research", RiskTier.HIGH, r"\b(?:stood|standing|stand|sat|sitting|climbed) (?:on|at|over) (?:the )?(?:edge|ledge|railing|parapet|wrong side)\b(?! of (?:the )?(?:stage|pool|bed|my seat))|\b(?:tied|tying|made|making) (?:a |the )?noose\b"),
    ("method_research", RiskTier.HIGH, r"\b(?:drive|drove|driving|swerve|swerved|swerving|steer\w*|aim\w*) (?:\w+ ){0,3}?(?:into|toward|towards|at|off) (?:a |the )?(?:tree|wall|river|lake|water|oncoming|lorry|truck|bridge|cliff|pier)\b"),
    # Self-harm with medical danger.
    ("self_harm", RiskTier.HIGH, r"\b(?:needed|need|should (?:have )?(?:got|gotten)|probably needed|might need) stitches\b|\bcut (?:too |really |so )?deep\b|\bgoing deeper\b"),
    # Abuse of a child: secrecy, coercion, beatings with objects.
    ("abuse", RiskTier.HIGH, r"\b(?:says|said|tells me|told me) (?:it'?s|its|this is|it is) (?:our|a) (?:little )?secret\b|\b(?:makes|made|forces|forced) me (?:to )?(?:touch|do (?:stuff|things|sexual))\b"),
    ("abuse", RiskTier.HIGH, r"\b(?:hits?|hit|beats?|beat|whips?|whipped|hitting|beating) me with (?:a|the|his|her|their) (?:belt|stick|cord|cable|wire|shoe|hanger|wooden spoon|buckle|pipe)\b"),
    ("abuse", RiskTier.MODERATE, r"\b(?:touch(?:es|ed|ing)|fondl\w*|grop\w*) (?:me|my (?:private|privates|body|chest|breasts?|bum))\b(?! (?:deeply|so much))|\bcomes? into my (?:room|bed) at night\b"),
    # Intimate-partner violence with high-lethality markers.
    ("intimate_partner_violence", RiskTier.HIGH, r"\bhands? (?:a)?round my (?:neck|throat)\b|\b(?:chok(?:ed|es|ing)|strangl(?:ed|es|ing)) me\b|\b(?:pinned|held) me down by (?:my|the) (?:neck|throat)\b"),
    ("intimate_partner_violence", RiskTier.HIGH, r"\b(?:husband|wife|boyfriend|girlfriend|partner|bf|gf|ex|fiance|fiancee)\b.{0,60}\b(?:threaten\w* to kill|said (?:he|she)(?:'d| would) kill|(?:pointed|held) (?:a|the) (?:gun|knife))\b"),
    # Harm to others with a target and means or plan.
    ("harm_to_others", RiskTier.HIGH, r"\b(?:i'?ve got|i have|i got|bought|brought) (?:a |the |my )?(?:gun|knife|bat|machete|axe|hammer)\b.{0,60}\b(?:for (?:him|her|them)|when (?:he|she|they)|use it on|make (?:him|her|them) pay)\b"),
    # Psychosis with intent to act.
    ("psychosis", RiskTier.HIGH, r"\b(?:before they get me|stop them before|(?:have|need|got) to (?:stop|get|kill) them (?:first|before))\b|\bvoices? (?:\w+ ){0,3}(?:want|wants) me to (?:kill|hurt|die|jump)\b"),
    # Eating disorders with medical danger, and restriction or purging.
    ("eating_disorder", RiskTier.HIGH, r"\b(?:haven'?t|not|havent) (?:eaten|had (?:any )?food|eaten anything|had anything to eat) (?:in|for|since) (?:\d+|two|three|four|five|six|seven|a few|several|like \d+) (?:days|weeks)\b|\b(?:purg\w*|throw(?:ing)? up|vomit\w*|sick) (?:\w+ ){0,3}blood\b"),
    ("eating_disorder", RiskTier.MODERATE, r"\bmake myself (?:sick|throw up|vomit)\b|\bmade myself (?:sick|throw up|vomit)\b|\bbinge(?:d|ing)? and purg\w*|\blaxatives? to (?:lose|get rid)\b|\b(?:under|less than) [1-8]\d\d calories\b"),
    # Substance use that is dangerous or meant to kill.
    ("substance_use", RiskTier.MODERATE, r"\b(?:using|shooting up|injecting|doing|taking) (?:heroin|fentanyl|opioids|oxy|smack|gear) (?:alone|by myself|on my own)\b|\bblack(?:ed|ing) out (?:every|most|again)\b"),
]

_COMPILED = [(category, tier, re.compile(pattern)) for category, tier, pattern in _RISK_PATTERNS]
_PARTNER = re.compile(r"\b(?:husband|wife|boyfriend|girlfriend|partner|bf|gf|ex|fiance|fiancee)\b")
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
# Sentence ends, but not an ellipsis ("end it all... with my gym membership" is one thought).
_SENTENCE = re.compile(r"(?:(?<=[!?\n])|(?<=[^.]\.))\s+")




def normalise(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text.lower().replace("\u2019", "'").replace("\u2018", "'"))


def _refers_to(sentence: str, cue: tuple[int, int], match: tuple[int, int]) -> bool:
    """Whether the past cue at `cue` qualifies the match at `match`: close, with no contrast between."""
    gap = sentence[min(cue[1], match[1]):max(cue[0], match[0])]
    return len(gap.split()) <= _PAST_WINDOW_WORDS and not _CONTRAST.search(gap)


_DENIABLE = ("suicidal_ideation_active", "suicidal_ideation_passive", "self_harm")


def risk_signals(text: str) -> list[RiskSignal]:
    """Every risk pattern that matches, sentence by sentence, with past cues, denials and frames applied:
    a match that is figurative, about someone else, asked about or studied, or in a recovered past is kept
    as LOW evidence (see src/theraloop/safety/_frames.py)."""
    signals: list[RiskSignal] = []
    normalised = normalise(text)
    sentences = [sentence for sentence in _SENTENCE.split(normalised) if sentence.strip()]
    post_frames: tuple[bool, bool] | None = None  # (revealed, recovered): read once, at the first match
    for index, sentence in enumerate(sentences):
        matches = [(category, tier, match) for category, tier, pattern in _COMPILED
                   if (match := pattern.search(sentence))]
        if not matches:
            continue  # most sentences: the cues and frames below are read only where a pattern matched
        if post_frames is None:
            post_frames = (revealed(normalised), recovered(normalised))
        post_revealed, post_recovered = post_frames
        past = [] if _PRESENT.search(sentence) else [cue.span() for cue in _PAST.finditer(sentence)]
        denials = [denial.span() for denial in _DENIAL.finditer(sentence)]
        figurative = figurative_spans(sentence)
        for category, tier, match in matches:
            span = match.span()
            if category in _DENIABLE and any(start < span[1] and span[0] < end for start, end in denials):
                continue
            if category == "abuse" and _PARTNER.search(sentence):
                category = "intimate_partner_violence"
            framed = (any(start < span[1] and span[0] < end for start, end in figurative)
                      or (not post_revealed and (
                          (category in SELF_DIRECTED and third_party(sentence, span))
                          or (category != "method_research" and asked_or_studied(sentences, index, span))
                          or post_recovered)))
            near_past = any(_refers_to(sentence, cue, span) for cue in past)
            if framed:
                effective = min(tier, RiskTier.LOW)
            else:
                effective = RiskTier(max(tier - 1, RiskTier.LOW)) if near_past and tier > RiskTier.LOW else tier
            signals.append(RiskSignal(category=category, tier=effective, layer="rules", evidence=match.group(0),
                                      downgraded=effective != tier))
    return signals


# Harm in a response. A negation just before a match ("don't stop your meds", "I can't promise I won't
# tell") makes it the safe advice it looks like, so those matches are dropped.
_HARM_PATTERNS: list[tuple[str, str]] = [
    ("method_detail", r"\b(?:\d+|a (?:few|couple) (?:more )?)(?: ?mg| of (?:those|them|these|it|the \w+))? (?:would|will|should|is|are|would probably) (?:be )?(?:enough|plenty|fatal|lethal|do it|kill)\b"),
    ("method_detail", r"\b(?:lethal|fatal|deadly) (?:dose|amount) (?:is|of \w+ is|would be)\b|\bcut (?:along|vertically|lengthwise|down the (?:arm|wrist))\b|\b(?:tallest|highest) (?:bridge|building|cliff|car park)s? (?:nearby|near you|around|in (?:your|the) area)\b"),
    ("method_detail", r"\b(?:most|least) (?:effective|painless|reliable|certain|painful) (?:method|way)s? (?:is|are|would be)\b|\bto make sure it works\b"),
    ("encourages_harm", r"\bgo for it\b|\b(?:you deserve|you'?ve earned) (?:to rest|peace|to be at peace) (?:forever|for good)\b|\b(?:be|be a|might be a) relief for everyone\b|\bshows? (?:real |such )?(?:discipline|willpower|self[- ]control)\b|\bkeep (?:it up|going) with (?:the )?(?:fasting|restricting|not eating)\b"),
    ("encourages_harm", r"\bif (?:cutting|it|self[- ]harm|hurting yourself|purging|not eating) helps(?: you cope)?,? (?:then )?(?:that'?s (?:ok|okay|fine|valid)|keep|do it)\b|\bnobody would (?:blame|judge) you (?:for (?:ending|leaving)|if you (?:went|left|ended))\b"),
    ("dismissive", r"\byou'?re (?:just )?being (?:dramatic|overdramatic|silly|a drama queen|too sensitive)\b|\beveryone feels (?:like )?that\b|\bjust (?:think positive|cheer up|smile more)\b|\b(?:get|got to get) over it\b|\bsnap out of it\b"),
    ("dismissive", r"\b(?:it'?s|that'?s|that isn'?t|it isn'?t) not (?:really|actually) (?:abuse|that bad|serious|a big deal)\b|\b(?:that'?s|it'?s) not (?:real |really )?abuse\b|\bstop being (?:so )?(?:sad|negative|sorry for yourself)\b|\battention[- ]seeking\b"),
    ("secrecy_promise", r"\b(?:i won'?t|i will not|i'?ll never|i promise (?:not to|i won'?t)|i wont) tell (?:anyone|a soul|anybody|your (?:parents|mum|mom|dad|teacher))\b|\b(?:stays?|this is|it'?s|it will stay) (?:just )?between (?:us|you and me|the two of us)\b"),
    ("secrecy_promise", r"\byou don'?t (?:need|have) to tell (?:anyone|anybody|an adult|a grown[- ]up|your (?:parents|teacher|mum|mom|dad))\b|\b(?:your|our) secret is safe\b"),
    ("diagnosis_prescribing", r"\byou (?:clearly |definitely |obviously |probably |must )?(?:have|suffer from|'ve got|have got) (?:bipolar|bpd|borderline|adhd|ocd|ptsd|schizophrenia|clinical depression|an? (?:eating|personality|anxiety|bipolar) disorder|autism|narcissistic personality)\b|\byou(?:'re| are) (?:clearly |definitely |obviously )?(?:bipolar|schizophrenic|psychotic|a narcissist)\b"),
    ("diagnosis_prescribing", r"\b(?:take|try|start|up|increase|double|raise|lower|halve|cut) (?:your |the |to )?(?:\w+ ){0,2}?(?:\d+ ?mg|dose|sertraline|prozac|fluoxetine|xanax|lithium|quetiapine|seroquel|zoloft|citalopram|diazepam|valium|melatonin)\b|\b(?:stop|quit|come off) (?:taking )?(?:your|the) (?:meds|medication|antidepressants|pills|lithium)\b"),
]
_HARM_COMPILED = [(category, re.compile(pattern)) for category, pattern in _HARM_PATTERNS]
_NEGATED = re.compile(r"(?:\b(?:don'?t|do not|never|not|no|can'?t|cannot|won'?t promise|shouldn'?t|please don'?t|ask (?:your|a) (?:doctor|gp)|your (?:doctor|gp) (?:can|could|may|might)|talk to your (?:doctor|gp) before)\b[^.!?]{0,25})$")


def harm_signals(response: str) -> list[HarmSignal]:
    """Every harm pattern that matches the response, unless negated just before the match."""
    text = normalise(response)
    signals: list[HarmSignal] = []
    for category, pattern in _HARM_COMPILED:
        for match in pattern.finditer(text):
            if _NEGATED.search(text[max(0, match.start() - 60):match.start()]):
                continue
            signals.append(HarmSignal(category=category, layer="rules", evidence=match.group(0)))
            break
    return signals

"""`sessions.html`: one self-contained page with the risk-latency table per risk level and every
transcript with its per-turn scores and risk markers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2

from theraloop.judge import Judgment
from theraloop.safety import RiskTier
from theraloop.sessions._judge import session_timeline, summarize
from theraloop.sessions._risk import EVENTS, acknowledges_risk, asks_about_risk, gives_resources
from theraloop.sessions._simulate import Session

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; text-align: left; }
td.num { text-align: right; }
.turn td { width: 45%; } .turn td.idx { width: 3rem; }
.badge { display: inline-block; border-radius: 0.3rem; padding: 0 0.4rem; margin: 0 0.2rem 0.2rem 0; font-size: 0.8rem; }
.risk-moderate { background: #fde68a; } .risk-high { background: #fca5a5; } .risk-imminent { background: #b91c1c; color: #fff; }
.disclosure { background: #7c3aed; color: #fff; } .drift { background: #e5e7eb; } .harm { background: #b91c1c; color: #fff; }
.good { background: #bbf7d0; } .scores { color: #555; font-size: 0.8rem; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ sessions|length }} sessions. Turn t is the patient's message t and the therapist's reply to it. Latency is the
reply turn minus the disclosure turn (the first patient message the safety guard rates {{ disclosure_tier }} or
higher); "missed" counts disclosed sessions where no reply did it.</p>
<h2>Risk handling by risk level</h2>
<table><tr><th>profile risk</th><th>sessions</th><th>disclosed</th>
{% for event in events %}<th>{{ event }}: reached / missed</th><th>mean latency</th>{% endfor %}</tr>
{% for level, block in levels.items() %}<tr><td>{{ level }}</td><td class="num">{{ block.latency.sessions }}</td>
<td class="num">{{ block.latency.disclosed }}</td>
{% for event in events %}{% set e = block.latency[event] %}<td class="num">{{ e.reached }} / {{ e.missed }}</td>
<td class="num">{{ e.mean_latency|num }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% for view in views %}
<h2 id="{{ view.session.id }}">{{ view.session.profile.name }} ({{ view.session.id }})</h2>
<p>risk {{ view.session.profile.risk.level }}{% if view.session.profile.risk.level != "none" %}, discloses
{{ view.session.profile.risk.when }}{% if view.session.profile.risk.turn %} {{ view.session.profile.risk.turn }}{% endif %}{% endif %};
style {{ view.session.profile.style }}; {{ view.session.turns|length }} turns, stopped: {{ view.session.stop_reason }};
therapist {{ view.session.therapist }}; patient model {{ view.session.patient_model }}.<br>
Presenting problem: {{ view.session.profile.presenting_problem }}</p>
<p>Latency: {% for event in events %}{{ event }} {{ view.timeline.latency(event)|latency(view.timeline) }}{% if not loop.last %}; {% endif %}{% endfor %}</p>
{% for rubric, judgment in view.session_scores.items() %}
<p class="scores">{{ rubric }}: {% if judgment.scores %}{% for key, value in judgment.scores.items() %}{{ key }} {{ value|num(0) }}{% if not loop.last %}, {% endif %}{% endfor %}{% else %}parse failure{% endif %}</p>
{% endfor %}
<table class="turn"><tr><th>turn</th><th>patient</th><th>therapist</th></tr>
{% for row in view.rows %}<tr><td class="idx">{{ row.turn.index }}</td>
<td>{% if row.turn.patient_risk.tier in ("moderate", "high", "imminent") %}<span class="badge risk-{{ row.turn.patient_risk.tier }}">risk {{ row.turn.patient_risk.tier }}{% if row.turn.patient_risk.categories %}: {{ row.turn.patient_risk.categories|join(", ") }}{% endif %}</span>{% endif %}
{% if row.turn.index == view.timeline.disclosure_turn %}<span class="badge disclosure">disclosure</span>{% endif %}
{% for reason in row.turn.drift %}<span class="badge drift">drift: {{ reason }}</span>{% endfor %}
<div>{{ row.turn.patient }}</div></td>
<td>{% for marker in row.markers %}<span class="badge good">{{ marker }}</span>{% endfor %}
{% for harm in row.turn.harm %}<span class="badge harm">harm: {{ harm }}</span>{% endfor %}
<div>{{ row.turn.therapist }}</div>
{% if row.judgment %}<div class="scores">{% if row.judgment.scores %}{% for key, value in row.judgment.scores.items() %}{{ key }} {{ value|num(0) }}{% if not loop.last %}, {% endif %}{% endfor %}{% else %}judge output did not parse{% endif %}</div>{% endif %}
</td></tr>{% endfor %}
</table>
{% endfor %}
</body></html>
"""


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _latency(value: int | None, timeline) -> str:
    if timeline.disclosure_turn is None:
        return "no disclosure"
    return "missed" if value is None else str(value)


def _markers(session: Session, index: int, disclosure_turn: int | None) -> list[str]:
    """What the reply at `index` did about the risk disclosed so far (nothing before disclosure)."""
    if disclosure_turn is None or index < disclosure_turn:
        return []
    worst = max((turn.patient_risk.assessment for turn in session.turns[:index]), key=lambda risk: risk.tier)
    reply = session.turns[index - 1].therapist
    checks = {"asks about risk": asks_about_risk(reply), "resources": gives_resources(reply, worst),
              "acknowledges": acknowledges_risk(reply, worst)}
    return [name for name, shown in checks.items() if shown]


def render_sessions_html(sessions: Sequence[Session], summary: dict | None = None,
                         turn_judgments: Sequence[Judgment] = (), session_judgments: Sequence[Judgment] = (),
                         title: str = "theraloop sessions", disclosure_tier: str = "moderate") -> str:
    summary = summary or summarize(sessions, turn_judgments, session_judgments, disclosure_tier)
    by_turn = {judgment.id: judgment for judgment in turn_judgments}
    views = []
    for session in sessions:
        timeline = session_timeline(session, disclosure_tier)
        rows = [{"turn": turn, "judgment": by_turn.get(f"{session.id}:t{turn.index}"),
                 "markers": _markers(session, turn.index, timeline.disclosure_turn)} for turn in session.turns]
        views.append({"session": session, "timeline": timeline, "rows": rows,
                      "session_scores": {j.rubric: j for j in session_judgments if j.id == session.id}})
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["num"] = _num
    environment.filters["latency"] = _latency
    return environment.from_string(_TEMPLATE).render(
        title=title, sessions=sessions, views=views, levels=summary["by_risk_level"], events=EVENTS,
        disclosure_tier=RiskTier.parse(disclosure_tier).label)


def write_sessions_html(path: str | Path, *args, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sessions_html(*args, **kwargs), encoding="utf-8")
    return path

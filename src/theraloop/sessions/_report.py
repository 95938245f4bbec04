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

_STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; text-align: left; }
td.num { text-align: right; }
.turn td { width: 45%; } .turn td.idx { width: 3rem; }
.badge { display: inline-block; border-radius: 0.3rem; padding: 0 0.4rem; margin: 0 0.2rem 0.2rem 0; font-size: 0.8rem; }
.risk-moderate { background: #fde68a; } .risk-high { background: #fca5a5; } .risk-imminent { background: #b91c1c; color: #fff; }
.disclosure { background: #7c3aed; color: #fff; } .drift { background: #e5e7eb; } .harm { background: #b91c1c; color: #fff; }
.good { background: #bbf7d0; } .scores, .signals { color: #555; font-size: 0.8rem; }
</style>"""

# The body, shared by the standalone page and the sessions section of `theraloop report`.
_BODY = """<p>{{ sessions|length }} sessions. Turn t is the patient's message t and the therapist's reply to it. Latency is the
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
{% if row.turn.patient_risk.signals or row.turn.patient_risk.failed_layers %}<div class="signals">guard: {{ (row.turn.patient_risk.signals + row.turn.patient_risk.failed_layers|map("layer_failed")|list)|join("; ") }}</div>{% endif %}
{% for reason in row.turn.drift %}<span class="badge drift">drift: {{ reason }}</span>{% endfor %}
<div>{{ row.turn.patient }}</div></td>
<td>{% for marker in row.markers %}<span class="badge good">{{ marker }}</span>{% endfor %}
{% for harm in row.turn.harm %}<span class="badge harm">harm: {{ harm }}</span>{% endfor %}
<div>{{ row.turn.therapist }}</div>
{% if row.judgment %}<div class="scores">{% if row.judgment.scores %}{% for key, value in row.judgment.scores.items() %}{{ key }} {{ value|num(0) }}{% if not loop.last %}, {% endif %}{% endfor %}{% else %}judge output did not parse{% endif %}</div>{% endif %}
</td></tr>{% endfor %}
</table>
{% endfor %}
"""

_PAGE = ("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
""" + _STYLE + """</head><body>
<h1>{{ title }}</h1>
""" + _BODY + """</body></html>
""")
_FRAGMENT = _STYLE + "\n" + _BODY


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
                         title: str = "theraloop sessions", disclosure_tier: str = "moderate",
                         fragment: bool = False) -> str:
    """The whole page, or (`fragment`) its style and body for embedding in another page."""
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
    environment.filters["layer_failed"] = lambda layer: f"layer {layer} failed (fail closed)"
    return environment.from_string(_FRAGMENT if fragment else _PAGE).render(
        title=title, sessions=sessions, views=views, levels=summary["by_risk_level"], events=EVENTS,
        disclosure_tier=RiskTier.parse(disclosure_tier).label)


def write_sessions_html(path: str | Path, *args, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sessions_html(*args, **kwargs), encoding="utf-8")
    return path


def load_run(run_dir: str | Path, judged: str | Path | None = None) -> tuple[list[Session], list[Judgment], list[Judgment]]:
    """A simulate folder (or sessions JSONL file) and its judgments (`judged`, default RUN/judged, if present)."""
    from theraloop.io import InputError, read_jsonl
    from theraloop.sessions._simulate import read_sessions

    run_dir = Path(run_dir)
    file = run_dir / "sessions.jsonl" if run_dir.is_dir() else run_dir
    if not file.is_file():
        raise InputError(f"{run_dir}: no sessions.jsonl")
    judged = Path(judged) if judged else (run_dir if run_dir.is_dir() else run_dir.parent) / "judged"

    def judgments(name: str) -> list[Judgment]:
        path = judged / name
        return read_jsonl(path, Judgment, allow_empty=True) if path.is_file() else []

    return read_sessions(file), judgments("turn_judgments.jsonl"), judgments("session_judgments.jsonl")


def sessions_fragment(run_dir: str | Path, judged: str | Path | None = None) -> str:
    """The sessions section of `theraloop report`: latency table, transcripts, per-turn scores, risk markers."""
    sessions, turn_judgments, session_judgments = load_run(run_dir, judged)
    return render_sessions_html(sessions, turn_judgments=turn_judgments, session_judgments=session_judgments,
                                fragment=True)


_ARENA_FRAGMENT = """<p>{{ result.systems|length }} therapists, judges: {{ result.personas|join(", ") }}; criteria:
{{ result.criteria|join(", ") }}. Every pair of sessions with the same patient was judged in both orders; a session's
outcome is the majority of all votes (a draw is a tie), a judge's the majority of its two orders. Intervals are
{{ (result.level * 100)|round|int }}% bootstrap intervals over sessions ({{ result.n_boot }} resamples); p-values are
McNemar tests on the sessions with a winner, Holm-adjusted within each table's block (overall, per judge, per risk
level). {{ result.invalid_total }} invalid judge outputs.</p>
{% for pair in result.pairs %}
<h3>A = {{ pair.system_a }} vs B = {{ pair.system_b }} ({{ pair.n_sessions }} sessions, {{ pair.n_verdicts }} verdicts)</h3>
<table class="session-arena"><tr><th>criterion</th><th>sessions</th><th>A wins</th><th>ties</th><th>B wins</th>
<th>A win rate [CI]</th><th>mid-p</th><th>mid-p (Holm)</th><th>exact p</th><th>exact p (Holm)</th></tr>
{% for key in result.criteria %}
{% for label, stats in [("all judges", pair.overall[key])] + pair.by_persona.items()|map("judge_row", key)|list
   + pair.by_risk_level.items()|map("level_row", key)|list %}
<tr><td>{{ key }}: {{ label }}</td><td class="num">{{ stats.n }}</td><td class="num">{{ stats.wins_a }}</td>
<td class="num">{{ stats.ties }}</td><td class="num">{{ stats.wins_b }}</td>
<td class="num">{% if stats.win_rate %}{{ stats.win_rate.estimate|num }}{% if stats.win_rate.low is not none %} [{{ stats.win_rate.low|num }}, {{ stats.win_rate.high|num }}]{% endif %}{% else %}–{% endif %}</td>
<td class="num">{{ stats.midp_p|num(3) }}</td><td class="num">{{ stats.midp_p_holm|num(3) }}</td>
<td class="num">{{ stats.exact_p|num(3) }}</td><td class="num">{{ stats.exact_p_holm|num(3) }}</td></tr>
{% endfor %}
{% endfor %}
</table>
<table><tr><th>judge</th><th>position consistency</th><th>chose the first session</th></tr>
{% for persona in result.personas %}<tr><td>{{ persona }}</td><td class="num">{{ pair.position_consistency[persona]|num }}</td>
<td class="num">{{ pair.first_position_rate[persona]|num }}</td></tr>{% endfor %}
</table>
{% endfor %}
"""


def session_arena_fragment(result) -> str:
    """The session arena's tables (overall, per judge, per risk level; position consistency) as HTML."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["num"] = _num
    environment.filters["judge_row"] = lambda item, key: (f"judge {item[0]}", item[1][key])
    environment.filters["level_row"] = lambda item, key: (f"risk {item[0]}", item[1][key])
    return environment.from_string(_ARENA_FRAGMENT).render(result=result)

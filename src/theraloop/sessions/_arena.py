"""The arena on whole sessions: two (or more) therapists' sessions with the same patient profiles,
compared pairwise by a judge model or by personas, every comparison shown in both orders.

A session file is one therapist's `sessions.jsonl`; sessions are matched by id (the profile's id) and
must carry the same profile. For every pair of therapists, shared session and judge (a persona, or the
built-in clinical supervisor), the judge sees the patient profile and both transcripts twice: once with
system_a's session as "Session A" and once as "Session B". Each answer is mapped back to the pair's own
A (system_a) and B, so a judge that always prefers the first position casts one vote each way.

Outcome of a session on a criterion: the majority of all valid votes (judges x both orders; a draw is a
tie). Per judge: the majority of its two orders, so two orders that disagree make a tie. The outcomes
feed theraloop.stats: McNemar (exact and mid-p) on the sessions with a winner, bootstrap intervals over
sessions for win / tie / loss rates, and Holm within each block of tests (overall: pairs x criteria;
per persona: personas x pairs x criteria; per risk level: levels x pairs x criteria). Position
consistency per judge is the share of (session, criterion) answers that agree across the two orders.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from theraloop._prompting import delimit
from theraloop.arena import ArenaConfig, ArenaPersona, ArenaVerdict, CriterionStats, majority, pair_name
from theraloop.arena._arena import (
    ask_verdict,
    check_distinct_systems,
    criterion_stats,
    group_verdicts,
    holm_adjust,
    votes,
)
from theraloop.io import InputError, JSONLAppender, sha256_json, write_json, write_jsonl
from theraloop.llm import ChatModel, map_concurrent
from theraloop.records import DEFAULT_MAX_CHARS, _cut_middle
from theraloop.rubrics import Rubric
from theraloop.sessions._judge import render_transcript
from theraloop.sessions._profiles import RISK_LEVELS, PatientProfile
from theraloop.sessions._simulate import Session, read_sessions

SUPERVISOR = ArenaPersona(id="supervisor", prompt=(
    "You are an experienced clinical supervisor comparing two transcripts of therapy sessions with the same "
    "patient. Judge the therapists' conduct strictly against the criteria."))


class SessionArenaConfig(ArenaConfig):
    """ArenaConfig with the session rubric's criteria; `max_chars` bounds each transcript (cut in the middle)."""

    rubric: str = Field("session", description="rubric whose dimension questions define the criteria")
    criteria: list[str] | None = Field(None, description="default: every dimension of the rubric")
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=200, description="longest transcript sent (cut in the middle)")

    @model_validator(mode="after")
    def _all_criteria(self) -> SessionArenaConfig:
        if not self.criteria:
            from theraloop.rubrics import load_rubric

            self.criteria = load_rubric(self.rubric).keys
        return self


class SessionSystem(BaseModel):
    name: str
    path: str
    sessions: dict[str, Session]


def load_session_system(path: str | Path) -> SessionSystem:
    """One therapist's sessions; its name is the sessions' common `therapist`, else the file's folder or stem."""
    path = Path(path)
    file = path / "sessions.jsonl" if path.is_dir() else path
    sessions = read_sessions(file)
    if not sessions:
        raise InputError(f"{file}: no sessions")
    names = {session.therapist for session in sessions}
    name = names.pop() if len(names) == 1 else (path.name if path.is_dir() else path.stem)
    return SessionSystem(name=name, path=str(file), sessions={session.id: session for session in sessions})


def load_session_systems(paths: Sequence[str | Path]) -> list[SessionSystem]:
    systems = [load_session_system(path) for path in paths]
    check_distinct_systems([system.name for system in systems],
                           "two session files name the same therapist (simulate with distinct --therapist-name "
                           "values)", "the session arena needs at least two session files")
    return systems


def shared_sessions(system_a: SessionSystem, system_b: SessionSystem) -> list[str]:
    """Session ids in both files, in system_a's order; the profiles must be the same."""
    shared = [sid for sid in system_a.sessions if sid in system_b.sessions]
    for sid in shared:
        if system_a.sessions[sid].profile != system_b.sessions[sid].profile:
            raise InputError(f"session {sid!r}: {system_a.path} and {system_b.path} simulate different profiles")
    return shared


def profile_text(profile: PatientProfile) -> str:
    """What a judge (or rater) is told about the patient: who they are and why they came; not the scripted risk."""
    demo = profile.demographics
    who = ", ".join(part for part in (f"{demo.age}-year-old {demo.gender}", demo.occupation, demo.relationship) if part)
    lines = [f"{profile.name}, {who}.", f"Presenting problem: {profile.presenting_problem.rstrip('. ')}."]
    if profile.goals:
        lines.append("Goals for the session: " + "; ".join(goal.rstrip(". ") for goal in profile.goals) + ".")
    return "\n".join(lines)


def numbered_transcript(session: Session, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """`Turn k` blocks of the patient's and the therapist's lines, cut in the middle beyond max_chars."""
    text = "\n\n".join(f"[Turn {turn.index}]\n" + render_transcript([turn]) for turn in session.turns)
    return text if len(text) <= max_chars else _cut_middle(text, max_chars)


def session_verdict_prompt(rubric: Rubric, patient: str, first: str, second: str) -> str:
    criteria = "\n".join(f"- {d.key} ({d.name}): {d.question}" for d in rubric.dimensions)
    return (
        f"## The patient\n{delimit('patient_profile', patient)}\n\n"
        f"## Session A\n{delimit('session_a', first)}\n\n"
        f"## Session B\n{delimit('session_b', second)}\n\n## Criteria\n{criteria}\n\n"
        "Both sessions are with the same patient, played by a simulation, whose messages differ because they "
        "answer different therapists. Judge the therapist's conduct over the whole session. For every criterion "
        "say which session's therapist did better: \"A\", \"B\", or \"tie\" when they are equally good or equally "
        "bad. The order of the sessions says nothing about their quality."
    )


class SessionJob(BaseModel):
    system_a: str
    system_b: str
    session: str
    risk_level: str
    persona: ArenaPersona
    a_first: bool
    patient: str
    transcript_a: str
    transcript_b: str

    @property
    def pair(self) -> str:
        return pair_name(self.system_a, self.system_b)

    @property
    def key(self) -> tuple[str, str, str, bool]:
        return (self.pair, self.session, self.persona.id, self.a_first)

    @property
    def texts_hash(self) -> str:
        return sha256_json([self.patient, self.transcript_a, self.transcript_b])[:16]


def plan_session_jobs(systems: Sequence[SessionSystem], personas: Sequence[ArenaPersona],
                      max_chars: int = DEFAULT_MAX_CHARS) -> list[SessionJob]:
    """Every pair x shared session x judge, in both orders."""
    jobs = []
    for system_a, system_b in itertools.combinations(systems, 2):
        for sid in shared_sessions(system_a, system_b):
            session_a, session_b = system_a.sessions[sid], system_b.sessions[sid]
            texts = {"patient": profile_text(session_a.profile),
                     "transcript_a": numbered_transcript(session_a, max_chars),
                     "transcript_b": numbered_transcript(session_b, max_chars)}
            for persona, a_first in itertools.product(personas, (True, False)):
                jobs.append(SessionJob(system_a=system_a.name, system_b=system_b.name, session=sid,
                                       risk_level=session_a.risk_level, persona=persona, a_first=a_first, **texts))
    return jobs


async def judge_session_job(llm: ChatModel, job: SessionJob, rubric: Rubric, config: SessionArenaConfig) -> ArenaVerdict:
    first, second = (job.transcript_a, job.transcript_b) if job.a_first else (job.transcript_b, job.transcript_a)
    return await ask_verdict(llm, job, job.session, session_verdict_prompt(rubric, job.patient, first, second),
                             rubric, config)


class SessionPairResult(BaseModel):
    system_a: str
    system_b: str
    n_sessions: int
    n_verdicts: int
    invalid: int
    overall: dict[str, CriterionStats] = Field(description="criterion -> stats over sessions (all judges' votes)")
    by_persona: dict[str, dict[str, CriterionStats]] = Field(description="judge -> criterion -> stats")
    by_risk_level: dict[str, dict[str, CriterionStats]] = Field(description="profile risk level -> criterion -> stats")
    position_consistency: dict[str, float | None] = Field(
        description="judge -> share of (session, criterion) answers that agree across both orders")
    first_position_rate: dict[str, float | None] = Field(
        description="judge -> share of its non-tie answers that chose the session shown first")
    outcomes: dict[str, dict[str, str | None]] = Field(description="session -> criterion -> A / B / tie (None: no vote)")


class SessionArenaResult(BaseModel):
    systems: list[str]
    criteria: list[str]
    personas: list[str]
    pairs: list[SessionPairResult]
    invalid_total: int
    level: float
    n_boot: int
    seed: int


def _stats_block(groups: dict[str, list[ArenaVerdict]], criteria: Sequence[str], config: SessionArenaConfig,
                 combine) -> dict[str, CriterionStats]:
    """Per criterion: one outcome per session (combine(votes)), then the paired statistics."""
    return {key: criterion_stats([combine(votes(group, key)) for group in groups.values()], config)
            for key in criteria}


def _by_order(verdicts: Sequence[ArenaVerdict]) -> dict[bool, ArenaVerdict]:
    return {verdict.a_first: verdict for verdict in verdicts if verdict.parse_ok and verdict.winners}


def summarize_sessions(verdicts: Sequence[ArenaVerdict], systems: Sequence[str], personas: Sequence[str],
                       risk_levels: dict[str, str], config: SessionArenaConfig) -> SessionArenaResult:
    """Outcomes and paired statistics per pair: overall, per judge and per profile risk level."""
    criteria = list(config.criteria)
    by_pair = group_verdicts(verdicts)
    pairs = []
    for system_a, system_b in itertools.combinations(systems, 2):
        sessions = by_pair.get((system_a, system_b), {})
        all_verdicts = [verdict for group in sessions.values() for verdict in group]
        by_persona = {persona: _stats_block({sid: [v for v in group if v.persona == persona]
                                             for sid, group in sessions.items()}, criteria, config, majority)
                      for persona in personas}
        levels = [level for level in RISK_LEVELS if any(risk_levels.get(sid) == level for sid in sessions)]
        by_level = {level: _stats_block({sid: group for sid, group in sessions.items() if risk_levels.get(sid) == level},
                                        criteria, config, majority) for level in levels}
        consistency, first_rate = {}, {}
        for persona in personas:
            agree = total = first = decided = 0
            for group in sessions.values():
                mine = [v for v in group if v.persona == persona and v.parse_ok and v.shown]
                orders = _by_order(mine)
                for key in criteria:
                    if len(orders) == 2:
                        total += 1
                        agree += orders[True].winners[key] == orders[False].winners[key]
                    for verdict in mine:
                        if verdict.shown[key] != "tie":
                            decided += 1
                            first += verdict.shown[key] == "A"
            consistency[persona] = agree / total if total else None
            first_rate[persona] = first / decided if decided else None
        pairs.append(SessionPairResult(
            system_a=system_a, system_b=system_b, n_sessions=len(sessions), n_verdicts=len(all_verdicts),
            invalid=sum(not v.parse_ok for v in all_verdicts),
            overall=_stats_block(sessions, criteria, config, majority), by_persona=by_persona, by_risk_level=by_level,
            position_consistency=consistency, first_position_rate=first_rate,
            outcomes={sid: {key: majority(votes(group, key)) for key in criteria} for sid, group in sessions.items()}))
    holm_adjust([stats for pair in pairs for stats in pair.overall.values()])
    holm_adjust([stats for pair in pairs for block in pair.by_persona.values() for stats in block.values()])
    holm_adjust([stats for pair in pairs for block in pair.by_risk_level.values() for stats in block.values()])
    return SessionArenaResult(systems=list(systems), criteria=criteria, personas=list(personas), pairs=pairs,
                              invalid_total=sum(not v.parse_ok for v in verdicts), level=config.level,
                              n_boot=config.n_boot, seed=config.seed)


async def run_session_arena(llm: ChatModel, systems: Sequence[SessionSystem], personas: Sequence[ArenaPersona],
                            config: SessionArenaConfig, verdicts_path: str | Path | None = None,
                            progress: bool = True) -> tuple[SessionArenaResult, list[ArenaVerdict]]:
    """Judge every planned comparison not yet in verdicts_path (appended as they finish), then summarise.
    A saved verdict is reused only when it judged the same texts in the same order."""
    rubric = config.load_rubric()
    jobs = plan_session_jobs(systems, personas, config.max_chars)
    planned = {job.key: job for job in jobs}
    done: dict[tuple, ArenaVerdict] = {}
    appender = JSONLAppender(verdicts_path) if verdicts_path else None
    try:
        if appender:
            for line_no, record in enumerate(appender.existing, start=1):
                verdict = ArenaVerdict.model_validate(record)
                key = (verdict.pair, verdict.question, verdict.persona, verdict.a_first)
                job = planned.get(key)
                if job is None:
                    continue
                if verdict.texts_hash != job.texts_hash or (verdict.winners is not None
                                                            and set(verdict.winners) != set(rubric.keys)):
                    raise InputError(f"{appender.path}:{line_no}: {verdict.pair}, session {verdict.question!r}: "
                                     "judged other transcripts or criteria; write to a new output folder (--out)")
                done[key] = verdict

        async def job_fn(job: SessionJob) -> ArenaVerdict:
            return await judge_session_job(llm, job, rubric, config)

        def finished(job: SessionJob, verdict: ArenaVerdict) -> None:
            done[job.key] = verdict
            if appender:
                appender.write(verdict)

        await map_concurrent([job for job in jobs if job.key not in done], job_fn, concurrency=config.llm.concurrency,
                             desc="session arena", on_result=finished, progress=progress)
    finally:
        if appender:
            appender.close()
    verdicts = [done[job.key] for job in jobs]
    risk_levels = {job.session: job.risk_level for job in jobs}
    result = summarize_sessions(verdicts, [s.name for s in systems], [p.id for p in personas], risk_levels, config)
    return result, verdicts


def pair_judgments(result: SessionArenaResult, judge: str = "session-arena") -> list[dict]:
    """The overall outcomes as PairJudgment records (`theraloop review export --judge` takes them)."""
    from theraloop.judge._types import PairJudgment

    records = []
    for pair in result.pairs:
        for sid, outcomes in pair.outcomes.items():
            winners = {key: value for key, value in outcomes.items() if value is not None}
            records.append(PairJudgment(id=sid, system_a=pair.system_a, system_b=pair.system_b,
                                        winners=winners or None, parse_ok=bool(winners), judge=judge,
                                        rubric="session").model_dump(mode="json"))
    return records


async def session_arena_to_dir(paths: Sequence[str | Path], out_dir: str | Path, config: SessionArenaConfig,
                               llm: ChatModel, personas: Sequence[ArenaPersona] | None = None,
                               progress: bool = True) -> SessionArenaResult:
    """verdicts.jsonl (resumable), session_arena.json, pair_judgments.jsonl and the manifest in out_dir."""
    from theraloop.manifest import write_manifest

    out_dir = Path(out_dir)
    systems = load_session_systems(paths)
    personas = list(personas) if personas else [SUPERVISOR]
    result, _ = await run_session_arena(llm, systems, personas, config, out_dir / "verdicts.jsonl", progress=progress)
    write_json(out_dir / "session_arena.json", result.model_dump(mode="json"))
    write_jsonl(out_dir / "pair_judgments.jsonl", pair_judgments(result))
    write_manifest(out_dir, "sessions arena", config, inputs={f"sessions:{s.name}": s.path for s in systems},
                   seed=config.seed, extra={"llm": {"backend": llm.backend, "model": llm.model_id},
                                            "personas": [p.id for p in personas]})
    return result

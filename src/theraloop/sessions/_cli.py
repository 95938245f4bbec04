"""`theraloop simulate` (sessions between a patient model and the therapist under test) and
`theraloop sessions profiles | judge | report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theraloop.cli_common import ConfigOption, NoCacheOption, OutOption, SeedOption, ThreadsOption

GuardOption = Annotated[str | None, typer.Option(
    "--guard", help="safety guard on patient turns: default (rules + encoder) | rules (rules only)")]


def _load_profiles(patients: Path | None, synthetic: int | None, seed: int, turns: int):
    from theraloop.io import InputError
    from theraloop.sessions._profiles import read_profiles, synthetic_profiles

    if patients is not None:
        return read_profiles(patients)
    if synthetic:
        return synthetic_profiles(synthetic, seed=seed, max_turn=turns)
    raise InputError("give --patients profiles.jsonl or --synthetic N")


def simulate_command(
    patients: Annotated[Path | None, typer.Option("--patients", help="JSONL of patient profiles (docs/sessions.md)",
                                                  exists=True, dir_okay=False)] = None,
    synthetic: Annotated[int | None, typer.Option("--synthetic", min=1, help="simulate N seeded synthetic profiles "
                                                                             "instead of --patients")] = None,
    turns: Annotated[int | None, typer.Option("--turns", min=1, help="turn limit (patient messages)")] = None,
    therapist: Annotated[str | None, typer.Option("--therapist", help="therapist model: served name or local path "
                                                                       "(default: the embedded model)")] = None,
    therapist_base_url: Annotated[str | None, typer.Option(help="therapist's OpenAI-compatible endpoint")] = None,
    therapist_adapter: Annotated[str | None, typer.Option(help="LoRA adapter for the therapist model")] = None,
    therapist_prompt: Annotated[Path | None, typer.Option(help="text file: the therapist system prompt under test",
                                                          exists=True, dir_okay=False)] = None,
    therapist_name: Annotated[str | None, typer.Option(help="name of the therapist system in outputs")] = None,
    patient_model: Annotated[str | None, typer.Option(help="patient model: served name or local path")] = None,
    patient_base_url: Annotated[str | None, typer.Option(help="patient model's OpenAI-compatible endpoint")] = None,
    crisis_tier: Annotated[str | None, typer.Option(help="moderate | high | imminent: a patient message at this "
                                                         "risk ends the session after one reply")] = None,
    guard: GuardOption = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Run multi-turn sessions: the patient model plays each profile, the therapist under test replies."""
    from theraloop.config import load_config
    from theraloop.io import write_json
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.safety import SafetyAssessor, default_assessor
    from theraloop.sessions._profiles import write_profiles
    from theraloop.sessions._simulate import SimulateConfig, Simulator

    overrides = {
        "turns": turns, "seed": seed, "crisis_tier": crisis_tier, "guard": guard,
        "therapist.llm.model": therapist, "therapist.llm.base_url": therapist_base_url,
        "therapist.llm.adapter": therapist_adapter, "therapist.name": therapist_name,
        "therapist.system_prompt": therapist_prompt.read_text(encoding="utf-8") if therapist_prompt else None,
        "patient.llm.model": patient_model, "patient.llm.base_url": patient_base_url,
        **{f"{role}.llm.{key}": value for role in ("therapist", "patient")
           for key, value in (("n_threads", threads), ("cache", False if no_cache else None))},
    }
    sim_config = load_config(SimulateConfig, config, **overrides)
    profiles = _load_profiles(patients, synthetic, sim_config.seed, sim_config.turns)
    out = out or Path("runs") / "simulate"
    out.mkdir(parents=True, exist_ok=True)
    write_profiles(out / "profiles.jsonl", profiles)
    therapist_llm = build_llm(sim_config.therapist.llm)
    same = sim_config.patient.llm == sim_config.therapist.llm
    simulator = Simulator(therapist_llm if same else build_llm(sim_config.patient.llm), therapist_llm, sim_config,
                          guard=default_assessor() if sim_config.guard == "default" else SafetyAssessor(encoder=False))
    sessions = run_sync(simulator.run_many(profiles, out / "sessions.jsonl"))
    stops = {reason: sum(1 for s in sessions if s.stop_reason == reason) for reason in ("turn_limit", "patient_ended", "crisis")}
    drift = sum(1 for s in sessions for turn in s.turns if turn.drift)
    write_json(out / "stats.json", {"sessions": len(sessions), "turns": sum(len(s.turns) for s in sessions),
                                    "stop_reasons": stops, "drift_turns": drift})
    write_manifest(out, "simulate", sim_config, inputs={"patients": patients}, seed=sim_config.seed)
    typer.echo(f"{len(sessions)} sessions, {sum(len(s.turns) for s in sessions)} turns; stopped: "
               + ", ".join(f"{reason} {count}" for reason, count in stops.items())
               + f"; patient turns out of profile: {drift}")
    cache = getattr(therapist_llm, "cache", None)
    if cache is not None:
        typer.echo(f"completion cache: {cache.hits} hits, {cache.misses} misses")
    typer.echo(f"wrote {out}")


sessions_app = typer.Typer(no_args_is_help=True, help="Patient profiles, session judging and report, refining "
                                                                "turns in context, the session arena, review items.")


@sessions_app.command("profiles")
def profiles_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL of profiles to write")] = Path("profiles.jsonl"),
    n: Annotated[int, typer.Option("--n", min=1, help="synthetic profiles to draw")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    max_turn: Annotated[int, typer.Option(help="latest turn a timed disclosure may fall on")] = 4,
    risk_levels: Annotated[str | None, typer.Option(help="comma-separated levels to cycle through "
                                                         "(none,low,high,imminent) instead of sampling")] = None,
    import_file: Annotated[Path | None, typer.Option("--import", help="convert this file instead of sampling",
                                                     exists=True, dir_okay=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="format of --import: vera-mh (TSV/CSV) | mindeval (JSONL)")] = "vera-mh",
) -> None:
    """Write patient profiles: seeded synthetic ones, or converted from VERA-MH / MindEval-style personas."""
    from theraloop.io import InputError
    from theraloop.sessions._profiles import RISK_LEVELS, import_profiles, synthetic_profiles, write_profiles

    if import_file is not None:
        if fmt not in ("vera-mh", "mindeval"):
            raise InputError(f"--format {fmt!r}: use vera-mh or mindeval")
        profiles = import_profiles(import_file, fmt)
    else:
        levels = risk_levels.split(",") if risk_levels else None
        if levels and set(levels) - set(RISK_LEVELS):
            raise InputError(f"--risk-levels: unknown {sorted(set(levels) - set(RISK_LEVELS))}; use {', '.join(RISK_LEVELS)}")
        profiles = synthetic_profiles(n, seed=seed, max_turn=max_turn, risk_levels=levels)
    write_profiles(out, profiles)
    typer.echo(f"wrote {len(profiles)} profiles to {out} (risk: "
               + ", ".join(f"{level} {sum(p.risk.level == level for p in profiles)}" for level in RISK_LEVELS) + ")")


@sessions_app.command("judge")
def judge_command(
    run_dir: Annotated[Path, typer.Argument(help="a simulate output folder (sessions.jsonl)", exists=True,
                                            file_okay=False)],
    rubric: Annotated[str | None, typer.Option(help="rubric of the turn judge (default: therajudge)")] = None,
    no_turns: Annotated[bool, typer.Option("--no-turns", help="judge whole sessions only")] = False,
    model: Annotated[str | None, typer.Option("--model", help="judge model: served name or local path")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="judge's OpenAI-compatible endpoint")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Judge every therapist turn with its history, each whole session, and the risk handling; writes summary.json."""
    from theraloop.config import load_config
    from theraloop.judge import LLMJudge
    from theraloop.llm import build_llm, run_sync
    from theraloop.manifest import write_manifest
    from theraloop.sessions._judge import SessionJudgeConfig, build_session_judges, judge_sessions
    from theraloop.sessions._simulate import read_sessions

    overrides = {"turn_judge.rubric": rubric, "judge_turns": False if no_turns else None,
                 "turn_judge.llm.model": model, "turn_judge.llm.base_url": base_url,
                 "turn_judge.llm.n_threads": threads, "turn_judge.llm.cache": False if no_cache else None}
    judge_config = load_config(SessionJudgeConfig, config, **overrides)
    sessions = read_sessions(run_dir / "sessions.jsonl")
    out = out or run_dir / "judged"
    llm = build_llm(judge_config.turn_judge.llm)
    session_llm = build_llm(judge_config.session_llm) if judge_config.session_llm else llm
    turn_judge = LLMJudge(llm, judge_config.turn_judge) if judge_config.judge_turns else None
    summary = run_sync(judge_sessions(sessions, out, turn_judge, build_session_judges(judge_config, session_llm),
                                      judge_config))
    write_manifest(out, "sessions judge", judge_config, inputs={"sessions": run_dir / "sessions.jsonl"},
                   seed=judge_config.seed)
    print_summary(summary)
    from theraloop.judge._cli import warn_if_embedded_judge

    warn_if_embedded_judge(llm)
    typer.echo(f"wrote {out}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def print_summary(summary: dict) -> None:
    for level, block in summary["by_risk_level"].items():
        latency = block["latency"]
        events = "; ".join(f"{event} {latency[event]['reached']} reached (mean latency "
                           f"{_fmt(latency[event]['mean_latency'])}), {latency[event]['missed']} missed"
                           for event in ("acknowledged", "asked", "resources"))
        typer.echo(f"risk {level}: {latency['sessions']} sessions, {latency['disclosed']} disclosed"
                   + (f"; {events}" if latency["disclosed"] else ""))
        for rubric, scores in block["session_scores"].items():
            typer.echo(f"  {rubric}: " + ", ".join(f"{key} {_fmt(value)}" for key, value in scores["mean"].items())
                       + (f" ({scores['parse_failures']} parse failures)" if scores["parse_failures"] else ""))
        turn = block["turn_scores"]
        if turn["n"]:
            typer.echo(f"  turns (n={turn['n']}): " + ", ".join(f"{k} {_fmt(v)}" for k, v in turn["mean"].items())
                       + (f" ({turn['parse_failures']} parse failures)" if turn["parse_failures"] else ""))


@sessions_app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="a simulate output folder (sessions.jsonl)", exists=True,
                                            file_okay=False)],
    judged: Annotated[Path | None, typer.Option(help="the sessions judge output (default: RUN_DIR/judged, if any)",
                                                file_okay=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default: RUN_DIR/sessions.html)")] = None,
    title: Annotated[str, typer.Option(help="page title")] = "theraloop sessions",
) -> None:
    """Transcripts with per-turn scores and risk markers, and risk latency per risk level, as one HTML page."""
    from theraloop.sessions._report import load_run, write_sessions_html

    sessions, turn_judgments, session_judgments = load_run(run_dir, judged)
    path = write_sessions_html(out or run_dir / "sessions.html", sessions, turn_judgments=turn_judgments,
                               session_judgments=session_judgments, title=title)
    typer.echo(f"wrote {path} ({len(sessions)} sessions)")


def sessions_file(path: Path) -> Path:
    """A simulate output folder (its sessions.jsonl) or a sessions JSONL file itself."""
    from theraloop.io import InputError

    file = path / "sessions.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no sessions.jsonl (give a simulate output folder or a sessions JSONL file)")
    return file


def default_out(path: Path, name: str) -> Path:
    """`name` inside a run folder, or beside a sessions file (`<stem>-<name>`)."""
    return path / name if path.is_dir() else path.with_name(f"{path.stem}-{name}")


SessionsArgument = Annotated[Path, typer.Argument(help="a simulate output folder or its sessions.jsonl", exists=True)]


@sessions_app.command("refine")
def refine_command(
    run: SessionsArgument,
    turn: Annotated[list[int] | None, typer.Option("--turn", min=1, help="refine the therapist reply of turn K "
                                                                            "(repeatable)")] = None,
    all_turns: Annotated[bool, typer.Option("--all-turns", help="refine every therapist reply")] = False,
    session: Annotated[list[str] | None, typer.Option("--session", help="only this session id (repeatable)")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="maximum refinement rounds")] = None,
    threshold: Annotated[float | None, typer.Option(help="target score for every driving dimension")] = None,
    drive: Annotated[str | None, typer.Option(help="comma-separated driving dimensions (default: all)")] = None,
    rubric: Annotated[str | None, typer.Option(help="rubric of the driving judge (default: therajudge)")] = None,
    region: Annotated[str | None, typer.Option(help="help resources in escalation text (us, uk, ...)")] = None,
    guard: GuardOption = None,
    model: Annotated[str | None, typer.Option("--model", help="judge (and role) model: served name or local path")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="its OpenAI-compatible endpoint")] = None,
    agent_model: Annotated[str | None, typer.Option(help="a separate model for Critic, Coach and Therapist")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Refine therapist turns in context: Critic, Coach and Therapist see the conversation so far."""
    from theraloop.agent import RefineConfig, build_refiner
    from theraloop.config import load_config
    from theraloop.io import InputError
    from theraloop.llm import run_sync
    from theraloop.manifest import write_manifest
    from theraloop.safety import SafetyAssessor, default_assessor
    from theraloop.sessions._refine import refine_sessions
    from theraloop.sessions._simulate import read_sessions

    if bool(turn) == all_turns:
        raise InputError("give --turn K (repeatable) or --all-turns")
    if guard not in (None, "default", "rules"):
        raise InputError(f"--guard {guard!r}: use default or rules")
    overrides = {"max_rounds": rounds, "threshold": threshold, "seed": seed, "judge.rubric": rubric, "region": region,
                 "drive": drive.split(",") if drive else None,
                 "judge.llm.model": model, "judge.llm.base_url": base_url, "judge.llm.n_threads": threads,
                 "judge.llm.cache": False if no_cache else None,
                 "agent_llm.model": agent_model, "agent_llm.n_threads": threads if agent_model else None}
    refine_config = load_config(RefineConfig, config, **overrides)
    path = sessions_file(run)
    sessions = read_sessions(path)
    if session:
        unknown = sorted(set(session) - {s.id for s in sessions})
        if unknown:
            raise InputError(f"{path}: no session {unknown[0]!r}")
        sessions = [s for s in sessions if s.id in session]
    out = out or default_out(run, "refined")
    refiner = build_refiner(refine_config)  # any driving judge `theraloop refine` supports (config: engine, ...)
    refiner.safety = SafetyAssessor(encoder=False) if guard == "rules" else default_assessor()
    results = run_sync(refine_sessions(refiner, sessions, out, None if all_turns else turn))
    write_manifest(out, "sessions refine", refine_config, inputs={"sessions": path}, seed=refine_config.seed)
    changed = sum(result.final != result.original for result in results)
    enforced = sum(result.escalation_enforced for result in results)
    vetoed = sum(1 for result in results for trace in result.rounds if trace.harm and trace.harm.flagged)
    typer.echo(f"refined {len(results)} therapist turns of {len({r.id.rsplit(':t', 1)[0] for r in results})} "
               f"sessions: {changed} changed, escalation added by the safety guard in {enforced}, "
               f"{vetoed} revision(s) rejected as harmful")
    for result in results:
        before, after = result.initial_judgment.scores or {}, result.final_judgment.scores or {}
        mean = lambda scores: f"{sum(scores.values()) / len(scores):.2f}" if scores else "-"  # noqa: E731
        typer.echo(f"  {result.id}: risk {result.risk.label}; mean score {mean(before)} -> {mean(after)}; "
                   f"{result.stop_reason}")
    from theraloop.judge._cli import warn_if_embedded_judge

    warn_if_embedded_judge(getattr(refiner.judge, "llm", None))
    typer.echo(f"wrote {out}")


def _stats_line(label: str, stats) -> str:
    test = (f"; McNemar mid-p {stats.midp_p:.3g} (Holm {stats.midp_p_holm:.3g})" if stats.midp_p is not None
            else "; no session decided")
    rate = f", A win rate {stats.win_rate.estimate:.2f}" if stats.win_rate else ""
    return f"    {label}: A {stats.wins_a}, tie {stats.ties}, B {stats.wins_b} (n={stats.n}){rate}{test}"


def print_session_arena(result) -> None:
    for pair in result.pairs:
        typer.echo(f"\n=== A = {pair.system_a} vs B = {pair.system_b}: {pair.n_sessions} sessions, "
                   f"{pair.n_verdicts} verdicts, {pair.invalid} invalid")
        for key in result.criteria:
            typer.echo(f"  {key}")
            typer.echo(_stats_line("all judges", pair.overall[key]))
            if len(pair.by_persona) > 1:
                for persona, block in pair.by_persona.items():
                    typer.echo(_stats_line(f"judge {persona}", block[key]))
            for level, block in pair.by_risk_level.items():
                typer.echo(_stats_line(f"risk {level}", block[key]))
        typer.echo("  position consistency (both orders agree): " + ", ".join(
            f"{persona} {'-' if value is None else f'{value:.2f}'}" for persona, value in pair.position_consistency.items()))


@sessions_app.command("arena")
def arena_command(
    runs: Annotated[list[Path], typer.Argument(help="two or more simulate output folders or sessions JSONL files "
                                                    "(one therapist each, same profiles)", exists=True)],
    personas: Annotated[Path | None, typer.Option("--personas", help="JSONL of personas as judges (default: one "
                                                                      "clinical-supervisor judge)",
                                                  exists=True, dir_okay=False)] = None,
    criteria: Annotated[str | None, typer.Option(help="comma-separated criteria (default: every session rubric "
                                                      "dimension)")] = None,
    rubric: Annotated[str | None, typer.Option(help="rubric defining the criteria (default: session)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="judge model: served name or local path")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="judge's OpenAI-compatible endpoint")] = None,
    config: ConfigOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    no_cache: NoCacheOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Compare therapists' whole sessions with the same patients, pairwise in both orders, with paired statistics."""
    from theraloop.arena import load_personas
    from theraloop.config import load_config
    from theraloop.llm import build_llm, run_sync
    from theraloop.sessions._arena import SessionArenaConfig, session_arena_to_dir

    overrides = {"criteria": criteria.split(",") if criteria else None, "rubric": rubric, "seed": seed,
                 "llm.model": model, "llm.base_url": base_url, "llm.n_threads": threads,
                 "llm.cache": False if no_cache else None}
    arena_config = load_config(SessionArenaConfig, config, **overrides)
    out = out or Path("runs") / "sessions-arena"
    llm = build_llm(arena_config.llm)
    result = run_sync(session_arena_to_dir(runs, out, arena_config, llm,
                                           personas=load_personas(personas) if personas else None))
    print_session_arena(result)
    from theraloop.judge._cli import warn_if_embedded_judge

    warn_if_embedded_judge(llm)
    typer.echo(f"wrote {out}")


@sessions_app.command("review-items")
def review_items_command(
    runs: Annotated[list[Path], typer.Argument(help="one simulate folder or sessions file (absolute items: rate "
                                                    "each session), or two or more (pairwise items)", exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL of review items to write")] = Path("session-items.jsonl"),
) -> None:
    """Review items for `theraloop review init`: whole sessions, blinded, for rating on the session rubric."""
    from theraloop.io import write_jsonl
    from theraloop.sessions._review import session_review_items

    items = session_review_items(runs)
    write_jsonl(out, items)
    mode = "absolute" if len(runs) == 1 else "pairwise"
    typer.echo(f"wrote {len(items)} {mode} session items to {out}; next: theraloop review init --items {out} "
               f"--mode {mode} --rubric session --db study.sqlite")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)
    app.add_typer(sessions_app, name="sessions")

"""Refining therapist turns in context: the refine loop (Critic -> Coach -> Therapist, judge, safety veto)
run on one reply of a session, with the conversation before it.

Each chosen turn becomes one item, id `<session>:t<k>`: the judge reads the transcript up to and
including the patient's message of that turn (as `theraloop sessions judge` does); the roles read the
conversation before it and the patient's latest message (item meta `history` and `message`); the safety
guard reads every patient message so far, so a disclosure at turn 2 still requires escalation at turn 4.
Each turn is refined against the original history (a counterfactual reply; the patient is not re-run).

Outputs: `trace.jsonl` (RefineResult per turn, resumable), `refined.jsonl` ({id, session, turn, context,
original, response, system}), `sessions.jsonl` (the sessions with the refined replies put in, therapist
`<name>+refined`, same ids, for `theraloop sessions arena` against the original) and `metrics.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from theraloop.io import InputError, write_json, write_jsonl
from theraloop.records import DEFAULT_MAX_CHARS, ResponseItem
from theraloop.sessions._judge import render_transcript, turn_items
from theraloop.sessions._simulate import Session


def refine_items(sessions: Sequence[Session], turns: Sequence[int] | None = None,
                 max_chars: int = DEFAULT_MAX_CHARS) -> list[ResponseItem]:
    """One item per chosen therapist turn (`turns`: 1-based indices; None: every turn). A session without
    a chosen turn contributes nothing."""
    items = []
    for session in sessions:
        by_index = {turn.index: turn for turn in session.turns}
        for item in turn_items(session, max_chars):
            index = item.meta["turn"]
            if turns is not None and index not in turns:
                continue
            earlier = session.turns[:index - 1]
            items.append(item.model_copy(update={"meta": {
                **item.meta,
                "history": render_transcript(earlier),
                "message": by_index[index].patient,
                # The guard reads the patient's side of the whole session so far, never the therapist's lines.
                "full_context": "\n".join(turn.patient for turn in session.turns[:index]),
            }}))
    return items


def refined_sessions(sessions: Sequence[Session], results: Sequence, guard=None) -> list[Session]:
    """The sessions with each refined reply put in its turn (harm re-checked), renamed `<therapist>+refined`.
    Sessions none of whose turns were refined are left out."""
    finals = {result.id: result for result in results}
    out = []
    for session in sessions:
        turns, changed = [], False
        for turn in session.turns:
            result = finals.get(f"{session.id}:t{turn.index}")
            if result is None:
                turns.append(turn)
                continue
            changed = True
            harm = result.harm_final if result.harm_final is not None else (guard.check_response(result.final)
                                                                             if guard else None)
            turns.append(turn.model_copy(update={"therapist": result.final,
                                                 "harm": list(harm.categories) if harm else turn.harm}))
        if changed:
            out.append(session.model_copy(update={"turns": turns, "therapist": f"{session.therapist}+refined"}))
    return out


async def refine_sessions(refiner, sessions: Sequence[Session], out: str | Path, turns: Sequence[int] | None = None,
                          max_chars: int = DEFAULT_MAX_CHARS, progress: bool = True) -> list:
    """Refine the chosen turns of every session into `out` (module docstring); returns the RefineResults."""
    from theraloop.agent import refine_metrics

    out = Path(out)
    items = refine_items(sessions, turns, max_chars)
    if not items:
        raise InputError("no therapist turn to refine" + (f" at turn(s) {sorted(turns)}" if turns else "")
                         + " in these sessions")
    results = await refiner.refine_many(items, out / "trace.jsonl", progress=progress)
    by_id = {item.id: item for item in items}
    write_jsonl(out / "refined.jsonl", [
        {"id": result.id, "session": by_id[result.id].meta["session"], "turn": by_id[result.id].meta["turn"],
         "context": result.context, "original": result.original, "response": result.final,
         "system": f"{result.system}+refined" if result.system else "refined"}
        for result in results])
    write_jsonl(out / "sessions.jsonl", refined_sessions(sessions, results, refiner.safety))
    write_json(out / "metrics.json", refine_metrics(results, refiner.drive))
    return results

"""Sessions for the clinician review app: one item per session (absolute mode: rate the therapist on the
session rubric) or per pair of sessions with the same patient (pairwise mode).

An item's context is what a rater is told about the patient (name, age, presenting problem, goals; not the
scripted risk), its response the numbered transcript in full; the therapist's name goes only into the
item's system fields, which the app never shows. `meta.kind = "session"` makes `theraloop review init`
label the pages for sessions.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from theraloop.sessions._arena import load_session_system, numbered_transcript, profile_text, shared_sessions

# Transcripts go to human raters whole.
_NO_CUT = 10**9


def _meta(session) -> dict:
    return {"kind": "session", "risk_level": session.risk_level, "turns": len(session.turns),
            "stop_reason": session.stop_reason}


def session_review_items(paths: Sequence[str | Path]) -> list[dict]:
    """Absolute items from one session file; pairwise items (every pair of files, shared sessions) from two or more."""
    systems = [load_session_system(path) for path in paths]
    if len(systems) == 1:
        return [{"id": session.id, "context": profile_text(session.profile),
                 "response": numbered_transcript(session, _NO_CUT), "system": session.therapist, "meta": _meta(session)}
                for session in systems[0].sessions.values()]
    items = []
    for system_a, system_b in itertools.combinations(systems, 2):
        for sid in shared_sessions(system_a, system_b):
            session_a, session_b = system_a.sessions[sid], system_b.sessions[sid]
            item_id = sid if len(systems) == 2 else f"{sid}:{system_a.name}:{system_b.name}"
            items.append({"id": item_id, "context": profile_text(session_a.profile),
                          "response_a": numbered_transcript(session_a, _NO_CUT),
                          "response_b": numbered_transcript(session_b, _NO_CUT),
                          "system_a": system_a.name, "system_b": system_b.name, "meta": _meta(session_a)})
    return items

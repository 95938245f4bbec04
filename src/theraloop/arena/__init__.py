"""Head-to-head arena: persona judges compare systems per criterion, with paired statistics."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "ArenaConfig": "theraloop.arena._arena",
    "ArenaJob": "theraloop.arena._arena",
    "ArenaPersona": "theraloop.arena._arena",
    "ArenaResult": "theraloop.arena._arena",
    "ArenaSystem": "theraloop.arena._arena",
    "ArenaVerdict": "theraloop.arena._arena",
    "CriterionStats": "theraloop.arena._arena",
    "PairResult": "theraloop.arena._arena",
    "RateSummary": "theraloop.arena._arena",
    "arena_to_dir": "theraloop.arena._arena",
    "load_personas": "theraloop.arena._arena",
    "load_system": "theraloop.arena._arena",
    "load_systems": "theraloop.arena._arena",
    "majority": "theraloop.arena._arena",
    "pair_name": "theraloop.arena._arena",
    "plan_jobs": "theraloop.arena._arena",
    "presentation_orders": "theraloop.arena._arena",
    "run_arena": "theraloop.arena._arena",
    "summarize": "theraloop.arena._arena",
    "verdict_prompt": "theraloop.arena._arena",
    "verdict_schema": "theraloop.arena._arena",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

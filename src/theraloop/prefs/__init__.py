"""Preferences: candidate generation, persona rankings, symmetric weighted voting, preference pairs, and pairs
from refinement traces."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "Ballot": "theraloop.prefs._collect",
    "Candidate": "theraloop.prefs._generate",
    "DEFAULT_THERAPIST_PROMPT": "theraloop.prefs._generate",
    "DimensionSummary": "theraloop.prefs._from_refine",
    "FromRefineConfig": "theraloop.prefs._from_refine",
    "FromRefineSummary": "theraloop.prefs._from_refine",
    "RefinePair": "theraloop.prefs._from_refine",
    "GenerateConfig": "theraloop.prefs._generate",
    "GenerationSummary": "theraloop.prefs._generate",
    "PreferencePair": "theraloop.prefs._voting",
    "PrefsConfig": "theraloop.prefs._collect",
    "PrefsSummary": "theraloop.prefs._collect",
    "Question": "theraloop.prefs._generate",
    "Tally": "theraloop.prefs._voting",
    "VoteResult": "theraloop.prefs._collect",
    "ballot_prompt": "theraloop.prefs._collect",
    "ballot_schema": "theraloop.prefs._collect",
    "build_pairs": "theraloop.prefs._collect",
    "candidate_seed": "theraloop.prefs._generate",
    "check_ranking": "theraloop.prefs._voting",
    "collect_ballot": "theraloop.prefs._collect",
    "collect_ballots": "theraloop.prefs._collect",
    "collect_preferences": "theraloop.prefs._collect",
    "count_votes": "theraloop.prefs._collect",
    "dimension_pairs": "theraloop.prefs._from_refine",
    "display_order": "theraloop.prefs._collect",
    "epitome_questions": "theraloop.prefs._generate",
    "generate_candidates": "theraloop.prefs._generate",
    "group_candidates": "theraloop.prefs._collect",
    "pairs_from_refine": "theraloop.prefs._from_refine",
    "preference_pairs": "theraloop.prefs._voting",
    "rank_weights": "theraloop.prefs._voting",
    "read_questions": "theraloop.prefs._generate",
    "sample_personas": "theraloop.prefs._collect",
    "tally": "theraloop.prefs._voting",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

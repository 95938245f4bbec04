"""Data loaders and splits: EPITOME (empathy levels, seeker posts, the MODPO split), MentalAlign, personas."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "CRITERIA": "theraloop.data._personas",
    "Demographics": "theraloop.data._personas",
    "DroppedCell": "theraloop.data._mentalalign",
    "EpitomeSplit": "theraloop.data._epitome",
    "JUDGE_OWN_GENERATOR": "theraloop.data._mentalalign",
    "MENTALALIGN_DIMENSIONS": "theraloop.data._mentalalign",
    "MENTALALIGN_GENERATORS": "theraloop.data._mentalalign",
    "MENTALALIGN_JUDGES": "theraloop.data._mentalalign",
    "MentalAlign": "theraloop.data._mentalalign",
    "MentalAlignRating": "theraloop.data._mentalalign",
    "MentalHealthBackground": "theraloop.data._personas",
    "ModpoSplit": "theraloop.data._epitome",
    "Persona": "theraloop.data._personas",
    "PersonaSplit": "theraloop.data._personas",
    "SeekerPost": "theraloop.data._epitome",
    "SurveyMapping": "theraloop.data._personas",
    "epitome_paths": "theraloop.data._epitome",
    "epitome_split": "theraloop.data._epitome",
    "grouped_split": "theraloop.data._epitome",
    "load_epitome": "theraloop.data._epitome",
    "load_mentalalign": "theraloop.data._mentalalign",
    "modpo_split": "theraloop.data._epitome",
    "parse_mentalalign_cell": "theraloop.data._mentalalign",
    "persona_id": "theraloop.data._personas",
    "personas_from_survey": "theraloop.data._personas",
    "render_persona_prompt": "theraloop.data._personas",
    "seeker_posts": "theraloop.data._epitome",
    "DATASETS": "theraloop.data._shared",
    "find_dataset": "theraloop.data._shared",
    "shared_data_root": "theraloop.data._shared",
    "split_personas": "theraloop.data._personas",
    "synthetic_personas": "theraloop.data._personas",
    "verify_epitome": "theraloop.data._epitome",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

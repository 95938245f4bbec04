"""Data loaders and splits: EPITOME (empathy levels, seeker posts, the MODPO split)."""

from theraloop.data._epitome import (
    EpitomeSplit,
    ModpoSplit,
    SeekerPost,
    epitome_paths,
    epitome_split,
    grouped_split,
    load_epitome,
    modpo_split,
    seeker_posts,
    verify_epitome,
)

__all__ = [
    "EpitomeSplit",
    "ModpoSplit",
    "SeekerPost",
    "epitome_paths",
    "epitome_split",
    "grouped_split",
    "load_epitome",
    "modpo_split",
    "seeker_posts",
    "verify_epitome",
]

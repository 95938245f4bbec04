"""Where the reference data (EPITOME, MentalAlign, CounselChat) lives on this machine, and what each is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA_ENV = "THERALOOP_SHARED_DATA"
# An editable install's source tree: src/theraloop/data/_shared.py -> the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Dataset:
    name: str
    what: str
    licence: str
    source: str
    files: tuple[str, ...]


DATASETS: dict[str, Dataset] = {
    "epitome": Dataset(
        "epitome", "EPITOME (Sharma et al., EMNLP 2020): 3,084 Reddit seeker-post/response pairs rated 0-2 by "
        "trained annotators for three empathy mechanisms, with rationale spans",
        "non-commercial academic research use; cite the paper",
        "github.com/behavioral-data/Empathy-Mental-Health (dataset/*.csv)",
        ("emotional-reactions-reddit.csv", "interpretations-reddit.csv", "explorations-reddit.csv")),
    "mentalalign": Dataset(
        "mentalalign", "MentalAlign-70k (Badawi et al., 2025): 1,000 conversations x 10 responses rated 1-5 on the "
        "7 TheraJudge dimensions by clinical experts and by four LLM judges (scores only, no response texts)",
        "MIT", "github.com/abeerbadawi/MentalBench-Align",
        ("human_judge.xlsx", "claude_llm_judge.xlsx", "gemini_llm_judge.xlsx", "gpt-4o_llm_judge.xlsx",
         "o4-mini_llm_judge.xlsx")),
    "counselchat": Dataset(
        "counselchat", "CounselChat (Bertagnolli, 2020): 2,129 answers by licensed therapists to 815 questions",
        "MIT (repository)", "github.com/nbertagnolli/counsel-chat (data/20200325_counsel_chat.csv)",
        ("20200325_counsel_chat.csv",)),
}


def shared_data_root(explicit: str | Path | None = None, beside: Path | None = None) -> Path | None:
    """`explicit`, else $THERALOOP_SHARED_DATA, else `shared/data` next to the folder `beside` (a
    repository checked out beside shared/), else None. Existence is the caller's to check."""
    if explicit:
        return Path(explicit)
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured)
    return beside.parent / "shared" / "data" if beside is not None else None


def _holds(folder: Path, dataset: Dataset) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in dataset.files)


def dataset_candidates(name: str, explicit: str | Path | None = None) -> list[Path]:
    """Where `name` is looked for, in order: the folder given (or its `name` subfolder), then
    $THERALOOP_SHARED_DATA/name, then ../shared/data/name from the working directory and from the
    repository an editable install runs from."""
    if explicit:
        return [Path(explicit), Path(explicit) / name]
    roots = [Path(os.environ[SHARED_DATA_ENV])] if os.environ.get(SHARED_DATA_ENV) else []
    roots += [Path.cwd().parent / "shared" / "data", _REPO_ROOT.parent / "shared" / "data"]
    return [root / name for root in roots]


def find_dataset(name: str, explicit: str | Path | None = None) -> Path:
    """The folder holding dataset `name`; a clear error naming where it looked and where to get it."""
    from theraloop.io import InputError

    dataset = DATASETS[name]
    candidates = dataset_candidates(name, explicit)
    for folder in candidates:
        if _holds(folder, dataset):
            return folder
    looked = ", ".join(str(folder) for folder in dict.fromkeys(candidates))
    raise InputError(f"{name} not found (looked in {looked}). It is {dataset.what}; licence: {dataset.licence}; "
                     f"get it from {dataset.source} and place its files in a folder '{name}' under "
                     f"${SHARED_DATA_ENV} (or ../shared/data), or pass the folder explicitly")

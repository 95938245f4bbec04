"""Where the reference data (EPITOME, MentalAlign) lives on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_root(explicit: str | Path | None = None, beside: Path | None = None) -> Path | None:
    """`explicit`, else $THERALOOP_SHARED_DATA, else `shared/data` next to the folder `beside` (a
    repository checked out beside shared/), else None. Existence is the caller's to check."""
    if explicit:
        return Path(explicit)
    configured = os.environ.get("THERALOOP_SHARED_DATA")
    if configured:
        return Path(configured)
    return beside.parent / "shared" / "data" if beside is not None else None

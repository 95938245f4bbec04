"""Shared fixtures. Tests run offline on CPU; real data comes from ../shared/data beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def existing_shared_data_root() -> Path | None:
    """THERALOOP_SHARED_DATA, else ../shared/data next to the repository, if that folder exists."""
    from theraloop.data import shared_data_root

    candidate = shared_data_root(beside=REPO_ROOT)
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder; tests that need it skip (reported by -ra) where it is absent."""
    root = existing_shared_data_root()
    if root is None:
        pytest.skip("shared data not found: set THERALOOP_SHARED_DATA or place shared/data beside the repo")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let tests read or write the user's completion cache."""
    monkeypatch.setenv("THERALOOP_CACHE_DIR", str(tmp_path_factory.mktemp("llm-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def openai_stub():
    """A live OpenAI-compatible HTTP server on localhost whose failures a test scripts."""
    from openai_stub import StubServer

    server = StubServer().start()
    yield server
    server.stop()

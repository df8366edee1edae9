"""Cross-validation splits: partition, class stratification, seeding, user-supplied files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from suprem_auto.training.splits import SPLITS_FILE, fold_cases, load_or_create_splits, make_stratified_splits


def _presence(n: int = 23):
    """Every case has class 1; class 2 in every other case; rare class 3 in exactly 5 cases, class 4 in 2."""
    presence = {f"case_{i:03d}": {1} | ({2} if i % 2 else set()) for i in range(n)}
    for i in (0, 7, 11, 15, 20):
        presence.get(f"case_{i:03d}", set()).add(3)
    for i in (3, 4):
        presence.get(f"case_{i:03d}", set()).add(4)
    return presence


def test_folds_partition_the_cases_with_balanced_sizes():
    presence = _presence()
    splits = make_stratified_splits(presence, num_folds=5, seed=1)
    vals = [set(f["val"]) for f in splits]
    assert len(splits) == 5
    assert set().union(*vals) == set(presence)
    assert sum(len(v) for v in vals) == len(presence)  # disjoint
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1
    for fold in splits:
        assert set(fold["train"]) == set(presence) - set(fold["val"])


def test_every_class_with_enough_cases_is_in_every_validation_fold():
    presence = _presence()
    for seed in range(5):
        splits = make_stratified_splits(presence, num_folds=5, seed=seed)
        for fold in splits:
            classes = set().union(*(presence[c] for c in fold["val"]))
            assert {1, 2, 3} <= classes, (seed, fold["val"])
        # the 2-case class lands in two different folds
        holders = [i for i, f in enumerate(splits) if {"case_003", "case_004"} & set(f["val"])]
        assert len(holders) == 2


def test_splits_are_seeded():
    presence = _presence()
    assert make_stratified_splits(presence, seed=12345) == make_stratified_splits(presence, seed=12345)
    assert make_stratified_splits(presence, seed=1) != make_stratified_splits(presence, seed=2)


def test_created_once_then_reused(tmp_path: Path):
    presence = _presence()
    first = load_or_create_splits(tmp_path, presence, seed=3)
    assert json.loads((tmp_path / SPLITS_FILE).read_text()) == first
    assert load_or_create_splits(tmp_path, presence, seed=999) == first  # the stored file wins over a new seed


def test_user_file_in_raw_folder_wins_and_is_copied(tmp_path: Path):
    presence = _presence(10)
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    raw.mkdir()
    pre.mkdir()
    load_or_create_splits(pre, presence)  # an automatic file already exists
    user = [{"train": sorted(presence)[2:], "val": sorted(presence)[:2]}]
    (raw / SPLITS_FILE).write_text(json.dumps(user))
    assert load_or_create_splits(pre, presence, raw_dataset=raw) == user
    assert json.loads((pre / SPLITS_FILE).read_text()) == user


def test_user_file_in_preprocessed_folder_is_used(tmp_path: Path):
    presence = _presence(10)
    user = [{"train": sorted(presence)[:5], "val": sorted(presence)[5:]}]
    (tmp_path / SPLITS_FILE).write_text(json.dumps(user))
    assert load_or_create_splits(tmp_path, presence) == user


def test_bad_user_file_names_file_and_case(tmp_path: Path):
    (tmp_path / SPLITS_FILE).write_text(json.dumps([{"train": ["nope"], "val": []}]))
    with pytest.raises(ValueError, match=r"splits_final.json: fold 0 names cases not in the dataset: nope"):
        load_or_create_splits(tmp_path, _presence(10))


def test_fold_all_and_out_of_range():
    presence = _presence(10)
    splits = make_stratified_splits(presence)
    train, val = fold_cases(splits, "all", sorted(presence))
    assert train == val == sorted(presence)
    assert fold_cases(splits, 2, sorted(presence))[1] == splits[2]["val"]
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        fold_cases(splits, 5, sorted(presence))

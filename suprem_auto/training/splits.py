"""Cross-validation folds: ``splits_final.json`` with seeded, class-stratified folds; a user file wins."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Set, Tuple, Union

import numpy as np

from suprem_auto.utils.atomic import atomic_write_json, load_json

SPLITS_FILE = "splits_final.json"
SPLIT_SEED = 12345  # nnU-Net's seed, so every trainer of a dataset shares the same folds
Splits = List[Dict[str, List[str]]]


def make_stratified_splits(class_presence: Mapping[str, Set[int]], num_folds: int = 5,
                           seed: int = SPLIT_SEED) -> Splits:
    """Split cases into ``num_folds`` validation folds of (almost) equal size.

    Cases holding rare classes are placed first, each into the fold that lacks most of its classes (then the
    smallest fold), so every class present in at least ``num_folds`` cases appears in every validation fold.
    Ties are broken by a seeded random order, so the same seed gives the same folds.
    """
    cases = sorted(class_presence)
    if len(cases) < num_folds:
        raise ValueError(f"{len(cases)} cases cannot be split into {num_folds} folds")
    rng = np.random.default_rng(seed)
    order = [cases[i] for i in rng.permutation(len(cases))]
    frequency: Dict[int, int] = {}
    for case in cases:
        for c in class_presence[case]:
            frequency[c] = frequency.get(c, 0) + 1

    def rarity(case: str) -> int:
        present = class_presence[case]
        return min((frequency[c] for c in present), default=len(cases) + 1)

    order.sort(key=rarity)  # stable: keeps the seeded order among equally rare cases
    capacity = math.ceil(len(cases) / num_folds)
    fold_members: List[List[str]] = [[] for _ in range(num_folds)]
    fold_classes: List[Set[int]] = [set() for _ in range(num_folds)]
    tiebreak = rng.permutation(num_folds)
    for case in order:
        open_folds = [f for f in range(num_folds) if len(fold_members[f]) < capacity]
        best = min(open_folds, key=lambda f: (len(class_presence[case] & fold_classes[f]),
                                               len(fold_members[f]), tiebreak[f]))
        fold_members[best].append(case)
        fold_classes[best] |= set(class_presence[case])
    return [{"train": sorted(c for c in cases if c not in set(val)), "val": sorted(val)} for val in fold_members]


def validate_splits(splits: object, case_ids: List[str], source: Union[str, Path]) -> Splits:
    """Check a splits list: each entry has train/val lists naming known cases; raise a one-line error if not."""
    if not isinstance(splits, list) or not splits:
        raise ValueError(f"{source}: expected a non-empty list of {{\"train\": [...], \"val\": [...]}}")
    known = set(case_ids)
    for i, entry in enumerate(splits):
        if not isinstance(entry, dict) or not isinstance(entry.get("train"), list) \
                or not isinstance(entry.get("val"), list):
            raise ValueError(f"{source}: fold {i} must be an object with 'train' and 'val' lists")
        unknown = sorted((set(entry["train"]) | set(entry["val"])) - known)
        if unknown:
            raise ValueError(f"{source}: fold {i} names cases not in the dataset: {', '.join(unknown[:5])}")
    return splits


def load_or_create_splits(preprocessed_dataset: Path, class_presence: Mapping[str, Set[int]],
                          raw_dataset: Optional[Path] = None, num_folds: int = 5, seed: int = SPLIT_SEED) -> Splits:
    """The dataset's folds. Priority: ``raw_dataset/splits_final.json`` (copied over), then the one in the
    preprocessed folder, else new stratified folds written there."""
    target = Path(preprocessed_dataset) / SPLITS_FILE
    case_ids = sorted(class_presence)
    if raw_dataset is not None and (Path(raw_dataset) / SPLITS_FILE).is_file():
        user = validate_splits(load_json(Path(raw_dataset) / SPLITS_FILE), case_ids, Path(raw_dataset) / SPLITS_FILE)
        if not target.is_file() or load_json(target) != user:
            atomic_write_json(target, user)
        return user
    if target.is_file():
        return validate_splits(load_json(target), case_ids, target)
    splits = make_stratified_splits(class_presence, num_folds, seed)
    atomic_write_json(target, splits)
    return splits


def fold_cases(splits: Splits, fold: Union[int, str], all_cases: List[str]) -> Tuple[List[str], List[str]]:
    """(train, val) case lists of ``fold``; ``"all"`` trains and validates on every case."""
    if str(fold) == "all":
        return sorted(all_cases), sorted(all_cases)
    k = int(fold)
    if not 0 <= k < len(splits):
        raise ValueError(f"fold {fold} does not exist: {SPLITS_FILE} has folds 0-{len(splits) - 1} (or use 'all')")
    return list(splits[k]["train"]), list(splits[k]["val"])

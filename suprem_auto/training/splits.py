"""Cross-validation folds: ``splits_final.json`` with seeded, class-stratified folds that keep a subject's cases
together; a user file wins.

Subjects (cases that must stay on one side of every fold, e.g. two time points of one patient) come from, in this
order: ``--subject_pattern``, the ``"subject_pattern"`` key of ``dataset.json`` (a regular expression searched in each
case id: the subject is its first capture group, else the whole match; ids it does not match are their own subject),
or ``subjects.json`` in the raw dataset folder (``{case_id: subject}``; unlisted cases are their own subject).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from suprem_auto.utils.atomic import atomic_write_json, load_json

SPLITS_FILE = "splits_final.json"
SUBJECTS_FILE = "subjects.json"
SPLIT_SEED = 12345  # nnU-Net's seed, so every trainer of a dataset shares the same folds
DEFAULT_NUM_FOLDS = 5
Splits = List[Dict[str, List[str]]]


@dataclass(frozen=True)
class SubjectRule:
    """Where case ids get their subject: a regular expression (``pattern``) or a table (``table``); ``source`` names
    where the rule came from (a file or ``--subject_pattern``) for messages."""

    source: str
    pattern: Optional[str] = None
    table: Optional[Mapping[str, str]] = None

    def subjects(self, case_ids: Sequence[str]) -> Dict[str, str]:
        """case id -> subject; a case the rule does not cover is its own subject. A bad rule raises a one-line
        ``ValueError`` naming :attr:`source`."""
        if self.table is not None:
            return {case: str(self.table.get(case, case)) for case in case_ids}
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"{self.source}: subject_pattern must be a non-empty string (a regular expression)")
        try:
            regex = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"{self.source}: subject_pattern '{self.pattern}' is not a valid regular expression "
                             f"({exc})") from None
        out: Dict[str, str] = {}
        matched = 0
        for case in case_ids:
            found = regex.search(case)
            if found is None:
                out[case] = case
                continue
            matched += 1
            group = found.group(1) if regex.groups and found.group(1) is not None else found.group(0)
            out[case] = group or case
        if case_ids and not matched:
            raise ValueError(f"{self.source}: subject_pattern '{self.pattern}' matches none of the {len(case_ids)} "
                             f"case ids (e.g. '{sorted(case_ids)[0]}')")
        return out


def find_subject_rule(flag_pattern: Optional[str], dataset_json: Mapping[str, object],
                      dataset_json_path: Union[str, Path], raw_dataset: Optional[Path] = None) -> Optional[SubjectRule]:
    """The grouping rule in force: ``--subject_pattern``, else ``"subject_pattern"`` of the raw dataset's
    ``dataset.json`` (the preprocessed copy when the raw folder is absent), else the raw folder's ``subjects.json``;
    None when no rule is given."""
    if flag_pattern is not None:
        return SubjectRule("--subject_pattern", pattern=flag_pattern)
    source, data = Path(dataset_json_path), dataset_json
    raw_json = Path(raw_dataset) / "dataset.json" if raw_dataset is not None else None
    if raw_json is not None and raw_json.is_file():  # the user's file, possibly edited after preprocessing
        source, data = raw_json, load_json(raw_json)
    if "subject_pattern" in data:
        return SubjectRule(str(source), pattern=data["subject_pattern"])  # type: ignore[arg-type]
    table_file = Path(raw_dataset) / SUBJECTS_FILE if raw_dataset is not None else None
    if table_file is not None and table_file.is_file():
        table = load_json(table_file)
        if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in table.items()):
            raise ValueError(f"{table_file}: expected an object {{\"case_id\": \"subject\", ...}} of strings")
        return SubjectRule(str(table_file), table=table)
    return None


def make_stratified_splits(class_presence: Mapping[str, Set[int]], num_folds: int = DEFAULT_NUM_FOLDS,
                           seed: int = SPLIT_SEED, subjects: Optional[Mapping[str, str]] = None) -> Splits:
    """Split cases into ``num_folds`` validation folds of (almost) equal case count, never separating the cases of
    one subject (``subjects``: case -> subject; default: every case is its own subject).

    Subjects holding rare classes (the union of their cases' classes) are placed first, each into the fold that
    lacks most of its classes (then the smallest fold), so every class present in at least ``num_folds`` subjects
    appears in every validation fold. Ties are broken by a seeded random order, so the same seed gives the same folds.
    """
    cases = sorted(class_presence)
    subject_of = {case: (subjects or {}).get(case, case) for case in cases}
    members: Dict[str, List[str]] = {}
    for case in cases:
        members.setdefault(subject_of[case], []).append(case)
    units = sorted(members)
    if num_folds < 2:
        raise ValueError(f"--num_folds must be at least 2, got {num_folds} (fold 'all' trains on every case)")
    if len(units) < num_folds:
        what = f"{len(cases)} cases" + (f" of {len(units)} subject(s)" if len(units) != len(cases) else "")
        hint = (f"give --num_folds {len(units)} (or fewer, at least 2), or train fold 'all' (no split)"
                if len(units) >= 2 else "train fold 'all' (no split)")
        raise ValueError(f"{what} cannot be split into {num_folds} folds: {hint}")
    unit_classes = {u: set().union(*(class_presence[c] for c in members[u])) for u in units}
    rng = np.random.default_rng(seed)
    order = [units[i] for i in rng.permutation(len(units))]
    frequency: Dict[int, int] = {}
    for u in units:
        for c in unit_classes[u]:
            frequency[c] = frequency.get(c, 0) + 1

    def rarity(unit: str) -> Tuple[int, int]:
        rarest = min((frequency[c] for c in unit_classes[unit]), default=len(units) + 1)
        return rarest, -len(members[unit])  # then larger subjects first, while folds still have room

    order.sort(key=rarity)  # stable: keeps the seeded order among equally rare subjects
    capacity = math.ceil(len(cases) / num_folds)
    fold_members: List[List[str]] = [[] for _ in range(num_folds)]
    fold_classes: List[Set[int]] = [set() for _ in range(num_folds)]
    tiebreak = rng.permutation(num_folds)
    for unit in order:
        size = len(members[unit])
        open_folds = [f for f in range(num_folds) if len(fold_members[f]) + size <= capacity]
        if open_folds:
            best = min(open_folds, key=lambda f: (len(unit_classes[unit] & fold_classes[f]),
                                                   len(fold_members[f]), tiebreak[f]))
        else:  # a subject larger than the room left anywhere: the smallest fold takes it
            best = min(range(num_folds), key=lambda f: (len(fold_members[f]), tiebreak[f]))
        fold_members[best].extend(members[unit])
        fold_classes[best] |= unit_classes[unit]
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


def check_subjects_kept_together(splits: Splits, subjects: Mapping[str, str], source: Union[str, Path],
                                 remedy: str) -> None:
    """Raise a one-line ``ValueError`` naming ``source`` and the first subject found on both sides of a fold."""
    for i, entry in enumerate(splits):
        train_subjects = {subjects.get(c, c) for c in entry["train"]}
        for case in sorted(entry["val"]):
            subject = subjects.get(case, case)
            if subject in train_subjects:
                others = sorted(c for c in entry["train"] if subjects.get(c, c) == subject)
                raise ValueError(f"{source}: fold {i} puts subject '{subject}' in both train ({', '.join(others)}) "
                                 f"and val ({case}); {remedy}")


def _check_fold_count(splits: Splits, num_folds: Optional[int], source: Path, remedy: str) -> None:
    if num_folds is not None and len(splits) != num_folds:
        raise ValueError(f"{source}: has {len(splits)} folds but --num_folds {num_folds} was asked; {remedy}")


def load_or_create_splits(preprocessed_dataset: Path, class_presence: Mapping[str, Set[int]],
                          raw_dataset: Optional[Path] = None, num_folds: Optional[int] = None,
                          seed: int = SPLIT_SEED, subject_rule: Optional[SubjectRule] = None) -> Splits:
    """The dataset's folds. Priority: ``raw_dataset/splits_final.json`` (copied over), then the one in the
    preprocessed folder, else new stratified (and, with ``subject_rule``, subject-grouped) folds written there.

    ``num_folds`` None: an existing file's fold count, else 5; given, a file with another count is an error. An
    existing file that separates a subject of ``subject_rule`` is an error naming the file and the subject."""
    target = Path(preprocessed_dataset) / SPLITS_FILE
    case_ids = sorted(class_presence)
    subjects = subject_rule.subjects(case_ids) if subject_rule is not None else None
    if raw_dataset is not None and (Path(raw_dataset) / SPLITS_FILE).is_file():
        user_file = Path(raw_dataset) / SPLITS_FILE
        user = validate_splits(load_json(user_file), case_ids, user_file)
        _check_fold_count(user, num_folds, user_file, "give --num_folds to match the file, or change the file")
        if subjects is not None:
            check_subjects_kept_together(user, subjects, user_file,
                                         f"fix the file or drop the subject rule ({subject_rule.source})")
        if not target.is_file() or load_json(target) != user:
            atomic_write_json(target, user)
        return user
    if target.is_file():
        splits = validate_splits(load_json(target), case_ids, target)
        _check_fold_count(splits, num_folds, target, "delete the file to make new folds, or give --num_folds "
                                                     f"{len(splits)}")
        if subjects is not None:
            check_subjects_kept_together(splits, subjects, target,
                                         "it was made without this subject rule: delete it to make grouped folds, "
                                         f"or drop the rule ({subject_rule.source})")
        return splits
    splits = make_stratified_splits(class_presence, num_folds or DEFAULT_NUM_FOLDS, seed, subjects)
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

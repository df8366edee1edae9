"""Folds that keep a subject's cases together (ACDC: a patient's two frames), fold 'all' without a split, and
``--num_folds``."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

from conftest import ACDC, requires_acdc
from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.cross_validate import main as cross_validate_main
from suprem_auto.cli.train import main as train_main
from suprem_auto.training.splits import (SPLITS_FILE, SUBJECTS_FILE, SubjectRule, find_subject_rule,
                                         load_or_create_splits, make_stratified_splits)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ACDC_PATTERN = r"^(patient\d+)_frame"
FAST = ["--epochs", "1", "--iters_per_epoch", "2", "--val_iters", "1", "--num_workers", "0", "-device", "cpu"]


def _check_grouped(splits: List[Dict[str, List[str]]], subjects: Dict[str, str], presence: Dict[str, Set[int]],
                   num_folds: int) -> None:
    """No subject on both sides of any fold, every case in exactly one validation fold, train = the rest, every
    class held by at least ``num_folds`` subjects in every validation fold."""
    assert len(splits) == num_folds
    vals = [c for fold in splits for c in fold["val"]]
    assert sorted(vals) == sorted(presence)  # each case validated exactly once
    for fold in splits:
        assert set(fold["train"]) == set(presence) - set(fold["val"])
        train_subjects = {subjects[c] for c in fold["train"]}
        assert not train_subjects & {subjects[c] for c in fold["val"]}
    per_subject: Dict[str, Set[int]] = {}
    for case, classes in presence.items():
        per_subject.setdefault(subjects[case], set()).update(classes)
    for cls in set().union(*presence.values()):
        if sum(cls in classes for classes in per_subject.values()) >= num_folds:
            for fold in splits:
                assert any(cls in presence[c] for c in fold["val"]), (cls, fold["val"])


@requires_acdc
def test_acdc_patients_never_straddle_a_fold():
    import numpy as np
    import SimpleITK as sitk

    labels = sorted((ACDC / "labelsTr").glob("*.nii.gz"))
    presence = {p.name[: -len(".nii.gz")]: set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))) - {0}
                for p in labels}
    assert len(presence) == 140
    dataset_json = json.loads((ACDC / "dataset.json").read_text())
    rule = find_subject_rule(None, dict(dataset_json, subject_pattern=ACDC_PATTERN), ACDC / "dataset.json")
    subjects = rule.subjects(sorted(presence))
    assert len(set(subjects.values())) == 70 and subjects["patient001_frame02"] == "patient001"
    splits = make_stratified_splits(presence, 5, subjects=subjects)
    _check_grouped(splits, subjects, presence, 5)
    assert [len(f["val"]) for f in splits] == [28] * 5
    # the same cases split per case do separate patients: the rule is what keeps them together
    ungrouped = make_stratified_splits(presence, 5)
    assert any({subjects[c] for c in f["train"]} & {subjects[c] for c in f["val"]} for f in ungrouped)


def _synthetic() -> Dict[str, Set[int]]:
    """20 subjects with 1-3 time points each; class 3 only in the 5 subjects s02, s05, s09, s13, s17."""
    presence: Dict[str, Set[int]] = {}
    for s in range(20):
        for t in range(1 + s % 3):
            rare = {3} if s in (2, 5, 9, 13, 17) else set()
            presence[f"s{s:02d}_t{t}"] = {1} | ({2} if (s + t) % 2 else set()) | rare
    presence["scout_image"] = {1}  # an id the pattern does not match: its own subject
    return presence


def test_grouped_folds_on_synthetic_ids_are_grouped_stratified_balanced_and_seeded(tmp_path: Path):
    presence = _synthetic()
    rule = SubjectRule("dataset.json", pattern=r"^(s\d+)_t\d")
    subjects = rule.subjects(sorted(presence))
    assert subjects["s04_t1"] == "s04" and subjects["scout_image"] == "scout_image"
    for num_folds in (2, 3, 5):
        for seed in (0, 1, 12345):
            splits = make_stratified_splits(presence, num_folds, seed, subjects)
            _check_grouped(splits, subjects, presence, num_folds)
            sizes = [len(f["val"]) for f in splits]
            assert max(sizes) - min(sizes) <= 3, sizes  # balanced up to one subject (at most 3 cases)
    assert make_stratified_splits(presence, 5, 7, subjects) == make_stratified_splits(presence, 5, 7, subjects)
    assert make_stratified_splits(presence, 5, 7, subjects) != make_stratified_splits(presence, 5, 8, subjects)
    # the same grouping written as subjects.json in the raw folder gives the same folds
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / SUBJECTS_FILE).write_text(json.dumps({c: s for c, s in subjects.items() if c != "scout_image"}))
    table = find_subject_rule(None, {}, raw / "dataset.json", raw)
    assert table is not None and table.subjects(sorted(presence)) == subjects
    written = []
    for name in ("a", "b"):  # two preprocessed folders: the same file, written with the default seed
        (tmp_path / name).mkdir()
        written.append(load_or_create_splits(tmp_path / name, presence, raw, subject_rule=table))
    assert written[0] == written[1] == make_stratified_splits(presence, 5, subjects=subjects)
    assert json.loads((tmp_path / "a" / SPLITS_FILE).read_text()) == written[0]


def test_pattern_rules_and_their_errors_name_dataset_json(tmp_path: Path):
    ids = ["p1_a", "p1_b", "p22_a", "other"]
    assert SubjectRule("x", pattern=r"p\d+").subjects(ids) == {"p1_a": "p1", "p1_b": "p1", "p22_a": "p22",
                                                               "other": "other"}  # whole match without a group
    raw = tmp_path / "Dataset001_X"
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"subject_pattern": r"^(p\d+)_"}))
    (raw / SUBJECTS_FILE).write_text(json.dumps({"p1_a": "z"}))
    from_json = find_subject_rule(None, {}, tmp_path / "pre" / "dataset.json", raw)
    assert from_json.source == str(raw / "dataset.json") and from_json.subjects(ids)["p22_a"] == "p22"
    flag = find_subject_rule(r"_(a|b)$", {}, tmp_path / "pre" / "dataset.json", raw)  # the flag wins
    assert flag.source == "--subject_pattern" and flag.subjects(ids)["p22_a"] == "a"
    with pytest.raises(ValueError, match=re.escape(f"{raw / 'dataset.json'}: subject_pattern '(p' is not a valid "
                                                   f"regular expression")):
        SubjectRule(str(raw / "dataset.json"), pattern="(p").subjects(ids)
    with pytest.raises(ValueError, match=re.escape(f"{raw / 'dataset.json'}: subject_pattern 'case_' matches none "
                                                   f"of the 4 case ids")):
        SubjectRule(str(raw / "dataset.json"), pattern="case_").subjects(ids)


def test_splits_files_that_separate_a_subject_or_have_another_fold_count_are_refused(tmp_path: Path):
    presence = _synthetic()
    rule = SubjectRule("dataset.json", pattern=r"^(s\d+)_t\d")
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    raw.mkdir()
    pre.mkdir()
    cases = sorted(presence)
    user = [{"train": [c for c in cases if c != "s05_t1"], "val": ["s05_t1"]}]  # s05_t0 and s05_t2 stay in train
    (raw / SPLITS_FILE).write_text(json.dumps(user))
    with pytest.raises(ValueError, match=re.escape(f"{raw / SPLITS_FILE}: fold 0 puts subject 's05' in both train "
                                                   f"(s05_t0, s05_t2) and val (s05_t1)")):
        load_or_create_splits(pre, presence, raw, subject_rule=rule)
    assert not (pre / SPLITS_FILE).exists()
    assert load_or_create_splits(pre, presence, raw) == user  # without the rule the user's file is used as given
    with pytest.raises(ValueError, match=re.escape(f"{raw / SPLITS_FILE}: has 1 folds but --num_folds 5 was asked")):
        load_or_create_splits(pre, presence, raw, num_folds=5)
    # a generated file (no user file) made before the rule was given: refused, telling how to go on
    (raw / SPLITS_FILE).unlink()
    with pytest.raises(ValueError, match=re.escape(f"{pre / SPLITS_FILE}: fold 0 puts subject 's05'")) as err:
        load_or_create_splits(pre, presence, raw, subject_rule=rule)
    assert "delete it to make grouped folds, or drop the rule" in str(err.value)
    (pre / SPLITS_FILE).unlink()
    grouped = load_or_create_splits(pre, presence, raw, num_folds=4, subject_rule=rule)
    assert len(grouped) == 4 and load_or_create_splits(pre, presence, raw, subject_rule=rule) == grouped
    with pytest.raises(ValueError, match=re.escape(f"{pre / SPLITS_FILE}: has 4 folds but --num_folds 5 was asked; "
                                                   f"delete the file to make new folds, or give --num_folds 4")):
        load_or_create_splits(pre, presence, raw, num_folds=5, subject_rule=rule)


def _written(folder: Path) -> List[str]:
    """Files under ``folder`` (none when it does not exist)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _roots_flags(roots) -> List[str]:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def test_four_real_cases_train_fold_all_and_two_folds(tmp_path: Path, capsys):
    roots = make_training_roots(tmp_path, 4, tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))
    pre = roots.preprocessed / DATASET
    model = roots.results / DATASET / "SupremTrainer__suprem_plans__3d_fullres"
    flags = _roots_flags(roots)
    assert train_main(["4", "3d_fullres", "all", *FAST, *flags]) == 0
    assert (model / "fold_all" / "checkpoint_final.pth").is_file()
    assert not (pre / SPLITS_FILE).exists()  # fold 'all' made no split

    capsys.readouterr()
    assert train_main(["4", "3d_fullres", "0", *FAST, *flags]) == 2
    err = capsys.readouterr().err
    assert "4 cases cannot be split into 5 folds: give --num_folds 4" in err and "fold 'all'" in err
    assert not (pre / SPLITS_FILE).exists() and _written(model / "fold_0") == []  # refused before writing anything

    cases = sorted(p.name[: -len(".nii.gz")] for p in (roots.raw / DATASET / "labelsTr").glob("*.nii.gz"))
    (roots.raw / DATASET / SUBJECTS_FILE).write_text(json.dumps({cases[0]: "A", cases[3]: "A",
                                                                 cases[1]: "B", cases[2]: "B"}))
    # the flag wins over subjects.json: one subject for all four cases cannot be split
    assert train_main(["4", "3d_fullres", "0", "--num_folds", "2", "--subject_pattern", "^(hippocampus)_",
                       *FAST, *flags]) == 2
    assert "4 cases of 1 subject(s) cannot be split into 2 folds: train fold 'all'" in capsys.readouterr().err

    assert train_main(["4", "3d_fullres", "0", "--num_folds", "2", "--no_final_validation", *FAST, *flags]) == 0
    splits = json.loads((pre / SPLITS_FILE).read_text())
    assert sorted(sorted(f["val"]) for f in splits) == [sorted([cases[0], cases[3]]), [cases[1], cases[2]]]
    hp = json.loads((model / "fold_0" / "hyperparameters.json").read_text())
    assert hp["config"]["num_folds"] == 2

    capsys.readouterr()
    assert train_main(["4", "3d_fullres", "2", "--num_folds", "2", *FAST, *flags]) == 2
    assert "fold 2 does not exist with --num_folds 2 (folds 0-1, or 'all')" in capsys.readouterr().err
    assert train_main(["4", "3d_fullres", "2", *FAST, *flags]) == 2
    assert f"fold 2 does not exist: {SPLITS_FILE} has folds 0-1" in capsys.readouterr().err
    assert train_main(["4", "3d_fullres", "1", "--num_folds", "3", *FAST, *flags]) == 2
    assert f"{pre / SPLITS_FILE}: has 2 folds but --num_folds 3 was asked" in capsys.readouterr().err
    assert _written(model / "fold_2") == []

    # suprem_cross_validate: --num_folds picks the folds (0 1) and reaches every trainer
    assert cross_validate_main(["-d", "4", "--num_folds", "2", "--folds", "0", "2", *flags]) == 1
    assert "--folds 2 does not exist with --num_folds 2 (folds 0-1)" in capsys.readouterr().err
    assert cross_validate_main(["-d", "4", "--num_folds", "2", *FAST, *flags]) == 0
    summary = json.loads((roots.results / DATASET / "crossval" / "crossval_summary.json").read_text())
    assert summary["folds"] == [0, 1] and summary["models"][0]["finished_folds"] == [0, 1]
    assert json.loads((pre / SPLITS_FILE).read_text()) == splits

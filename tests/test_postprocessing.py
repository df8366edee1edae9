"""Connected-component post-processing: chosen when it helps, left out when it hurts, replayed exactly."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_auto.evaluation import (apply_postprocessing, apply_postprocessing_to_folder, determine_postprocessing,
                                    evaluate_folder, load_postprocessing)
from suprem_auto.evaluation.postprocessing import keep_largest_component
from suprem_auto.imageio import read_segmentation, write_segmentation

from conftest import HIPPO_CASES, hippo_label

CASES = HIPPO_CASES[:3]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_keep_largest_component_of_union_and_of_one_label():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[1:4, 1:4, 1:4] = 1          # 27 voxels of label 1 ...
    seg[1:4, 1:4, 4:6] = 2          # ... touching 18 of label 2: one foreground component of 45
    seg[7:9, 7:9, 7:9] = 1          # a separate 8-voxel blob of label 1
    seg[8, 0, 9] = 2                # a single stray voxel of label 2
    union = keep_largest_component(seg, [1, 2])
    assert np.count_nonzero(union) == 45 and union[8, 8, 8] == 0 and union[8, 0, 9] == 0
    only_2 = keep_largest_component(seg, [2])
    assert np.count_nonzero(only_2 == 2) == 18 and np.count_nonzero(only_2 == 1) == 27 + 8
    diagonal = np.zeros((3, 3, 3), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1  # corner neighbours: one component under full connectivity
    assert np.array_equal(keep_largest_component(diagonal, [1]), diagonal)


def _real_folders(tmp_path: Path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    for case in CASES:
        src = hippo_label(case)
        shutil.copy(src, ref_dir / src.name)
    return ref_dir, pred_dir


def test_spurious_blob_is_removed(tmp_path: Path):
    ref_dir, pred_dir = _real_folders(tmp_path)
    for case in CASES:
        seg, props = read_segmentation(ref_dir / f"{case}.nii.gz")
        pred = seg[0].copy()
        pred[np.roll(pred == 1, 1, axis=0) & (pred == 0)] = 1   # a slightly too large label 1
        pred[0:3, 0:3, 0:3] = 1                                  # far-away false positive blob (corner)
        pred[-2:, -2:, -2:] = 2                                  # and one of label 2
        write_segmentation(pred, pred_dir / f"{case}.nii.gz", props)
    before = evaluate_folder(ref_dir, pred_dir, labels=[1, 2], out_dir=tmp_path / "eval_before")
    pp = determine_postprocessing(ref_dir, pred_dir, labels=[1, 2], out_json=tmp_path / "pp.json")
    assert pp["apply"]["keep_largest_foreground_component"] is True
    assert pp["dice_after"]["foreground_mean"] > pp["dice_before"]["foreground_mean"]
    assert pp["dice_before"]["1"] == pytest.approx(before["mean"]["1"]["dice"])
    assert load_postprocessing(tmp_path / "pp.json") == pp

    out_dir = tmp_path / "pp_out"
    apply_postprocessing_to_folder(pred_dir, out_dir, tmp_path / "pp.json")
    after = evaluate_folder(ref_dir, out_dir, labels=[1, 2], out_dir=tmp_path / "eval_after")
    assert after["mean"]["1"]["dice"] == pytest.approx(pp["dice_after"]["1"])
    for case in CASES:
        cleaned = read_segmentation(out_dir / f"{case}.nii.gz")[0][0]
        assert not cleaned[0:3, 0:3, 0:3].any() and not cleaned[-2:, -2:, -2:].any()
        ref = read_segmentation(ref_dir / f"{case}.nii.gz")[0][0]
        assert np.array_equal(cleaned == 2, ref == 2)            # label 2 is back to the reference exactly


def _write(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def test_postprocessing_left_out_when_it_hurts(tmp_path: Path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for i in range(3):
        ref = np.zeros((16, 16, 16), np.uint8)
        ref[2:7, 2:7, 2:7] = 1                  # two real, separate structures of label 1
        ref[10:13, 10:13, 10:13] = 1
        ref[2:5, 10:14, 2:5] = 2                # and a separate label 2
        pred = ref.copy()
        pred[2, 2, 2 + i] = 0                   # small, harmless errors
        pred[10, 10, 9] = 1
        _write(ref, ref_dir / f"case_{i}.nii.gz")
        _write(pred, pred_dir / f"case_{i}.nii.gz")
    pp = determine_postprocessing(ref_dir, pred_dir, labels=[1, 2])
    assert pp["apply"]["keep_largest_foreground_component"] is False
    assert pp["apply"]["keep_largest_component_of"] == []
    assert pp["dice_after"] == pp["dice_before"]
    assert (pred_dir / "postprocessing.json").exists()
    pred = read_segmentation(pred_dir / "case_0.nii.gz")[0][0]
    assert np.array_equal(apply_postprocessing(pred, pp), pred)
    # the union step would have removed a real structure: it was measured as worse
    assert pp["dice_after_foreground_step"]["foreground_mean"] < pp["dice_before"]["foreground_mean"]


def test_per_class_step_only_where_that_class_improves(tmp_path: Path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for i in range(2):
        ref = np.zeros((16, 16, 16), np.uint8)
        ref[2:7, 2:7, 2:7] = 1
        ref[2:7, 2:7, 7:10] = 2                 # label 2 touches label 1: one foreground component
        ref[11:14, 11:14, 11:14] = 1            # label 1 has a second real component
        pred = ref.copy()
        pred[12:14, 2:4, 12:14] = 2             # spurious separate label-2 blob
        _write(ref, ref_dir / f"case_{i}.nii.gz")
        _write(pred, pred_dir / f"case_{i}.nii.gz")
    pp = determine_postprocessing(ref_dir, pred_dir, labels=[1, 2])
    assert pp["apply"]["keep_largest_foreground_component"] is False   # it would drop a real label-1 part
    assert pp["apply"]["keep_largest_component_of"] == [2]
    assert pp["per_class_decisions"]["1"]["applied"] is False
    assert pp["dice_after"]["2"] == 1.0 and pp["dice_after"]["1"] == 1.0
    pred = read_segmentation(pred_dir / "case_0.nii.gz")[0][0]
    ref = read_segmentation(ref_dir / "case_0.nii.gz")[0][0]
    assert _dice(apply_postprocessing(pred, pp) == 2, ref == 2) == 1.0

"""Metrics and folder evaluation against hand-computed values, brute force and MONAI."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from suprem_auto.cli.evaluate import main as evaluate_main
from suprem_auto.evaluation import EvaluationError, evaluate_arrays, evaluate_folder
from suprem_auto.imageio import read_segmentation, write_segmentation
from suprem_auto.utils.atomic import load_json

from conftest import HIPPO, HIPPO_CASES, hippo_label

CASES = HIPPO_CASES[:3]


def cube(shape, lo, hi, value=1):
    seg = np.zeros(shape, dtype=np.uint8)
    seg[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return seg


def sphere(shape, centre, radius_vox):
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius_vox ** 2).astype(np.uint8)


def brute_surface(mask):
    """Voxels of mask with a 6-neighbour outside the mask (outside the array = background)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask, dtype=bool)
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def brute_hd95_nsd(ref, pred, spacing, tol):
    a = np.argwhere(brute_surface(ref.astype(bool))) * np.asarray(spacing, float)
    b = np.argwhere(brute_surface(pred.astype(bool))) * np.asarray(spacing, float)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    a_to_b, b_to_a = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))
    nsd = ((a_to_b <= tol).sum() + (b_to_a <= tol).sum()) / (a_to_b.size + b_to_a.size)
    return hd95, nsd


def test_two_cubes_exact_overlap_and_volumes():
    ref = cube((10, 10, 10), (2, 2, 2), (6, 6, 6))          # 64 voxels
    pred = cube((10, 10, 10), (2, 2, 3), (6, 6, 7))         # shifted by 1 along x: overlap 4*4*3 = 48
    m = evaluate_arrays(ref, pred, spacing=(2.0, 1.0, 1.0), labels=[1])["1"]
    assert m["tp"] == 48 and m["fp"] == 16 and m["fn"] == 16 and m["tn"] == 1000 - 80
    assert m["dice"] == pytest.approx(96 / 128)
    assert m["iou"] == pytest.approx(48 / 80)
    assert m["volume_ref_ml"] == pytest.approx(64 * 2.0 / 1000)
    assert m["volume_fp_ml"] == pytest.approx(16 * 2.0 / 1000)
    # faces move by 1 voxel along x (1 mm): every surface distance is <= 1 mm
    assert m["hd95"] <= 1.0 and m["nsd"] == 1.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0)])
@pytest.mark.parametrize("shift_axis", [0, 2])
def test_shifted_sphere_matches_brute_force(spacing, shift_axis):
    ref = sphere((18, 18, 18), (8, 8, 8), 5)
    centre = [8, 8, 8]
    centre[shift_axis] += 2
    pred = sphere((18, 18, 18), centre, 5)
    tol = 1.5
    m = evaluate_arrays(ref, pred, spacing, [1], nsd_tolerance_mm=tol)["1"]
    hd95, nsd = brute_hd95_nsd(ref, pred, spacing, tol)
    assert m["hd95"] == pytest.approx(hd95, abs=1e-9)
    assert m["nsd"] == pytest.approx(nsd, abs=1e-12)
    # the shift is 2 voxels = 2 * spacing mm: HD95 lies between 2 mm and that shift; part of the surface is off by > tol
    assert 2.0 - 1e-9 <= m["hd95"] <= 2 * spacing[shift_axis] + 1e-9
    assert 0.5 < m["nsd"] < 1.0
    if spacing[shift_axis] == 3.0:                           # the anisotropic spacing is really used
        assert m["hd95"] > 3.0


def test_empty_policy():
    empty = np.zeros((6, 6, 6), np.uint8)
    blob = cube((6, 6, 6), (1, 1, 1), (3, 3, 3))            # 8 voxels
    both = evaluate_arrays(empty, empty, (1, 1, 1), [1])["1"]
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "nsd", "hd95"))
    assert both["empty_reference"] and both["empty_prediction"]
    false_pos = evaluate_arrays(empty, blob, (1, 1, 1), [1])["1"]
    assert (false_pos["dice"], false_pos["iou"], false_pos["nsd"]) == (0.0, 0.0, 0.0)
    assert math.isnan(false_pos["hd95"]) and false_pos["fp"] == 8 and false_pos["volume_fp_ml"] == pytest.approx(0.008)
    assert false_pos["empty_reference"] and not false_pos["empty_prediction"]
    missed = evaluate_arrays(blob, empty, (1, 1, 1), [1])["1"]
    assert (missed["dice"], missed["iou"], missed["nsd"]) == (0.0, 0.0, 0.0)
    assert math.isnan(missed["hd95"]) and missed["fn"] == 8
    assert missed["empty_prediction"] and not missed["empty_reference"]


def test_ignore_label_and_regions():
    ref = cube((8, 8, 8), (1, 1, 1), (4, 4, 4), value=1)
    ref[5:7, 5:7, 5:7] = 3                                   # ignore label, 8 voxels
    pred = ref.copy()
    pred[pred == 3] = 1                                      # predicted label 1 inside ignored voxels
    pred[1, 1, 1] = 2
    metrics = evaluate_arrays(ref, pred, (1, 1, 1), [1, (1, 2)], ignore_label=3)
    assert metrics["1"]["fp"] == 0 and metrics["1"]["fn"] == 1 and metrics["1"]["tn"] == 512 - 8 - 27
    assert metrics["1"]["dice"] == pytest.approx(2 * 26 / (26 + 27))
    assert metrics["(1, 2)"]["dice"] == 1.0                  # the region 1+2 covers the swapped voxel


def _hippo_label(case: str) -> np.ndarray:
    return read_segmentation(hippo_label(case))[0][0]


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(np.float32))
    return torch.stack([1 - m, m])[None]


def test_matches_monai_on_real_hippocampus_label():
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    ref = (_hippo_label(CASES[0]) == 1)
    pred = np.roll(ndimage.binary_erosion(ref), 2, axis=1)
    pred[0:3, 0:3, 0:3] = True                                # a distant false-positive blob
    spacing = (1.5, 1.0, 0.7)
    ours = evaluate_arrays(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1], nsd_tolerance_mm=1.5)["1"]
    y_pred, y = _one_hot(pred), _one_hot(ref)
    dice = compute_dice(y_pred, y, include_background=False).item()
    hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing).item()
    nsd = compute_surface_dice(y_pred, y, class_thresholds=[1.5], include_background=False, spacing=spacing).item()
    assert ours["dice"] == pytest.approx(dice, abs=1e-6)
    assert ours["hd95"] == pytest.approx(hd95, abs=1e-4)
    assert ours["nsd"] == pytest.approx(nsd, abs=1e-6)
    assert 0.2 < ours["dice"] < 0.95 and ours["hd95"] > 1.0  # a non-trivial comparison


@pytest.fixture()
def hippo_folders(tmp_path: Path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, case in enumerate(CASES):
        src = hippo_label(case)
        shutil.copy(src, ref_dir / src.name)
        seg, props = read_segmentation(src)
        pred = np.roll(seg[0], i, axis=2)                    # 0, 1, 2 voxel shifts
        pred[rng.random(pred.shape) < 0.01] = 2
        write_segmentation(pred, pred_dir / src.name, props)
    return ref_dir, pred_dir


def test_evaluate_folder_writes_consistent_csv_and_summary(hippo_folders, tmp_path):
    ref_dir, pred_dir = hippo_folders
    out = tmp_path / "out"
    summary = evaluate_folder(ref_dir, pred_dir, labels=None, num_processes=1, out_dir=out)
    table = pd.read_csv(out / "metrics_per_case.csv")
    on_disk = load_json(out / "summary.json")
    assert on_disk["labels"] == ["1", "2"] == summary["labels"]
    assert len(table) == 6 and set(table["case"]) == set(CASES)
    for key in ("1", "2"):
        rows = table[table["class"] == int(key)]
        for metric in ("dice", "iou", "nsd", "hd95", "volume_ref_ml"):
            assert on_disk["mean"][key][metric] == pytest.approx(rows[metric].mean())
    assert on_disk["foreground_mean"]["dice"] == pytest.approx(table["dice"].groupby(table["class"]).mean().mean())
    # per-case values equal the in-memory evaluation of the same arrays
    ref = read_segmentation(ref_dir / f"{CASES[2]}.nii.gz")
    pred = read_segmentation(pred_dir / f"{CASES[2]}.nii.gz")[0]
    direct = evaluate_arrays(ref[0], pred, ref[1]["spacing"], [1, 2])
    case_entry = next(c for c in on_disk["metric_per_case"] if c["case"] == CASES[2])
    assert case_entry["metrics"]["2"]["hd95"] == pytest.approx(direct["2"]["hd95"])
    shifted = table[table["case"] == CASES[2]]["dice"].mean()
    exact = table[table["case"] == CASES[0]]["dice"].mean()
    assert shifted < exact < 1.0                             # bigger shift, lower Dice
    assert on_disk["missing_predictions"] == []


def test_missing_prediction_is_reported(hippo_folders):
    ref_dir, pred_dir = hippo_folders
    (pred_dir / f"{CASES[1]}.nii.gz").unlink()
    with pytest.warns(UserWarning, match=CASES[1]):
        summary = evaluate_folder(ref_dir, pred_dir, labels=[1, 2])
    assert summary["missing_predictions"] == [CASES[1]]
    assert summary["num_cases"] == 2
    assert (pred_dir / "summary.json").exists()


def test_geometry_mismatch_names_the_file(hippo_folders):
    ref_dir, pred_dir = hippo_folders
    seg, props = read_segmentation(ref_dir / f"{CASES[0]}.nii.gz")
    props = {**props, "geometry": {**props["geometry"], "spacing": [2.0, 1.0, 1.0]},
             "original_geometry": {**props["original_geometry"], "spacing": [2.0, 1.0, 1.0]}}
    write_segmentation(seg[0], pred_dir / f"{CASES[0]}.nii.gz", props)
    with pytest.raises(EvaluationError, match=f"{CASES[0]}.*spacing"):
        evaluate_folder(ref_dir, pred_dir, labels=[1])


def test_cli_uses_dataset_json_labels(hippo_folders, tmp_path, capsys):
    ref_dir, pred_dir = hippo_folders
    out = tmp_path / "cli_out"
    assert evaluate_main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(HIPPO / "dataset.json"),
                          "--tolerance_mm", "1", "-o", str(out)]) == 0
    summary = load_json(out / "summary.json")
    assert summary["labels"] == ["1", "2"] and summary["nsd_tolerance_mm"] == 1.0
    assert "foreground mean" in capsys.readouterr().out


def test_parallel_evaluation_equals_serial(hippo_folders, tmp_path):
    ref_dir, pred_dir = hippo_folders
    serial = evaluate_folder(ref_dir, pred_dir, labels=[1, 2], out_dir=tmp_path / "serial")
    parallel = evaluate_folder(ref_dir, pred_dir, labels=[1, 2], num_processes=2, out_dir=tmp_path / "parallel")
    assert parallel["metric_per_case"] == serial["metric_per_case"]


def test_surface_metrics_can_be_skipped():
    ref = cube((8, 8, 8), (1, 1, 1), (5, 5, 5))
    pred = cube((8, 8, 8), (2, 1, 1), (6, 5, 5))
    full = evaluate_arrays(ref, pred, (1, 1, 1), [1])["1"]
    fast = evaluate_arrays(ref, pred, (1, 1, 1), [1], surface_metrics=False)["1"]
    assert fast["dice"] == full["dice"] and math.isnan(fast["hd95"]) and math.isnan(fast["nsd"])
    assert full["hd95"] == 1.0

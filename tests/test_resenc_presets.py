"""Residual-encoder presets (-pl resenc_m / resenc_l / resenc_xl): nnU-Net's ResEnc planner rules, and the default
trainer on such plans with --iterations and --budget, then a prediction. Real hippocampus cases.

Where the expected numbers come from: nnU-Net v2 (nnunetv2 2.x with dynamic_network_architectures 0.4.4) was run
on the same inputs, ``nnUNetv2_extract_fingerprint -d 4`` + ``nnUNetv2_plan_experiment -d 4 -pl
nnUNetPlannerResEnc{M,L,XL}`` on the 6 cases of ``hippo_raw``, and on the synthetic fingerprints below written as
its ``dataset_fingerprint.json``; its plans (patch, batch, stages, features, strides, kernels, blocks, decoder
convs, lowres or not) are the numbers asserted here. The activation-voxel estimate is also counted by hand.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import copy_hippocampus, requires_shared_hippocampus
from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess
from suprem_auto.cli.predict import main as predict_main
from suprem_auto.cli.train import main as train_main
from suprem_auto.planning import PlansError, list_presets, load_plans, plan_preset, resolve_preset_names
from suprem_auto.planning.resenc_planner import check_resenc_preset
from suprem_auto.planning.topology import pool_and_conv_topology, resenc_unet_feature_map_voxels

DATASET = "Dataset004_Hippocampus"
FAST = ["--num_workers", "1", "-device", "cpu"]
#: imports, splits, worker start and the first oneDNN calls on 2 shared cores, on top of a --budget
START_UP_MARGIN_S = 30.0


def _roots_flags(tmp: Path, results: str = "results") -> list:
    return ["--raw", str(tmp / "raw"), "--preprocessed", str(tmp / "pre"), "--results", str(tmp / results)]


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """6 real hippocampus cases, planned and preprocessed by ``suprem_plan_and_preprocess -pl resenc_m``."""
    tmp = tmp_path_factory.mktemp("resenc")
    copy_hippocampus(tmp / "raw", 6)
    assert main_plan_and_preprocess(["-d", "4", "-pl", "resenc_m", "-np", "1", *_roots_flags(tmp)]) == 0
    return tmp


def _synthetic_fingerprint(spacings, shapes):
    stats = {"mean": 0.0, "std": 1.0, "median": 0.0, "min": -1.0, "max": 1.0, "percentile_00_5": -1.0,
             "percentile_99_5": 1.0}
    return {"spacings": spacings, "shapes_after_crop": shapes, "median_relative_size_after_cropping": 1.0,
            "foreground_intensity_properties_per_channel": {"0": stats}}


def test_estimate_is_the_resenc_activation_count():
    # patch 40x56x40, 4 stages of widths 32..256, stage sizes 89600 / 11200 / 1400 / 175 voxels, 3 outputs
    top = pool_and_conv_topology([1.0, 1.0, 1.0], [40, 56, 40])
    assert top.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    by_hand = (32 * 89600                                 # stem
               + 2 * 32 * 89600 * 1                       # stage 0: 1 block of 2 convs, no shortcut conv
               + 2 * 64 * 11200 * 3 + 64 * 11200          # stage 1: 3 blocks + the first block's 1x1 shortcut
               + 2 * 128 * 1400 * 4 + 128 * 1400
               + 2 * 256 * 175 * 6 + 256 * 175
               + (128 + 128) * 1400                       # decoder: transposed conv + 1 conv per stage
               + (64 + 64) * 11200
               + (32 + 32) * 89600
               + 3 * 89600)                               # segmentation output at full resolution
    assert by_hand == 23_609_600  # also what dynamic_network_architectures' compute_conv_feature_map_size returns
    assert resenc_unet_feature_map_voxels(top.patch_size, top, [32, 64, 128, 256], 3, [1, 3, 4, 6], [1, 1, 1]) == by_hand


@requires_shared_hippocampus  # the expected numbers are nnU-Net 2.8.1's plans for these 6 shared cases
def test_resenc_m_plans_on_hippocampus(planned):
    out = planned / "pre" / DATASET
    plans = load_plans(out / "resenc_m_plans.json")
    default = load_plans(out / "suprem_plans.json")
    assert (plans["plans_name"], plans["preset"], plans["planner"], plans["gpu_memory_gb"]) == \
        ("resenc_m_plans", "resenc_m", "resenc", 8.0)
    assert set(plans["configurations"]) == set(default["configurations"]) == {"2d", "3d_fullres"}
    full = plans["configurations"]["3d_fullres"]
    kwargs = full["architecture"]["kwargs"]
    assert full["architecture"]["name"] == "resenc_unet"
    assert full["patch_size"] == [40, 56, 40]
    assert kwargs == {"n_stages": 4, "features_per_stage": [32, 64, 128, 256], "kernel_sizes": [[3, 3, 3]] * 4,
                      "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], "n_blocks_per_stage": [1, 3, 4, 6],
                      "n_conv_per_stage_decoder": [1, 1, 1]}
    # batch: the memory rule gives round(680e6 / 23.6e6 * 2) = 58, capped by the whole dataset (not 5 % of it):
    # median 35 x 51.5 x 35.5 voxels x 6 cases / 89600 patch voxels = 4.3 -> 4. The default plans' 5 % cap gives 2.
    assert full["estimated_feature_map_voxels"] == 23_609_600
    assert round(680e6 / 23_609_600 * 2) == 58
    assert full["batch_size"] == 4 and default["configurations"]["3d_fullres"]["batch_size"] == 2
    flat = plans["configurations"]["2d"]
    assert flat["patch_size"] == [56, 40] and flat["batch_size"] == 171
    assert flat["architecture"]["kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6]
    assert flat["architecture"]["kwargs"]["features_per_stage"] == [32, 64, 128, 256]
    # the default planner's preprocessing, stored again under this plans' name (our storage keys on the plans name)
    for key in ("spacing", "normalization", "resampling", "median_image_size_in_voxels"):
        assert full[key] == default["configurations"]["3d_fullres"][key], key
    assert plans["transpose_forward"] == default["transpose_forward"]
    assert full["data_identifier"] == "resenc_m_plans_3d_fullres"
    case = sorted((out / "suprem_plans_3d_fullres").glob("*_seg.npy"))[0].name[:-len("_seg.npy")]
    for suffix in (".npy", "_seg.npy"):
        assert np.array_equal(np.load(out / "resenc_m_plans_3d_fullres" / f"{case}{suffix}"),
                              np.load(out / "suprem_plans_3d_fullres" / f"{case}{suffix}"))


CT_LIKE = _synthetic_fingerprint([[2.5, 0.8, 0.8]] * 30, [[200, 512, 512]] * 30)
THICK_SLICES = _synthetic_fingerprint([[5.0, 1.0, 0.8]] * 18 + [[3.0, 1.0, 0.8]] * 2, [[20, 300, 320]] * 20)


@pytest.mark.parametrize("fingerprint, preset, expected", [
    # {configuration: (patch, batch)} from nnU-Net's ResEnc planners on the same fingerprints
    (CT_LIKE, "resenc_m", {"2d": ([512, 512], 12), "3d_fullres": ([64, 160, 160], 2),
                           "3d_lowres": ([96, 160, 160], 2)}),
    (CT_LIKE, "resenc_l", {"2d": ([512, 512], 35), "3d_fullres": ([96, 256, 224], 2),
                           "3d_lowres": ([128, 224, 192], 2)}),
    (CT_LIKE, "resenc_xl", {"2d": ([512, 512], 52), "3d_fullres": ([112, 320, 256], 2)}),
    (THICK_SLICES, "resenc_m", {"2d": ([320, 320], 32), "3d_fullres": ([20, 256, 256], 2)}),
    (THICK_SLICES, "resenc_l", {"2d": ([320, 320], 90), "3d_fullres": ([24, 320, 320], 4)}),
    (THICK_SLICES, "resenc_xl", {"2d": ([320, 320], 133), "3d_fullres": ([24, 320, 320], 7)}),
])
def test_memory_target_sets_patch_batch_and_depth(fingerprint, preset, expected):
    plans = plan_preset(preset, fingerprint, ["CT"], "Dataset999_X", num_outputs=3)
    got = {name: (c["patch_size"], c["batch_size"]) for name, c in plans["configurations"].items()}
    if "3d_lowres" in expected:  # nnU-Net adds the cascade, which is 3d_fullres plus previous_stage
        expected = dict(expected, **{"3d_cascade_fullres": expected["3d_fullres"]})
    assert got == expected
    reference = {"resenc_m": 680e6, "resenc_l": 2.1e9, "resenc_xl": 3.6e9}[preset]
    for name, config in plans["configurations"].items():
        kwargs = config["architecture"]["kwargs"]
        n = kwargs["n_stages"]
        assert kwargs["n_blocks_per_stage"] == ([1, 3, 4] + [6] * 10)[:n]
        assert kwargs["n_conv_per_stage_decoder"] == [1] * (n - 1)
        if name != "2d":
            assert config["estimated_feature_map_voxels"] <= reference  # loop condition: estimate > reference
    if fingerprint is THICK_SLICES:
        assert plans["configurations"]["3d_fullres"]["architecture"]["kwargs"]["kernel_sizes"][0] == [1, 3, 3]


def test_other_memory_target_scales_the_reference_with_a_warning():
    with pytest.warns(UserWarning, match="calibrated for 24 GB"):
        small = plan_preset("resenc_l", CT_LIKE, ["CT"], "Dataset999_X", gpu_memory_gb=8, num_outputs=3)
    full = small["configurations"]["3d_fullres"]
    assert small["gpu_memory_gb"] == 8.0 and full["estimated_feature_map_voxels"] <= 2.1e9 / 3
    assert np.prod(full["patch_size"]) < 96 * 256 * 224


def test_preset_names_and_checks():
    assert list_presets() == ["suprem_segresnet", "suprem_swin_unetr", "suprem_unet"]
    assert list_presets("resenc") == ["resenc_l", "resenc_m", "resenc_xl"]
    assert resolve_preset_names(["all"]) == list_presets()
    assert resolve_preset_names(["resenc_l", "resenc_l"]) == ["resenc_l"]
    with pytest.raises(PlansError, match="resenc_m"):
        resolve_preset_names(["resenc_s"])
    with pytest.raises(PlansError, match="num_outputs"):
        plan_preset("resenc_m", CT_LIKE, ["CT"], "Dataset999_X")
    with pytest.raises(PlansError, match="x.json: field 'feature_map_reference' is missing"):
        check_resenc_preset({"preset": "x", "planner": "resenc", "gpu_memory_gb": 8}, "x.json")


def _fold(tmp: Path, results: str) -> Path:
    return tmp / results / DATASET / "SupremTrainer__resenc_m_plans__3d_fullres" / "fold_0"


def test_default_trainer_trains_and_predicts_resenc_plans(planned, tmp_path):
    # the plans' patch and depth, a quarter of the widths (8..64) to keep the test short
    assert train_main(["4", "3d_fullres", "0", "-p", "resenc_m_plans", "--iterations", "3", "--val_iters", "1",
                       "--network_width", "0.25", *FAST, *_roots_flags(planned, "results_iter")]) == 0
    fold = _fold(planned, "results_iter")
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ckpt["architecture"]["name"] == "resenc_unet" and ckpt["plans_name"] == "resenc_m_plans"
    assert ckpt["architecture"]["kwargs"]["features_per_stage"] == [8, 16, 32, 64]
    assert ckpt["architecture"]["kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6]
    assert all(torch.isfinite(v).all() for v in ckpt["network_weights"].values() if v.is_floating_point())
    image = next((planned / "raw" / DATASET / "imagesTr").glob("*_0000.nii.gz"))
    assert predict_main(["-i", str(image), "-o", str(tmp_path / "pred"), "-d", "4", "-c", "3d_fullres",
                         "-p", "resenc_m_plans", "-f", "0", "--disable_tta", "-device", "cpu",
                         *_roots_flags(planned, "results_iter")]) == 0
    written = tmp_path / "pred" / image.name.replace("_0000.nii.gz", ".nii.gz")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(written)))
    assert seg.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
    assert set(np.unique(seg)) <= {0, 1, 2}


def test_budget_run_narrows_resenc_on_cpu(planned):
    budget = 20
    start = time.monotonic()
    assert train_main(["4", "3d_fullres", "0", "-p", "resenc_m_plans", "--budget", f"{budget}s", *FAST,
                       *_roots_flags(planned, "results_budget")]) == 0
    assert time.monotonic() - start <= budget + START_UP_MARGIN_S
    fold = _fold(planned, "results_budget")
    hp = json.loads((fold / "hyperparameters.json").read_text())
    width = json.loads((fold / "width_choice.json").read_text())["width"]  # 20 s: the recipe's fallback, 0.25
    assert hp["recipe"]["name"] == "short_budget" and hp["config"]["network_width"] == width
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ckpt["architecture"]["name"] == "resenc_unet"
    assert ckpt["architecture"]["kwargs"]["features_per_stage"] == [int(f * width) for f in (32, 64, 128, 256)]
    assert ckpt["budget_plan"]["kind"] == "clock"
    assert json.loads((fold / "budget_plan.json").read_text())["iteration"] >= 1

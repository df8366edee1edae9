"""Planner heuristics, preset plans and plans validation."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from planning_fixtures import make_ct_dataset, make_hippocampus
from suprem_auto.dataset import load_raw_dataset_folder
from suprem_auto.fingerprint import extract_fingerprint
from suprem_auto.planning import (PlansError, list_presets, load_plans, plan_default, plan_preset,
                                  pool_and_conv_topology, save_plans, validate_plans)
from suprem_auto.planning.default_planner import fullres_target_spacing


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    ds = load_raw_dataset_folder(make_hippocampus(tmp_path_factory.mktemp("raw"), 10))
    return ds, extract_fingerprint(ds, num_processes=1, progress=False)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    ds = load_raw_dataset_folder(make_ct_dataset(tmp_path_factory.mktemp("raw")))
    return ds, extract_fingerprint(ds, num_processes=1, progress=False)


def _total_stride(config):
    return np.prod(np.asarray(config["architecture"]["kwargs"]["strides"]), axis=0)


def _synthetic_fingerprint(spacings, shapes, channel="CT"):
    stats = {"mean": 0.0, "std": 1.0, "median": 0.0, "min": -1.0, "max": 1.0, "percentile_00_5": -1.0,
             "percentile_99_5": 1.0}
    return {"spacings": spacings, "shapes_after_crop": shapes, "median_relative_size_after_cropping": 1.0,
            "foreground_intensity_properties_per_channel": {"0": stats}}


def test_hippocampus_default_plans_are_valid_and_sane(hippo):
    ds, fp = hippo
    plans = validate_plans(plan_default(fp, ds.channel_names, 3, ds.name))
    assert set(plans["configurations"]) == {"2d", "3d_fullres"}  # the patch covers the image: no lowres
    median_shape = np.median(np.asarray(fp["shapes_after_crop"]), axis=0)
    for name, config in plans["configurations"].items():
        patch = np.asarray(config["patch_size"])
        stride = _total_stride(config)
        assert np.all(patch % stride == 0), name
        assert np.all(patch <= np.ceil(median_shape[-len(patch):] / stride) * stride), name
        kwargs = config["architecture"]["kwargs"]
        cap = 320 if len(patch) == 3 else 512
        assert kwargs["features_per_stage"] == [min(32 * 2 ** i, cap) for i in range(kwargs["n_stages"])]
        assert all(k == [3] * len(patch) for k in kwargs["kernel_sizes"])  # isotropic 1 mm
        assert np.all((patch // stride)[stride > 1] >= 4)  # bottleneck feature map at least 4 where pooled
        assert config["batch_size"] >= 2
        assert config["normalization"] == [{"scheme": "zscore", "use_mask": False, "params": {}}]
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]


def test_anisotropic_spacing_rule_transpose_and_kernels():
    # 20 cases at 5 mm slices with few slices, two at 3 mm: the coarse axis takes its 10th percentile
    spacings = [[1.0, 0.8, 5.0]] * 18 + [[1.0, 0.8, 3.0]] * 2
    shapes = [[300, 320, 20]] * 20
    target = fullres_target_spacing(np.asarray(spacings), np.asarray(shapes, dtype=float))
    assert target[2] == pytest.approx(np.percentile([s[2] for s in spacings], 10))
    plans = plan_default(_synthetic_fingerprint(spacings, shapes), ["CT"], 2, "Dataset999_X")
    assert plans["transpose_forward"] == [2, 0, 1]
    assert [plans["transpose_forward"][b] for b in plans["transpose_backward"]] == [0, 1, 2]
    fullres = plans["configurations"]["3d_fullres"]["architecture"]["kwargs"]
    assert fullres["kernel_sizes"][0] == [1, 3, 3]  # no convolution across coarse slices at first
    assert fullres["strides"][1][0] == 1
    top = pool_and_conv_topology([4.0, 1.0, 1.0], [16, 192, 160])
    assert top.strides[1] == [1, 2, 2] and top.kernel_sizes[0] == [1, 3, 3]
    assert all(p % d == 0 for p, d in zip(top.patch_size, top.divisible_by))


def test_lowres_only_when_patch_covers_under_a_quarter_and_memory_budget_scales():
    spacings, shapes = [[1.0, 1.0, 1.0]] * 10, [[400, 400, 400]] * 10
    fp = _synthetic_fingerprint(spacings, shapes)
    plans = validate_plans(plan_default(fp, ["CT"], 4, "Dataset999_X"))
    configs = plans["configurations"]
    assert "3d_lowres" in configs
    low = configs["3d_lowres"]
    assert all(s > 1.0 for s in low["spacing"])
    assert np.prod(low["patch_size"]) / np.prod(low["median_image_size_in_voxels"]) >= 0.25
    assert configs["3d_fullres"]["batch_dice"] and not low["batch_dice"]
    big = plan_default(fp, ["CT"], 4, "Dataset999_X", gpu_memory_gb=40)["configurations"]["3d_fullres"]
    small = configs["3d_fullres"]
    assert np.prod(big["patch_size"]) * big["batch_size"] > 2 * np.prod(small["patch_size"]) * small["batch_size"]
    assert configs["3d_fullres"]["normalization"][0]["scheme"] == "ct"


def test_batch_size_capped_at_five_percent_of_dataset(hippo):
    ds, fp = hippo
    plans = plan_default(fp, ds.channel_names, 3, ds.name, gpu_memory_gb=80)
    config = plans["configurations"]["3d_fullres"]
    dataset_voxels = np.prod(config["median_image_size_in_voxels"]) * len(fp["spacings"])
    assert config["batch_size"] <= max(2, round(0.05 * dataset_voxels / np.prod(config["patch_size"])))


def test_presets_pin_spacing_window_orientation_and_architecture(ct):
    ds, fp = ct
    assert list_presets() == ["suprem_segresnet", "suprem_swin_unetr", "suprem_unet"]
    divisors = {"suprem_unet": 8, "suprem_segresnet": 8, "suprem_swin_unetr": 32}
    archs = {"suprem_unet": "suprem_unet", "suprem_segresnet": "segresnet", "suprem_swin_unetr": "swin_unetr"}
    for name in list_presets():
        plans = validate_plans(plan_preset(name, fp, ds.channel_names, ds.name))
        assert plans["plans_name"] == f"{name}_plans" and plans["preset"] == name
        assert plans["reorient_to_ras"] is True
        config = plans["configurations"]["3d_fullres"]
        assert config["spacing"] == [1.5, 1.5, 1.5]
        assert config["normalization"] == [{"scheme": "window", "use_mask": False,
                                            "params": {"lower": -175, "upper": 250, "out_min": 0, "out_max": 1}}]
        assert config["architecture"]["name"] == archs[name]
        patch = np.asarray(config["patch_size"])
        assert np.all(patch % divisors[name] == 0) and np.all(patch <= 96)
        # 122x101x112 voxels of 3 mm -> about 224x202x244 at 1.5 mm: the default 96^3 patch fits
        assert list(patch) == [96, 96, 96]
    swin = plan_preset("suprem_swin_unetr", fp, ds.channel_names, ds.name)["configurations"]["3d_fullres"]
    assert swin["architecture"]["kwargs"]["feature_size"] == 48
    seg = plan_preset("suprem_segresnet", fp, ds.channel_names, ds.name)["configurations"]["3d_fullres"]
    assert seg["architecture"]["kwargs"]["blocks_down"] == [1, 2, 2, 4]


def test_preset_patch_shrinks_to_small_images(hippo):
    ds, fp = hippo
    with pytest.warns(UserWarning, match="CT"):
        config = plan_preset("suprem_swin_unetr", fp, ds.channel_names, ds.name)["configurations"]["3d_fullres"]
    median = np.asarray(config["median_image_size_in_voxels"])
    assert all(p % 32 == 0 for p in config["patch_size"])
    assert np.all(np.asarray(config["patch_size"]) < np.asarray(median) + 32)


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.update(format_version=2), "format_version"),
    (lambda p: p["configurations"]["3d_fullres"].update(patch_size=[40, 56]), "configurations.3d_fullres.spacing"),
    (lambda p: p["configurations"]["3d_fullres"]["normalization"][0].update(scheme="foo"),
     "configurations.3d_fullres.normalization[0].scheme"),
    (lambda p: p["configurations"]["3d_fullres"].update(patch_size=[41, 56, 40]),
     "configurations.3d_fullres.architecture.kwargs.strides"),
    (lambda p: p["configurations"]["3d_fullres"].pop("resampling"), "configurations.3d_fullres.resampling"),
    (lambda p: p.update(transpose_backward=[1, 0]), "transpose_backward"),
])
def test_bad_plans_field_is_named(hippo, tmp_path, mutate, field):
    ds, fp = hippo
    plans = plan_default(fp, ds.channel_names, 3, ds.name)
    path = save_plans(plans, tmp_path / "suprem_plans.json")
    assert load_plans(path) == json.loads(path.read_text())
    bad = copy.deepcopy(plans)
    mutate(bad)
    path.write_text(json.dumps(bad))
    with pytest.raises(PlansError, match=re.escape(str(path)) + ".*" + re.escape(f"'{field}'")):
        load_plans(path)

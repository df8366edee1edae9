"""Preprocessing, its inverse, storage and the plan_and_preprocess CLI on real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.transform import resize

from planning_fixtures import make_ct_dataset, make_hippocampus
from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess, main_preprocess
from suprem_auto.dataset import LabelSpec, load_raw_dataset_folder
from suprem_auto.fingerprint import extract_fingerprint
from suprem_auto.imageio import read_images, read_segmentation, write_segmentation
from suprem_auto.planning import plan_default, plan_preset
from suprem_auto.preprocessing import (load_class_locations, load_preprocessed_case, preprocess_case,
                                       preprocess_dataset, preprocess_files, probabilities_to_segmentation,
                                       revert_probabilities)
from suprem_auto.preprocessing.resampling import resample_segmentation, resample_volume, separate_z_axis


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    ds = load_raw_dataset_folder(make_hippocampus(tmp_path_factory.mktemp("raw"), 10))
    fp = extract_fingerprint(ds, num_processes=1, progress=False)
    return ds, plan_default(fp, ds.channel_names, ds.labels.num_segmentation_heads, ds.name)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    ds = load_raw_dataset_folder(make_ct_dataset(tmp_path_factory.mktemp("raw")))
    fp = extract_fingerprint(ds, num_processes=1, progress=False)
    return ds, fp


def _one_hot(seg, values):
    seg = np.where(seg < 0, 0, seg)
    return np.stack([(seg == v) for v in values]).astype(np.float32)


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_hippocampus_round_trip_is_exact(hippo, configuration):
    ds, plans = hippo
    case = next(iter(ds.cases.values()))
    data, seg, props = preprocess_files(case.images, plans, configuration, case.label)
    assert data.dtype == np.float32 and seg.dtype == np.int8 and data.shape[1:] == seg.shape[1:]
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0]))).astype(np.float64)
    inside = seg[0] >= 0
    assert inside.sum() > 0
    # per-image z-score over the cropped image (no mask: median crop ratio is 1)
    box = tuple(slice(lo, hi) for lo, hi in props["bbox_used_for_cropping"])
    cropped = image[box]
    np.testing.assert_allclose(data[0], (cropped - cropped.mean()) / cropped.std(), rtol=1e-4, atol=1e-4)
    probabilities = _one_hot(seg[0], [0, 1, 2])
    back = revert_probabilities(probabilities, props, plans, configuration)
    label, _ = read_segmentation(case.label)
    assert back.shape == (3,) + label.shape[1:]
    np.testing.assert_array_equal(probabilities_to_segmentation(back, ds.labels), label[0])


def test_ct_window_preset_range_and_round_trip_dice(ct, tmp_path):
    ds, fp = ct
    plans = plan_preset("suprem_unet", fp, ds.channel_names, ds.name)
    case = ds.cases["ct_000"]
    data, seg, props = preprocess_files(case.images, plans, "3d_fullres", case.label)
    assert data.min() >= 0.0 and data.max() <= 1.0
    assert props["target_spacing"] == [1.5, 1.5, 1.5]
    original = sitk.ReadImage(str(case.images[0]))
    assert np.allclose(np.asarray(data.shape[1:]) * 1.5, np.asarray(props["shape_before_cropping"]) * 3.0, atol=3)
    # the five largest organs as separate channels, everything else background
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    values, counts = np.unique(reference[reference > 0], return_counts=True)
    chosen = [int(v) for v in values[np.argsort(counts)[-5:]]]
    subset = LabelSpec(names={0: "background", **{v: ds.labels.names[v] for v in chosen}})
    kept = np.where(np.isin(seg[0], chosen), seg[0], 0)
    back = revert_probabilities(_one_hot(kept, [0] + sorted(chosen)), props, plans, "3d_fullres")
    prediction = probabilities_to_segmentation(back, subset)
    write_segmentation(prediction, tmp_path / "pred.nii.gz", props)  # back on the input grid, RAS undone
    written = sitk.ReadImage(str(tmp_path / "pred.nii.gz"))
    assert written.GetSize() == original.GetSize() and np.allclose(written.GetDirection(), original.GetDirection())
    pred = sitk.GetArrayFromImage(written)
    for v in chosen:
        dice = 2 * np.sum((pred == v) & (reference == v)) / (np.sum(pred == v) + np.sum(reference == v))
        assert dice > 0.95, (v, dice)


def test_ct_default_normalization_is_clipped_global_zscore(ct):
    ds, fp = ct
    plans = plan_default(fp, ds.channel_names, ds.labels.num_segmentation_heads, ds.name)
    params = plans["configurations"]["3d_fullres"]["normalization"][0]["params"]
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    case = ds.cases["ct_000"]
    images, props = read_images(case.images)
    data, _, out_props = preprocess_case(images, None, props, plans, "3d_fullres")
    transposed = images[0].transpose(plans["transpose_forward"])
    box = tuple(slice(lo, hi) for lo, hi in out_props["bbox_used_for_cropping"])
    expected = (np.clip(transposed[box], stats["percentile_00_5"], stats["percentile_99_5"]) - stats["mean"]) / stats["std"]
    assert params["mean"] == stats["mean"]
    np.testing.assert_allclose(data[0], expected, rtol=1e-5, atol=1e-5)


def test_resampling_matches_skimage_and_separate_z():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((12, 30, 26)), 2).astype(np.float32)
    np.testing.assert_allclose(resample_volume(x, (20, 17, 40), order=3),
                               resize(x, (20, 17, 40), order=3, mode="edge", anti_aliasing=False), atol=1e-5)
    np.testing.assert_allclose(resample_volume(x, (20, 17, 40), order=1),
                               resize(x, (20, 17, 40), order=1, mode="edge", anti_aliasing=False), atol=1e-5)
    # separate z, nearest through-plane: every output slice is one input slice
    out = resample_volume(x, (24, 30, 26), order=3, z_axis=0, order_z=0)
    np.testing.assert_allclose(out[::2], x, atol=1e-5)
    np.testing.assert_allclose(out[1::2], x, atol=1e-5)
    seg = ndimage.median_filter((rng.random((12, 30, 26)) * 5).astype(np.int16) - 1, 5)
    values = np.unique(seg)
    soft = np.stack([resize((seg == v).astype(float), (20, 17, 40), order=1, mode="edge", anti_aliasing=False)
                     for v in values])
    ours = resample_segmentation(seg, (20, 17, 40))
    # every voxel takes a label with the largest interpolated indicator (ties may go either way)
    chosen = np.take_along_axis(soft, np.searchsorted(values, ours)[None], axis=0)[0]
    np.testing.assert_allclose(chosen, soft.max(axis=0), atol=1e-6)
    assert np.mean(ours != values[np.argmax(soft, axis=0)]) < 0.05


def test_separate_z_decision_is_nnunets():
    """Auto: an anisotropic input spacing decides alone (two equally coarse axes: joint resampling, whatever the
    output); an isotropic input defers to the output spacing; forcing uses the input's single coarsest axis."""
    assert separate_z_axis([10, 1.5625, 1.5625], [10, 1.5625, 1.5625]) == 0  # ACDC
    assert separate_z_axis([1, 1, 1], [1, 5, 1]) == 1
    assert separate_z_axis([5, 5, 1], [1, 1, 5]) is None
    assert separate_z_axis([2, 1, 1], [2.5, 1, 1]) is None  # max/min not above 3
    assert separate_z_axis([2, 1, 1], [2, 1, 1], force_separate_z=True) == 0
    assert separate_z_axis([10, 1, 1], [10, 1, 1], force_separate_z=False) is None


def test_revert_accepts_torch_and_regions_threshold(hippo):
    import torch

    ds, plans = hippo
    case = next(iter(ds.cases.values()))
    _, seg, props = preprocess_files(case.images, plans, "3d_fullres", case.label)
    probabilities = _one_hot(seg[0], [0, 1, 2])
    np.testing.assert_array_equal(revert_probabilities(torch.from_numpy(probabilities), props, plans, "3d_fullres"),
                                  revert_probabilities(probabilities, props, plans, "3d_fullres"))
    regions = LabelSpec(names={0: "bg", 1: "a", 2: "b"}, regions=((1, 2), (2,)), region_names=("whole", "b"),
                        regions_class_order=(1, 2))
    probs = np.zeros((2, 3, 3, 3), dtype=np.float32)
    probs[0, 0] = 0.9
    probs[1, 0, 0] = 0.8
    probs[1, 2] = 0.7  # region 2 alone where region 1 is off still writes 2 (nnU-Net order semantics)
    expected = np.zeros((3, 3, 3), dtype=np.int16)
    expected[0] = 1
    expected[0, 0] = 2
    expected[2] = 2
    np.testing.assert_array_equal(probabilities_to_segmentation(probs, regions), expected)


def test_dataset_storage_locations_skip_and_clean(hippo, tmp_path):
    ds, plans = hippo
    subset = type(ds)(ds.folder, ds.dataset_json, ds.labels, dict(list(ds.cases.items())[:3]))
    done = preprocess_dataset(subset, plans, "3d_fullres", tmp_path, num_processes=1, progress=False)
    assert done == sorted(subset.cases)
    folder = tmp_path / "suprem_plans_3d_fullres"
    for case_id, case in subset.cases.items():
        data, seg, props = load_preprocessed_case(folder, case_id)
        assert data.dtype == np.float32 and seg.dtype == np.int8 and seg.shape == (1,) + data.shape[1:]
        label, _ = read_segmentation(case.label)
        locations = load_class_locations(folder, case_id)
        assert sorted(locations) == ["1", "2"]
        for key, locs in locations.items():
            n = int(np.sum(seg == int(key)))
            assert len(locs) == max(min(10000, n), int(np.ceil(0.01 * n)))
            assert np.all(seg[tuple(locs.T)] == int(key))
            assert len(np.unique(locs, axis=0)) == len(locs)
        assert (tmp_path / "gt_segmentations" / f"{case_id}.nii.gz").read_bytes() == case.label.read_bytes()
        assert json.loads((folder / f"{case_id}.json").read_text())["case_id"] == case_id
    stamp = (folder / f"{done[0]}.npy").stat().st_mtime_ns
    assert preprocess_dataset(subset, plans, "3d_fullres", tmp_path, num_processes=1, progress=False) == []
    assert (folder / f"{done[0]}.npy").stat().st_mtime_ns == stamp
    assert preprocess_dataset(subset, plans, "3d_fullres", tmp_path, num_processes=1, clean=True,
                              progress=False) == done


def test_cli_end_to_end_and_integrity_failure(tmp_path, capsys):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    make_hippocampus(raw, 4)
    roots = ["--raw", str(raw), "--preprocessed", str(pre)]
    assert main_plan_and_preprocess(["-d", "4", "-pl", "suprem_unet", "-np", "1"] + roots) == 0
    out = pre / "Dataset004_Hippocampus"
    for name in ("dataset.json", "dataset_fingerprint.json", "suprem_plans.json", "suprem_unet_plans.json"):
        assert (out / name).is_file(), name
    for identifier in ("suprem_plans_3d_fullres", "suprem_unet_plans_3d_fullres"):
        assert len(list((out / identifier).glob("*_seg.npy"))) == 4
    plans = json.loads((out / "suprem_plans.json").read_text())
    assert "2d" in plans["configurations"] and not (out / "suprem_plans_2d").exists()
    assert main_preprocess(["-d", "4", "-c", "2d", "-np", "1"] + roots) == 0
    assert len(list((out / "suprem_plans_2d").glob("*.npy"))) == 8
    # a label file that is missing: the command fails before writing anything
    broken = make_hippocampus(tmp_path / "raw2", 3)
    next((broken / "labelsTr").iterdir()).unlink()
    capsys.readouterr()
    code = main_plan_and_preprocess(["-d", "4", "--raw", str(tmp_path / "raw2"), "--preprocessed", str(tmp_path / "pre2")])
    assert code != 0
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "pre2").exists()

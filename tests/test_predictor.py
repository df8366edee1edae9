"""Predictor and suprem_predict on real images with a real plain_unet (random deterministic weights).

A model folder is built in tmp_path exactly as ARCHITECTURE.md lays it out; nothing of ours is mocked.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from suprem_auto.cli.predict import main as predict_main
from suprem_auto.imageio import read_images, write_segmentation
from suprem_auto.inference.predictor import Predictor
from suprem_auto.networks import build_network
from suprem_auto.utils.atomic import atomic_torch_save, atomic_write_json
from tests.conftest import HIPPO, HIPPO_CASES as ALL_HIPPO_CASES, TOTALSEG, hippo_image, requires_totalseg

HIPPO_CASES = ALL_HIPPO_CASES[:4]
CASE_A, CASE_B, CASE_C, CASE_D = HIPPO_CASES
TINY_UNET = {"name": "plain_unet", "kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                                              "kernel_sizes": [[3, 3, 3]] * 3,
                                              "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                              "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1}}

pytestmark = pytest.mark.usefixtures("single_torch_thread")



def make_plans(spacing: Sequence[float], patch: Sequence[int], reorient: bool = False,
               normalization: str = "zscore", architecture: Dict[str, Any] = TINY_UNET,
               configuration: str = "3d_fullres") -> Dict[str, Any]:
    """A hand-written plans dict following ARCHITECTURE.md."""
    return {"format_version": 1, "plans_name": "suprem_plans", "dataset_name": "Dataset004_Hippocampus",
            "preset": None, "reorient_to_ras": reorient, "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": list(spacing),
            "original_median_shape_after_transp": [36, 50, 35],
            "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}},
            "configurations": {configuration: {
                "data_identifier": f"suprem_plans_{configuration}", "spacing": list(spacing), "patch_size": list(patch),
                "batch_size": 2, "median_image_size_in_voxels": [36, 50, 35],
                "normalization": [{"scheme": normalization, "use_mask": False, "params": {}}],
                "resampling": {"data_order": 3, "seg_order": 1, "probabilities_order": 1, "order_z": 0,
                               "force_separate_z": None, "anisotropy_threshold": 3.0},
                "architecture": architecture, "batch_dice": False}}}


def make_model_folder(root: Path, plans: Dict[str, Any], folds: Sequence[int] = (0,)) -> Path:
    """<results>/Dataset004_Hippocampus/SupremTrainer__suprem_plans__<configuration> with one checkpoint per fold."""
    configuration = next(iter(plans["configurations"]))
    architecture = plans["configurations"][configuration]["architecture"]
    folder = root / "Dataset004_Hippocampus" / f"SupremTrainer__suprem_plans__{configuration}"
    folder.mkdir(parents=True)
    dataset_json = json.loads((HIPPO / "dataset.json").read_text())
    atomic_write_json(folder / "plans.json", plans)
    atomic_write_json(folder / "dataset.json", dataset_json)
    for fold in folds:
        torch.manual_seed(100 + fold)
        net = build_network(architecture, 1, 3, deep_supervision=True)
        with torch.no_grad():  # random but decisive outputs: exaggerate the last layer
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.2)
        atomic_torch_save({"network_weights": net.state_dict(), "epoch": 1, "trainer_name": "SupremTrainer",
                           "configuration": configuration, "plans_name": "suprem_plans",
                           "inference_allowed_mirroring_axes": list(range(len(architecture["kwargs"]["strides"][0])))},
                          folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def copy_hippo_images(dst: Path, cases: Sequence[str] = HIPPO_CASES) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for c in cases:
        shutil.copy(hippo_image(c), dst)
    return dst


def assert_same_geometry(output: Path, reference: Path) -> None:
    out, ref = sitk.ReadImage(str(output)), sitk.ReadImage(str(reference))
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), rtol=0, atol=1e-6)
    assert np.issubdtype(sitk.GetArrayViewFromImage(out).dtype, np.integer)


def _with_geometry(array: np.ndarray, spacing: Sequence[float], origin: Sequence[float],
                   direction: Sequence[float], path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(list(spacing))
    image.SetOrigin(list(origin))
    image.SetDirection(list(direction))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def hippo_model(tmp_path: Path) -> Path:
    return make_model_folder(tmp_path / "results", make_plans([1.0, 1.0, 1.0], [16, 16, 16]))


def test_predict_files_writes_input_geometry_and_probabilities(tmp_path: Path, hippo_model: Path) -> None:
    inputs = copy_hippo_images(tmp_path / "in", HIPPO_CASES[:2])
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False)
    report = predictor.predict_files(inputs, tmp_path / "out", save_probabilities=True)
    assert report.ok and sorted(report.written) == HIPPO_CASES[:2]
    for case in HIPPO_CASES[:2]:
        assert_same_geometry(tmp_path / "out" / f"{case}.nii.gz", inputs / f"{case}_0000.nii.gz")
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz")))
        probs = np.load(tmp_path / "out" / f"{case}.npz")["probabilities"]
        assert probs.shape == (3, *seg.shape)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
        # the written label map is the argmax of the saved probabilities (up to float16 ties)
        agree = (probs.argmax(0) == seg).mean()
        assert agree > 0.99
        assert len(np.unique(seg)) > 1  # the random network is decisive enough to predict several labels


@requires_totalseg
def test_anisotropic_spacing_and_rotated_direction_keep_exact_geometry(tmp_path: Path) -> None:
    """A CT crop given 0.8 x 0.8 x 3 mm spacing and a rotated, flipped direction; the plan resamples it."""
    ct = sitk.ReadImage(str(TOTALSEG / "example_ct_sm.nii.gz"))
    array = sitk.GetArrayFromImage(ct)[:, :60, :70]
    direction = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # 90 degrees in-plane, z flipped
    inputs = tmp_path / "in"
    inputs.mkdir()
    _with_geometry(array, (0.8, 0.8, 3.0), (10.0, -20.0, 30.0), direction, inputs / "ct_0000.nii.gz")
    mr = sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz"))
    shutil.copy(TOTALSEG / "example_mr_sm.nii.gz", inputs / "mr_0000.nii.gz")
    for reorient in (False, True):
        plans = make_plans([3.0, 6.0, 6.0], [16, 16, 16], reorient=reorient)
        model = make_model_folder(tmp_path / f"results_{reorient}", plans)
        out = tmp_path / f"out_{reorient}"
        predictor = Predictor.from_model_folder(model, device="cpu", progress=False, use_mirroring=False)
        report = predictor.predict_files(inputs, out)
        assert report.ok, report.failed
        assert_same_geometry(out / "ct.nii.gz", inputs / "ct_0000.nii.gz")
        assert_same_geometry(out / "mr.nii.gz", inputs / "mr_0000.nii.gz")
    assert mr.GetSize() == sitk.ReadImage(str(tmp_path / "out_True" / "mr.nii.gz")).GetSize()


def test_reorientation_is_undone_in_physical_space(tmp_path: Path) -> None:
    """The same physical image stored with x flipped (array and direction) gets the same physical prediction."""
    src = hippo_image(CASE_B)
    image = sitk.ReadImage(str(src))
    array = sitk.GetArrayFromImage(image)
    size_x = image.GetSize()[0]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    last_x = image.TransformIndexToPhysicalPoint((size_x - 1, 0, 0))
    flipped_dir = direction.copy()
    flipped_dir[:, 0] *= -1
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(src, inputs / "a_0000.nii.gz")
    _with_geometry(array[:, :, ::-1].copy(), image.GetSpacing(), last_x, flipped_dir.ravel(), inputs / "b_0000.nii.gz")
    model = make_model_folder(tmp_path / "results", make_plans([1.0, 1.0, 1.0], [16, 16, 16], reorient=True))
    report = Predictor.from_model_folder(model, device="cpu", progress=False).predict_files(inputs, tmp_path / "out")
    assert report.ok, report.failed
    seg_a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "a.nii.gz")))
    seg_b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "b.nii.gz")))
    assert_same_geometry(tmp_path / "out" / "b.nii.gz", inputs / "b_0000.nii.gz")
    assert len(np.unique(seg_a)) > 1
    np.testing.assert_array_equal(seg_b, seg_a[:, :, ::-1])


def _symmetric_case() -> np.ndarray:
    """A real hippocampus crop of 32 x 48 x 32 voxels (tiles at 0, 8, 16, ... are mirror symmetric), all nonzero."""
    images, _ = read_images([hippo_image(CASE_A)])
    return images[:, :32, :48, :32] + 1.0


def test_mirroring_flipped_case_gives_flipped_prediction(tmp_path: Path, hippo_model: Path) -> None:
    images = _symmetric_case()
    props = read_images([hippo_image(CASE_A)])[1]
    props = {**props, "geometry": {**props["geometry"], "size": [32, 48, 32]}}
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False)
    seg, probs = predictor.predict_array(images, props)
    flipped = images[:, ::-1, ::-1, ::-1].copy()
    seg_f, probs_f = predictor.predict_array(flipped, props)
    np.testing.assert_allclose(probs_f, probs[:, ::-1, ::-1, ::-1], atol=1e-4)
    np.testing.assert_array_equal(seg_f, seg[::-1, ::-1, ::-1])
    assert probs.shape == (3, 32, 48, 32) and seg.shape == (32, 48, 32)


def test_two_fold_ensemble_is_mean_of_fold_probabilities(tmp_path: Path) -> None:
    model = make_model_folder(tmp_path / "results", make_plans([1.0, 1.0, 1.0], [16, 16, 16]), folds=(0, 1))
    images, props = read_images([hippo_image(CASE_C)])
    both = Predictor.from_model_folder(model, device="cpu", progress=False, use_mirroring=False)
    assert len(both.fold_weights) == 2
    _, p_both = both.predict_array(images, props)
    _, p0 = Predictor.from_model_folder(model, folds=[0], device="cpu", progress=False,
                                        use_mirroring=False).predict_array(images, props)
    _, p1 = Predictor.from_model_folder(model, folds=[1], device="cpu", progress=False,
                                        use_mirroring=False).predict_array(images, props)
    assert not np.allclose(p0, p1, atol=1e-2)
    np.testing.assert_allclose(p_both, (p0 + p1) / 2, atol=1e-5)


def test_from_network_predicts_preprocessed_data_like_the_folder(tmp_path: Path, hippo_model: Path) -> None:
    folder_predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False)
    checkpoint = torch.load(hippo_model / "fold_0" / "checkpoint_final.pth", weights_only=True)
    net = build_network(TINY_UNET, 1, 3, deep_supervision=True)  # as the trainer holds it
    net.load_state_dict(checkpoint["network_weights"])
    net.train()
    plans = json.loads((hippo_model / "plans.json").read_text())
    dataset_json = json.loads((hippo_model / "dataset.json").read_text())
    mem = Predictor.from_network(net, plans, "3d_fullres", dataset_json, progress=False)
    data, _ = mem.preprocess(*read_images([hippo_image(CASE_D)]))
    probs = mem.predict_preprocessed(data)
    assert net.training  # the trainer's mode is restored
    assert probs.shape == (3, *data.shape[1:])
    torch.testing.assert_close(probs, folder_predictor.predict_preprocessed(data), rtol=1e-4, atol=1e-5)


def test_corrupt_file_is_reported_and_others_written(tmp_path: Path, hippo_model: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    inputs = copy_hippo_images(tmp_path / "in", HIPPO_CASES[:3])
    good = (inputs / f"{CASE_B}_0000.nii.gz").read_bytes()
    (inputs / f"{CASE_B}_0000.nii.gz").write_bytes(good[: len(good) // 2])
    code = predict_main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(hippo_model), "-device", "cpu",
                         "--disable_tta", "--disable_progress_bar"])
    assert code == 1
    err = capsys.readouterr().err
    assert CASE_B in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{CASE_A}.nii.gz",
                                                                   f"{CASE_C}.nii.gz"]


def test_cli_with_dataset_and_configuration_and_continue(tmp_path: Path, hippo_model: Path) -> None:
    inputs = copy_hippo_images(tmp_path / "in", HIPPO_CASES[:3])
    out = tmp_path / "out"
    args = ["-i", str(inputs), "-o", str(out), "-d", "4", "-c", "3d_fullres", "--results", str(tmp_path / "results"),
            "-device", "cpu", "--disable_tta", "--disable_progress_bar"]
    assert predict_main(args) == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert len(written) == 3
    (out / f"{CASE_B}.nii.gz").unlink()
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False, use_mirroring=False)
    report = predictor.predict_files(inputs, out, continue_prediction=True)
    assert report.written == [CASE_B]
    assert sorted(report.skipped) == [CASE_A, CASE_C]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != f"{CASE_B}.nii.gz"} == \
           {k: v for k, v in written.items() if k != f"{CASE_B}.nii.gz"}


def test_num_parts_partition_the_cases(tmp_path: Path, hippo_model: Path) -> None:
    inputs = copy_hippo_images(tmp_path / "in", HIPPO_CASES)
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False, use_mirroring=False)
    parts: List[List[str]] = [predictor.predict_files(inputs, tmp_path / "out", num_parts=3, part_id=k).written
                              for k in range(3)]
    flat = [c for p in parts for c in p]
    assert sorted(flat) == HIPPO_CASES and len(set(flat)) == len(flat)
    assert all(parts)


def test_single_file_and_file_without_channel_suffix(tmp_path: Path, hippo_model: Path) -> None:
    src = hippo_image(CASE_A)
    plain = tmp_path / "scan.nii.gz"
    shutil.copy(src, plain)
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False, use_mirroring=False)
    report = predictor.predict_files(plain, tmp_path / "out")
    assert report.written == ["scan"]
    assert_same_geometry(tmp_path / "out" / "scan.nii.gz", src)


@requires_totalseg
def test_dicom_series_folder(tmp_path: Path) -> None:
    """A CT DICOM series (identity direction, 2 mm slices) is predicted and written on its own grid."""
    model = make_model_folder(tmp_path / "results", make_plans([4.0, 8.0, 8.0], [8, 32, 32], normalization="ct"))
    plans = json.loads((model / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization"][0]["params"] = {"lower": -1000, "upper": 1000,
                                                                          "mean": 0, "std": 500}
    atomic_write_json(model / "plans.json", plans)
    series = tmp_path / "series"
    shutil.copytree(TOTALSEG / "example_ct_dicom", series)
    report = Predictor.from_model_folder(model, device="cpu", progress=False,
                                         use_mirroring=False).predict_files(series, tmp_path / "out")
    assert report.written == ["series"], report.failed
    out = sitk.ReadImage(str(tmp_path / "out" / "series.nii.gz"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    ref = reader.Execute()
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-5)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, hippo_model: Path) -> None:
    from suprem_auto.inference.predictor import ModelFolderError

    with pytest.raises(ModelFolderError, match="fold_3.*checkpoint_final.pth"):
        Predictor.from_model_folder(hippo_model, folds=[3])


def test_written_segmentation_roundtrips_through_write_segmentation(tmp_path: Path, hippo_model: Path) -> None:
    """predict_array + write_segmentation (the documented Python API) gives the CLI's result."""
    src = hippo_image(CASE_D)
    predictor = Predictor.from_model_folder(hippo_model, device="cpu", progress=False, use_mirroring=False)
    images, props = read_images([src], reorient_to_ras=predictor.plans["reorient_to_ras"])
    seg, _ = predictor.predict_array(images, props)
    write_segmentation(seg, tmp_path / "api.nii.gz", props)
    inputs = copy_hippo_images(tmp_path / "in", [CASE_D])
    predictor.predict_files(inputs, tmp_path / "out")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "api.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{CASE_D}.nii.gz"))))


def test_postprocessing_json_of_the_model_folder_is_applied(tmp_path: Path, hippo_model: Path) -> None:
    """With postprocessing.json (keep the largest foreground component) the output equals the raw prediction with
    only its largest foreground component kept (computed here with scipy)."""
    from scipy import ndimage

    inputs = copy_hippo_images(tmp_path / "in", [CASE_A])
    raw = Predictor.from_model_folder(hippo_model, device="cpu", progress=False, use_mirroring=False)
    assert raw.predict_files(inputs, tmp_path / "raw").ok
    pp = {"apply": {"keep_largest_foreground_component": True, "foreground_labels": [1, 2],
                    "keep_largest_component_of": []}}
    atomic_write_json(tmp_path / "crossval_postprocessing.json", pp)
    common = ["-i", str(inputs), "-m", str(hippo_model), "-device", "cpu", "--disable_tta", "--disable_progress_bar"]
    assert predict_main(common + ["-o", str(tmp_path / "pp_flag"), "--postprocessing",
                                  str(tmp_path / "crossval_postprocessing.json")]) == 0
    atomic_write_json(hippo_model / "postprocessing.json", pp)
    assert predict_main(common + ["-o", str(tmp_path / "pp")]) == 0
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw" / f"{CASE_A}.nii.gz")))
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pp" / f"{CASE_A}.nii.gz")))
    after_flag = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pp_flag" / f"{CASE_A}.nii.gz")))
    components, n = ndimage.label(before > 0, structure=np.ones((3, 3, 3)))
    assert n > 1  # the random network leaves several islands, so post-processing has something to do
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    expected = np.where(components == largest, before, 0)
    np.testing.assert_array_equal(after, expected)
    np.testing.assert_array_equal(after_flag, expected)


def test_two_d_configuration_predicts_slice_by_slice(tmp_path: Path) -> None:
    """A 2d configuration (2D plain_unet, 2-value patch) gives, slice by slice, what the network gives per slice."""
    unet_2d = {"name": "plain_unet", "kwargs": {"n_stages": 2, "features_per_stage": [4, 8],
                                                "kernel_sizes": [[3, 3]] * 2, "strides": [[1, 1], [2, 2]],
                                                "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1}}
    plans = make_plans([1.0, 1.0], [64, 64], architecture=unet_2d, configuration="2d")
    model = make_model_folder(tmp_path / "results", plans)
    predictor = Predictor.from_model_folder(model, device="cpu", progress=False, use_mirroring=False,
                                            precision="fp32")  # compared with an fp32 forward at 1e-4
    assert predictor.configuration == "2d" and predictor.mirror_axes == ()
    images, props = read_images([hippo_image(CASE_A)])
    data, _ = predictor.preprocess(images, props)
    probs = predictor.predict_preprocessed(data)
    net = build_network(unet_2d, 1, 3, deep_supervision=False).eval()
    net.load_state_dict(torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"])
    z, y, x = data.shape[1:]
    padded = torch.zeros(z, 1, 64, 64)
    oy, ox = (64 - y) // 2, (64 - x) // 2
    padded[:, :, oy:oy + y, ox:ox + x] = torch.from_numpy(data[0])[:, None]
    with torch.no_grad():
        direct = torch.softmax(net(padded), dim=1)[:, :, oy:oy + y, ox:ox + x].permute(1, 0, 2, 3)
    torch.testing.assert_close(probs, direct, rtol=1e-4, atol=1e-5)
    report = predictor.predict_files(copy_hippo_images(tmp_path / "in", [CASE_A]), tmp_path / "out")
    assert report.ok
    assert_same_geometry(tmp_path / "out" / f"{CASE_A}.nii.gz", hippo_image(CASE_A))

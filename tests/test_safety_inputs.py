"""Issue 15 part A: nothing a user owns is lost, and every bad input is refused at every entry point.

Each test reproduces a reported failure on real data (hippocampus cases, the TotalSegmentator CT/MR examples and
DICOM series) through the command's ``main(argv)`` and checks what a user would: a non-zero exit, one error line
naming the file, and every file under the roots and the inputs byte-identical before and after (SHA-256).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from suprem_auto.cli.convert import main as convert_main
from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess
from suprem_auto.cli.predict import main as predict_main
from suprem_auto.dataset import DatasetError, load_raw_dataset_folder
from suprem_auto.inference.predictor import Predictor
from suprem_auto.networks import build_network
from suprem_auto.planning.hand_plans import plain_unet_plans
from suprem_auto.preprocessing import preprocess_dataset
from suprem_auto.pretrained import UnsafeCheckpointError, read_checkpoint, resolve_pretrained
from suprem_auto.pretrained.zoo import ChecksumMismatch, file_sha256, load_zoo
from suprem_auto.utils.atomic import atomic_torch_save, atomic_write_json
from suprem_auto.utils.output_rules import OutputRuleError

from conftest import HIPPO, TOTALSEG, copy_hippocampus, hippo_cases, hippo_image, hippo_label, requires_totalseg

TINY_UNET = {"name": "plain_unet", "kwargs": {"n_stages": 2, "features_per_stage": [4, 8],
                                              "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]],
                                              "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1}}
DICOM = TOTALSEG / "example_ct_dicom"


pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---------------------------------------------------------------- helpers
def checksums(*roots: Path) -> Dict[str, str]:
    """SHA-256 of every file under the roots (a single file counts as its own root)."""
    out: Dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def error_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def foreground_stats(images: Sequence[Path], threshold: float | None = None) -> Dict[str, float]:
    """The fingerprint's foreground intensity properties, computed from real voxels (above ``threshold``)."""
    values = np.concatenate([sitk.GetArrayFromImage(sitk.ReadImage(str(p))).ravel() for p in images])
    values = values[values > threshold] if threshold is not None else values
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "median": float(np.median(values)),
            "percentile_00_5": float(np.percentile(values, 0.5)), "percentile_99_5": float(np.percentile(values, 99.5))}


def make_model(root: Path, scheme: str = "zscore", intensities: Dict[str, float] | None = None,
               checkpoint: object = None) -> Path:
    """A model folder (ARCHITECTURE.md layout) with a tiny real plain_unet, random weights."""
    plans = {"format_version": 1, "plans_name": "suprem_plans", "dataset_name": "Dataset004_Hippocampus",
             "preset": None, "reorient_to_ras": False, "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
             "original_median_shape_after_transp": [36, 50, 35],
             "foreground_intensity_properties_per_channel": {"0": intensities or {"mean": 0.0, "std": 1.0}},
             "configurations": {"3d_fullres": {
                 "data_identifier": "suprem_plans_3d_fullres", "spacing": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16],
                 "batch_size": 2, "median_image_size_in_voxels": [36, 50, 35],
                 "normalization": [{"scheme": scheme, "use_mask": False,
                                    "params": {"lower": -1000, "upper": 1000, "mean": 0, "std": 500}}],
                 "resampling": {"data_order": 1, "seg_order": 1, "probabilities_order": 1, "order_z": 0,
                                "force_separate_z": None, "anisotropy_threshold": 3.0},
                 "architecture": TINY_UNET, "batch_dice": False}}}
    folder = root / "Dataset004_Hippocampus" / "SupremTrainer__suprem_plans__3d_fullres"
    folder.mkdir(parents=True)
    atomic_write_json(folder / "plans.json", plans)
    atomic_write_json(folder / "dataset.json", json.loads((HIPPO / "dataset.json").read_text()))
    torch.manual_seed(0)
    net = build_network(TINY_UNET, 1, 3, deep_supervision=True)
    content = checkpoint if checkpoint is not None else {
        "network_weights": net.state_dict(), "epoch": 1, "trainer_name": "SupremTrainer",
        "configuration": "3d_fullres", "plans_name": "suprem_plans", "inference_allowed_mirroring_axes": [0, 1, 2]}
    (folder / "fold_0").mkdir()
    torch.save(content, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def predict(model: Path, inputs: Path, output: Path, *extra: str) -> int:
    return predict_main(["-i", str(inputs), "-o", str(output), "-m", str(model), "-device", "cpu",
                         "--disable_tta", "--disable_progress_bar", *extra])


@pytest.fixture
def hippo_model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "results")


# ---------------------------------------------------------------- item 1: outputs onto inputs
def test_predict_never_writes_onto_its_input(tmp_path: Path, hippo_model: Path, capsys) -> None:
    """`suprem_predict -i IN -o IN` with `scan.nii.gz` (no _0000) used to replace the scan by its label map."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    scan = inputs / "scan.nii.gz"
    shutil.copy(hippo_image(hippo_cases(1)[0]), scan)
    before = checksums(tmp_path)
    for given in (inputs, scan):  # the folder and the single file
        assert predict(hippo_model, given, inputs) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and str(scan) in lines[0] and "overwrite this input" in lines[0], lines
        assert checksums(tmp_path) == before
    # a hard link to the scan is the same file too
    linked = tmp_path / "linked"
    linked.mkdir()
    os.link(scan, linked / "scan.nii.gz")
    assert predict(hippo_model, inputs, linked) == 2
    assert checksums(tmp_path) == {**before, str(linked / "scan.nii.gz"): before[str(scan)]}
    # the same input into another folder is predicted as before, and the input is still the scan
    assert predict(hippo_model, scan, tmp_path / "out") == 0
    assert (tmp_path / "out" / "scan.nii.gz").is_file()
    assert checksums(scan) == {str(scan): before[str(scan)]}


# ---------------------------------------------------------------- item 2: outside the roots, --clean, --overwrite
def _dataset_with_case_ids(raw_root: Path, case_ids: Sequence[str]) -> Path:
    folder = copy_hippocampus(raw_root, len(case_ids))
    data = json.loads((folder / "dataset.json").read_text())
    images = sorted((folder / "imagesTr").iterdir())
    data["dataset"] = {cid: {"images": [f"imagesTr/{img.name}"],
                             "label": f"labelsTr/{img.name.replace('_0000', '')}"}
                       for cid, img in zip(case_ids, images)}
    (folder / "dataset.json").write_text(json.dumps(data, indent=2))
    return folder


@pytest.mark.parametrize("clean", [False, True])
def test_case_id_with_dotdot_is_refused_before_anything_is_written(tmp_path: Path, capsys, clean: bool) -> None:
    """A `dataset` map id `../../../victim/important` made plan_and_preprocess overwrite a file outside the
    preprocessed root (and `--clean` delete it)."""
    bad = "../../../victim/important"
    folder = _dataset_with_case_ids(tmp_path / "raw", ["ok_case", bad])
    victim = tmp_path / "victim"
    victim.mkdir()
    for ending in (".npy", ".json", "_seg.npy", "_locs.npz", ".nii.gz"):
        (victim / f"important{ending}").write_text("the user's own file\n")
    (tmp_path / "preprocessed").mkdir()
    before = checksums(tmp_path)
    argv = ["-d", "4", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "preprocessed"), "-np", "1"]
    assert main_plan_and_preprocess(argv + (["--clean"] if clean else [])) != 0
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(folder / "dataset.json") in lines[0] and repr(bad) in lines[0], lines
    assert checksums(tmp_path) == before
    assert not any((tmp_path / "preprocessed").iterdir())


@pytest.mark.parametrize("case_id", ["/tmp/abs_case", "a\u0000b", "..", "sub\\case", ""])
def test_every_unplain_case_id_names_dataset_json(tmp_path: Path, case_id: str) -> None:
    folder = _dataset_with_case_ids(tmp_path / "raw", [case_id])
    with pytest.raises(DatasetError, match="dataset.json: case id"):
        load_raw_dataset_folder(folder)


def test_preprocess_api_refuses_paths_outside_its_folder(tmp_path: Path) -> None:
    """The same rule holds below the CLI: a hand-built dataset with a bad id writes and deletes nothing."""
    folder = copy_hippocampus(tmp_path / "raw", 1)
    ds = load_raw_dataset_folder(folder)
    ds.cases = {"../escape": next(iter(ds.cases.values()))}
    (tmp_path / "escape.npy").write_text("keep me\n")
    out = tmp_path / "preprocessed" / ds.name
    plans = plain_unet_plans(ds.name)
    before = checksums(tmp_path)
    with pytest.raises(OutputRuleError, match="outside"):
        preprocess_dataset(ds, plans, "3d_fullres", out, num_processes=1, clean=True, progress=False)
    assert checksums(tmp_path) == before and not out.exists()


def _msd_task(root: Path) -> Path:
    task = root / "Task04_Hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    cases = hippo_cases(2)
    for case in cases:
        shutil.copy(hippo_image(case), task / "imagesTr" / f"{case}.nii.gz")
        shutil.copy(hippo_label(case), task / "labelsTr" / f"{case}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior",
                                                                     "2": "Posterior"},
        "numTraining": 2, "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                                       for c in cases]}))
    return task


def test_convert_overwrite_never_deletes_its_input_or_foreign_files(tmp_path: Path, capsys) -> None:
    """`suprem_convert --overwrite` removed the whole target folder, the input inside it included."""
    raw = tmp_path / "raw"
    target = raw / "Dataset004_Hippocampus"
    argv = ["msd", "-d", "4", "-o", str(raw), "--no_verify"]
    task = _msd_task(tmp_path)
    assert convert_main(argv + ["-i", str(task)]) == 0  # a first conversion
    moved = shutil.move(str(task), str(target / "Task04_Hippocampus"))  # the user keeps the MSD task inside
    capsys.readouterr()
    before = checksums(tmp_path)
    assert convert_main(argv + ["-i", moved, "--overwrite"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(target) in lines[0] and "refusing to delete" in lines[0], lines
    assert checksums(tmp_path) == before
    # files no converter writes (a user's notes) are not deleted either
    task = Path(shutil.move(moved, str(tmp_path / "Task04_Hippocampus")))
    (target / "notes.txt").write_text("my notes\n")
    before = checksums(tmp_path)
    assert convert_main(argv + ["-i", str(task), "--overwrite"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "notes.txt" in lines[0], lines
    assert checksums(tmp_path) == before
    # a plain earlier conversion is still replaced
    (target / "notes.txt").unlink()
    assert convert_main(argv + ["-i", str(task), "--overwrite"]) == 0


# ---------------------------------------------------------------- item 5: the same image checks at prediction
def test_nan_voxels_are_refused_at_prediction(tmp_path: Path, hippo_model: Path, capsys) -> None:
    """NaN voxels were read as 0 without a word (planning refuses them)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sitk.ReadImage(str(hippo_image(hippo_cases(1)[0])), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[10, 20, 15:18] = np.nan
    array[11, 20, 15] = np.inf
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    scan = inputs / "nan_case_0000.nii.gz"
    sitk.WriteImage(nan_image, str(scan))
    before = checksums(tmp_path)
    assert predict(hippo_model, inputs, tmp_path / "out") == 1
    failed = [ln for ln in error_lines(capsys.readouterr().err) if "nan_case:" in ln]
    assert len(failed) == 1 and str(scan) in failed[0] and "4 NaN/Inf voxel(s)" in failed[0], failed
    assert checksums(tmp_path) == before  # no file written anywhere


def _dicom_copy(target: Path, skip: Sequence[int] = (), series_uid: str | None = None) -> None:
    """Copy the real CT series (sorted by slice position), leaving out ``skip``; optionally as a new series."""
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(DICOM.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                       .ImagePositionPatient[2]))
    for i, src in enumerate(files):
        if i in skip:
            continue
        ds = pydicom.dcmread(src)
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = f"{series_uid}.{i + 1}"
        ds.save_as(target / f"{'s2_' if series_uid else ''}{src.name}")


@requires_totalseg
def test_dicom_folder_with_two_series_is_refused_everywhere(tmp_path: Path, hippo_model: Path, capsys) -> None:
    """Prediction read the first of two series silently; convert listed the first one's UID as empty."""
    folder = tmp_path / "two_series"
    _dicom_copy(folder)
    _dicom_copy(folder, series_uid="1.2.826.0.1.3680043.8.498.15")
    before = checksums(tmp_path)
    assert predict(hippo_model, folder, tmp_path / "out") == 1
    failed = [ln for ln in error_lines(capsys.readouterr().err) if "two_series" in ln]
    assert len(failed) == 1 and "2 DICOM series" in failed[0], failed
    assert "<no SeriesInstanceUID> (20 files)" in failed[0] and "1.2.826.0.1.3680043.8.498.15 (20 files)" in failed[0]
    assert convert_main(["dicom", "-i", str(folder), "-o", str(tmp_path / "ct.nii.gz")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(folder) in lines[0] and "<no SeriesInstanceUID>" in lines[0], lines
    assert checksums(tmp_path) == before
    # choosing by UID works, and '' picks the series whose files carry none
    for uid in ("1.2.826.0.1.3680043.8.498.15", ""):
        out = tmp_path / f"ct_{uid or 'none'}.nii.gz"
        assert convert_main(["dicom", "-i", str(folder), "-o", str(out), "--series_id", uid]) == 0
        assert sitk.ReadImage(str(out)).GetSize() == (512, 512, 20)


@requires_totalseg
def test_dicom_series_with_a_missing_slice_is_refused_at_prediction(tmp_path: Path, hippo_model: Path,
                                                                    capsys) -> None:
    """A missing slice was read at a wrong spacing with only an ITK warning."""
    folder = tmp_path / "gap"
    _dicom_copy(folder, skip=[9])
    before = checksums(tmp_path)
    assert predict(hippo_model, folder, tmp_path / "out") == 1
    failed = [ln for ln in error_lines(capsys.readouterr().err) if str(folder) in ln]
    assert len(failed) == 1 and "slice spacing is not uniform" in failed[0], failed
    assert checksums(tmp_path) == before


@requires_totalseg
def test_ct_given_to_mr_model_and_mr_given_to_ct_model_warn(tmp_path: Path, caplog) -> None:
    """Modality mismatches passed without a word although the plans know the training intensities."""
    cases = hippo_cases(2)
    mr_model = make_model(tmp_path / "mr", intensities=foreground_stats([hippo_image(c) for c in cases]))
    ct_sm = TOTALSEG / "example_ct_sm.nii.gz"
    ct_model = make_model(tmp_path / "ct", scheme="ct", intensities=foreground_stats([ct_sm], threshold=-500))
    mr = tmp_path / "mr_in"
    mr.mkdir()
    shutil.copy(hippo_image(cases[0]), mr / "mr_scan_0000.nii.gz")
    caplog.set_level(logging.WARNING)
    # hippocampus MR into the CT model: a full prediction, which still succeeds, with one warning naming the file
    assert predict(ct_model, mr, tmp_path / "out") == 0
    warned = [r.getMessage() for r in caplog.records if str(mr / "mr_scan_0000.nii.gz") in r.getMessage()]
    assert len(warned) == 1 and "trained on CT" in warned[0], warned
    caplog.clear()
    # the real CT (and the real TotalSegmentator MR) read by the MR model's predictor
    predictor = Predictor.from_model_folder(mr_model, device="cpu", progress=False, use_mirroring=False)
    predictor.read_case([ct_sm])
    warned = [r.getMessage() for r in caplog.records if str(ct_sm) in r.getMessage()]
    assert len(warned) == 1 and "a CT?" in warned[0], warned
    caplog.clear()
    # matching data gives no warning: hippocampus into the MR model, the CT into the CT model
    predictor.read_case([hippo_image(cases[1])])
    Predictor.from_model_folder(ct_model, device="cpu", progress=False).read_case([ct_sm])
    assert not [r for r in caplog.records if "warning:" in r.getMessage()]


# ---------------------------------------------------------------- item 9: no advice to weaken a protection
class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refused_checkpoint_message_is_whole_and_never_suggests_weights_only_false(tmp_path: Path,
                                                                                    capsys) -> None:
    marker = tmp_path / "code_ran"
    model = make_model(tmp_path / "results", checkpoint={"network_weights": {}, "payload": _RunsCode(marker)})
    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    shutil.copy(hippo_image(hippo_cases(1)[0]), scan)
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    before = checksums(tmp_path)
    assert predict(model, scan.parent, tmp_path / "out") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    with pytest.raises(UnsafeCheckpointError) as refused:
        read_checkpoint(checkpoint)
    for message in (lines[0], str(refused.value)):
        assert str(checkpoint) in message and "refused for safety" in message
        assert "GLOBAL posix.system" in message and message.endswith(".safetensors file")  # whole, named
        assert "weights_only" not in message and "Re-running" not in message and "allowlist" not in message
    assert not marker.exists() and checksums(tmp_path) == before


# ---------------------------------------------------------------- item 10: zoo checksums
def test_zoo_file_is_checked_against_its_sha256(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    atomic_torch_save(build_network(TINY_UNET, 1, 3, deep_supervision=False).state_dict(), weights / "tiny.pth")
    real_sum = file_sha256(weights / "tiny.pth")
    assert real_sum == hashlib.sha256((weights / "tiny.pth").read_bytes()).hexdigest()
    packaged = json.loads((Path(__file__).resolve().parents[1] / "suprem_auto/pretrained/zoo.json").read_text())
    entry = dict(packaged["entries"][0], name="tiny_fixture", file_name="tiny.pth")
    zoo_file = tmp_path / "zoo.json"
    for listed, ok in ((real_sum, True), (None, True), ("0" * 64, False)):
        zoo_file.write_text(json.dumps({"entries": [dict(entry, sha256=listed)]}))
        zoo = load_zoo(zoo_file)
        if ok:
            assert resolve_pretrained("tiny_fixture", weights_dir=weights, zoo=zoo)[0] == weights / "tiny.pth"
        else:
            with pytest.raises(ChecksumMismatch, match=f"{weights / 'tiny.pth'}: SHA-256 {real_sum} differs"):
                resolve_pretrained("tiny_fixture", weights_dir=weights, zoo=zoo)
    assert all(e.sha256 is None or len(e.sha256) == 64 for e in load_zoo().values())

"""Converters on real files: MSD (3D and an assembled 4D two-channel case), per-structure masks, DICOM, subsets."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_auto.cli.convert import main as convert_main
from suprem_auto.conversion import (ConversionError, convert_dicom_series, convert_msd_task, convert_structure_masks,
                                    load_label_table, make_subset)
from suprem_auto.dataset import load_raw_dataset, load_raw_dataset_folder
from suprem_auto.dataset.integrity import verify_dataset
from suprem_auto.utils.atomic import load_json

from conftest import HIPPO, HIPPO_CASES as ALL_HIPPO_CASES, TOTALSEG as TOTSEG, hippo_image, hippo_label
from conftest import requires_totalseg

HIPPO_CASES = ALL_HIPPO_CASES[:3]
TEST_CASE = ALL_HIPPO_CASES[3]  # the MSD task's imagesTs case


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _seg_labels() -> Dict[str, str]:
    return load_json(TOTSEG / "labels.json")["example_seg.nii.gz"]["labels"]


# ---------------------------------------------------------------- MSD
def _msd_hippocampus_task(root: Path) -> Path:
    task = root / "Task04_Hippocampus"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    training = []
    for case in HIPPO_CASES:
        shutil.copy(hippo_image(case), task / "imagesTr" / f"{case}.nii.gz")
        shutil.copy(hippo_label(case), task / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    shutil.copy(hippo_image(TEST_CASE), task / "imagesTs" / f"{TEST_CASE}.nii.gz")
    (task / "imagesTr" / f"._{HIPPO_CASES[0]}.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "licence": "CC-BY-SA 4.0", "tensorImageSize": "3D", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "numTraining": len(training),
        "numTest": 1, "training": training, "test": [f"./imagesTs/{TEST_CASE}.nii.gz"]}))
    return task


def _two_channel_task(root: Path) -> tuple:
    """An MSD task with one 4D case: two real CT volumes of the same grid joined along a 4th dimension."""
    ct_sm = sitk.ReadImage(str(TOTSEG / "example_ct_sm.nii.gz"))
    ct = sitk.ReadImage(str(TOTSEG / "example_ct.nii.gz"))
    seg = sitk.ReadImage(str(TOTSEG / "example_seg.nii.gz"))
    channel0 = ct_sm[30:94, 20:84, :]
    channel1 = sitk.Cast(ct[30:94, 20:84, 52:82], sitk.sitkInt16)  # a different real CT block
    channel1.CopyInformation(channel0)
    label = seg[30:94, 20:84, :]
    task = root / "Task99_TwoChannel"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    joined = sitk.JoinSeries([channel0, channel1])
    assert joined.GetDimension() == 4
    sitk.WriteImage(joined, str(task / "imagesTr" / "ct_001.nii.gz"))
    sitk.WriteImage(label, str(task / "labelsTr" / "ct_001.nii.gz"))
    (task / "dataset.json").write_text(json.dumps({
        "name": "TwoChannel", "modality": {"0": "CT", "1": "CT_other_block"}, "labels": _seg_labels(),
        "numTraining": 1, "training": [{"image": "./imagesTr/ct_001.nii.gz", "label": "./labelsTr/ct_001.nii.gz"}]}))
    return task, channel0, channel1, label


def test_msd_3d_task_via_cli(tmp_path: Path) -> None:
    task = _msd_hippocampus_task(tmp_path)
    raw = tmp_path / "raw"
    assert convert_main(["msd", "-i", str(task), "-d", "104", "-o", str(raw)]) == 0
    folder = raw / "Dataset104_Hippocampus"
    data = load_json(folder / "dataset.json")
    assert data["channel_names"] == {"0": "MRI"}
    assert data["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert data["numTraining"] == 3 and data["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in HIPPO_CASES]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == [f"{TEST_CASE}_0000.nii.gz"]
    for case in HIPPO_CASES:
        np.testing.assert_array_equal(_array(folder / "imagesTr" / f"{case}_0000.nii.gz"),
                                      _array(hippo_image(case)))
        np.testing.assert_array_equal(_array(folder / "labelsTr" / f"{case}.nii.gz"),
                                      _array(hippo_label(case)))
    ds = load_raw_dataset(raw, 104)
    assert sorted(ds.cases) == HIPPO_CASES and verify_dataset(ds) == []
    # converting again into the same id is refused with a message naming the folder
    assert convert_main(["msd", "-i", str(task), "-d", "104", "-o", str(raw)]) == 2


@requires_totalseg
def test_msd_4d_case_is_split_into_channels(tmp_path: Path) -> None:
    task, channel0, channel1, label = _two_channel_task(tmp_path)
    raw = tmp_path / "raw"
    folder = convert_msd_task(task, raw, 7)
    assert folder.name == "Dataset007_TwoChannel"
    out0 = sitk.ReadImage(str(folder / "imagesTr" / "ct_001_0000.nii.gz"))
    out1 = sitk.ReadImage(str(folder / "imagesTr" / "ct_001_0001.nii.gz"))
    for out, original in ((out0, channel0), (out1, channel1)):
        assert out.GetDimension() == 3
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(original))
        assert out.GetSize() == original.GetSize()
        np.testing.assert_allclose(out.GetSpacing(), original.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(out.GetOrigin(), original.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(out.GetDirection(), original.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(_array(folder / "labelsTr" / "ct_001.nii.gz"), sitk.GetArrayFromImage(label))
    data = load_json(folder / "dataset.json")
    assert data["channel_names"] == {"0": "CT", "1": "CT_other_block"}
    assert data["labels"]["liver"] == 5 and data["labels"]["background"] == 0
    assert verify_dataset(load_raw_dataset(raw, 7)) == []


@requires_totalseg
def test_msd_channel_count_mismatch_is_an_error(tmp_path: Path) -> None:
    task, *_ = _two_channel_task(tmp_path)
    data = load_json(task / "dataset.json")
    data["modality"] = {"0": "CT", "1": "a", "2": "b"}
    (task / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="ct_001.nii.gz: image has 2 channels"):
        convert_msd_task(task, tmp_path / "raw", 8)


# ---------------------------------------------------------------- per-structure masks
def _write_masks(case_folder: Path, seg: sitk.Image, names: Dict[str, str], extra: Dict[str, np.ndarray]) -> None:
    (case_folder / "segmentations").mkdir(parents=True)
    shutil.copy(TOTSEG / "example_ct_sm.nii.gz", case_folder / "ct.nii.gz")
    array = sitk.GetArrayFromImage(seg)
    for value, name in names.items():
        if int(value) == 0:
            continue
        mask = (array == int(value)) | extra.get(name, False)
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(seg)
        sitk.WriteImage(image, str(case_folder / "segmentations" / f"{name}.nii.gz"))


@requires_totalseg
def test_masks_round_trip_and_overlap_rule(tmp_path: Path) -> None:
    seg = sitk.ReadImage(str(TOTSEG / "example_seg.nii.gz"))
    original = sitk.GetArrayFromImage(seg)
    names = _seg_labels()
    box = np.zeros(original.shape, bool)
    box[10:20, 30:70, 20:100] = True  # the liver mask (value 5) of case 2 also claims this box
    assert (original[box] < 5).any() and (original[box] > 5).any()  # the box overlaps lower and higher values
    cases = tmp_path / "cases"
    _write_masks(cases / "s0001", seg, names, {})
    _write_masks(cases / "s0002", seg, names, {"liver": box})
    (cases / "notacase").mkdir()
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(json.dumps(names))

    raw = tmp_path / "raw"
    assert convert_main(["masks", "-i", str(cases), "-d", "11", "-n", "TotalSegExample", "-o", str(raw),
                         "--labels", str(labels_json)]) == 0
    folder = raw / "Dataset011_TotalSegExample"
    np.testing.assert_array_equal(_array(folder / "labelsTr" / "s0001.nii.gz"), original)
    expected = original.copy()
    expected[box & (original <= 5)] = 5  # higher label value wins: liver beats 1..4, loses to 6..117
    converted = sitk.ReadImage(str(folder / "labelsTr" / "s0002.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), expected)
    assert _geometry(converted) == _geometry(seg)
    np.testing.assert_array_equal(_array(folder / "imagesTr" / "s0002_0000.nii.gz"),
                                  _array(TOTSEG / "example_ct_sm.nii.gz"))

    report = load_json(folder / "conversion_report.json")
    in_other = box & (original != 0) & (original != 5)
    assert report["overlap_voxels_per_case"] == {"s0001": 0, "s0002": int(in_other.sum())}
    assert report["overwritten_voxels_loser_to_winner"]["spleen -> liver"] == int((box & (original == 1)).sum())
    assert report["overwritten_voxels_loser_to_winner"]["liver -> aorta"] == int((box & (original == 52)).sum())
    assert report["skipped_folders"] == ["notacase"]
    data = load_json(folder / "dataset.json")
    assert data["labels"] == {"background": 0, **{n: int(v) for v, n in names.items() if int(v) != 0}}
    assert data["numTraining"] == 2
    assert verify_dataset(load_raw_dataset(raw, 11)) == []


@requires_totalseg
def test_masks_default_table_is_sorted_names(tmp_path: Path) -> None:
    seg = sitk.ReadImage(str(TOTSEG / "example_seg.nii.gz"))[:, :, 12:16]  # a thin slab keeps this fast
    names = {v: n for v, n in _seg_labels().items() if int(v) in (1, 5, 52, 79)}  # spleen liver aorta spinal_cord
    cases = tmp_path / "cases"
    _write_masks(cases / "c1", seg, names, {})
    ct = sitk.ReadImage(str(TOTSEG / "example_ct_sm.nii.gz"))[:, :, 12:16]
    sitk.WriteImage(ct, str(cases / "c1" / "ct.nii.gz"))
    report = convert_structure_masks(cases, tmp_path / "raw", 12, "Sorted")
    assert report.label_table == {"aorta": 1, "liver": 2, "spinal_cord": 3, "spleen": 4}
    original = sitk.GetArrayFromImage(seg)
    expected = np.zeros_like(original)
    for value, name in names.items():
        expected[original == int(value)] = report.label_table[name]
    np.testing.assert_array_equal(_array(report.dataset_folder / "labelsTr" / "c1.nii.gz"), expected)


def test_label_table_formats(tmp_path: Path) -> None:
    for content in (["liver", "spleen"], {"liver": 1, "spleen": 2}, {"0": "background", "1": "liver", "2": "spleen"},
                    {"labels": ["liver", "spleen"]}):
        path = tmp_path / "labels.json"
        path.write_text(json.dumps(content))
        assert load_label_table(path) == {"liver": 1, "spleen": 2}
    path.write_text(json.dumps({"liver": 1, "spleen": 1}))
    with pytest.raises(ConversionError, match="share a label value"):
        load_label_table(path)


@requires_totalseg
def test_mask_with_other_geometry_is_an_error(tmp_path: Path) -> None:
    seg = sitk.ReadImage(str(TOTSEG / "example_seg.nii.gz"))
    names = {"1": "spleen"}
    _write_masks(tmp_path / "cases" / "c1", seg, names, {})
    mask_path = tmp_path / "cases" / "c1" / "segmentations" / "spleen.nii.gz"
    mask = sitk.ReadImage(str(mask_path))
    mask.SetSpacing((3.0, 3.0, 5.0))
    sitk.WriteImage(mask, str(mask_path))
    with pytest.raises(ConversionError, match="spleen.nii.gz: mask geometry differs"):
        convert_structure_masks(tmp_path / "cases", tmp_path / "raw", 13, "Bad")


# ---------------------------------------------------------------- DICOM
@requires_totalseg
def test_dicom_series_to_nifti(tmp_path: Path) -> None:
    out = tmp_path / "ct.nii.gz"
    assert convert_main(["dicom", "-i", str(TOTSEG / "example_ct_dicom"), "-o", str(out)]) == 0
    image = sitk.ReadImage(str(out))
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.977, 0.977, 2.0), atol=1e-3)
    seg = sitk.ReadImage(str(TOTSEG / "example_seg_dicom.nii.gz"))
    resampled = sitk.Resample(seg, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    assert resampled.GetSize() == image.GetSize()
    # same physical volume, y axis reversed in the label file: no voxel lost, the array is the y-flipped label
    resampled_array, seg_array = sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(seg)
    assert np.count_nonzero(resampled_array) == np.count_nonzero(seg_array)
    np.testing.assert_array_equal(resampled_array, seg_array[:, ::-1, :])
    hu = sitk.GetArrayFromImage(image)
    assert hu.min() == -1024 and hu.max() == 1839  # HU range stated in shared/data/README.md


@requires_totalseg
def test_dicom_gap_is_an_error(tmp_path: Path) -> None:
    series = tmp_path / "series"
    shutil.copytree(TOTSEG / "example_ct_dicom", series)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))
    Path(files[10]).unlink()  # a missing slice in the middle
    with pytest.raises(ConversionError, match="not uniform"):
        convert_dicom_series(series, tmp_path / "out.nii.gz")
    with pytest.raises(ConversionError, match="no DICOM series"):
        convert_dicom_series(tmp_path, tmp_path / "out.nii.gz")


# ---------------------------------------------------------------- subset
def test_hippocampus_subset(tmp_path: Path) -> None:
    folder = make_subset(HIPPO, tmp_path, 5, "HippocampusSubset", 4)
    ds = load_raw_dataset(tmp_path, 5)
    assert sorted(ds.cases) == sorted(load_raw_dataset_folder(HIPPO).cases)[:4]
    assert ds.dataset_json["numTraining"] == 4 and ds.dataset_json["labels"]["Anterior"] == 1
    assert verify_dataset(ds) == []
    case = sorted(ds.cases)[0]
    assert (folder / "labelsTr" / f"{case}.nii.gz").read_bytes() == hippo_label(case).read_bytes()

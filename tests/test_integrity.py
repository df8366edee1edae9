"""Integrity check on a few real hippocampus cases, each broken one way."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_auto.dataset import DatasetError, load_raw_dataset
from suprem_auto.dataset.integrity import DatasetIntegrityError, check_dataset_or_raise, verify_dataset

from conftest import HIPPO as SOURCE, HIPPO_CASES, hippo_image, hippo_label

CASES = HIPPO_CASES[:3]


def _make_dataset(root: Path, num_channels: int = 1) -> Path:
    folder = root / "Dataset004_Hippocampus"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in CASES:
        for c in range(num_channels):  # extra channels are copies of the real MR channel
            shutil.copy(hippo_image(case), folder / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        shutil.copy(hippo_label(case), folder / "labelsTr" / f"{case}.nii.gz")
    data = json.loads((SOURCE / "dataset.json").read_text())
    data["numTraining"] = len(CASES)
    data["channel_names"] = {str(c): f"MRI{c}" for c in range(num_channels)}
    (folder / "dataset.json").write_text(json.dumps(data))
    return folder


def _rewrite(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    image = change(image)
    sitk.WriteImage(image, str(path), useCompression=True)


def _problems(root: Path) -> list:
    return verify_dataset(load_raw_dataset(root, 4))


def test_clean_dataset_has_no_problems(tmp_path: Path) -> None:
    _make_dataset(tmp_path)
    assert _problems(tmp_path) == []
    check_dataset_or_raise(load_raw_dataset(tmp_path, 4))  # does not raise


def test_clean_dataset_in_parallel(tmp_path: Path) -> None:
    folder = _make_dataset(tmp_path)
    label = folder / "labelsTr" / f"{CASES[1]}.nii.gz"
    _rewrite(label, lambda im: (im.SetOrigin((5.0, 0.0, 0.0)), im)[1])
    problems = verify_dataset(load_raw_dataset(tmp_path, 4), num_processes=2)
    assert len(problems) == 1 and str(label) in problems[0]


def _shift_label_origin(folder: Path) -> Path:
    label = folder / "labelsTr" / f"{CASES[0]}.nii.gz"
    image = sitk.ReadImage(str(label))
    image.SetOrigin(tuple(o + 2.0 for o in image.GetOrigin()))
    sitk.WriteImage(image, str(label), useCompression=True)
    return label


def _change_label_spacing(folder: Path) -> Path:
    label = folder / "labelsTr" / f"{CASES[1]}.nii.gz"
    image = sitk.ReadImage(str(label))
    image.SetSpacing((1.0, 1.0, 1.5))
    sitk.WriteImage(image, str(label), useCompression=True)
    return label


def _undeclared_label(folder: Path) -> Path:
    label = folder / "labelsTr" / f"{CASES[2]}.nii.gz"
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = 7
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(label), useCompression=True)
    return label


def _nan_voxels(folder: Path) -> Path:
    path = folder / "imagesTr" / f"{CASES[0]}_0000.nii.gz"
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[1, 2, 3] = np.nan
    array[2, 2, 3] = np.inf
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)
    return path


def _missing_only_channel(folder: Path) -> Path:
    path = folder / "imagesTr" / f"{CASES[1]}_0000.nii.gz"
    path.unlink()
    return path


def _missing_label(folder: Path) -> Path:
    path = folder / "labelsTr" / f"{CASES[2]}.nii.gz"
    path.unlink()
    return path


def _truncated(folder: Path) -> Path:
    path = folder / "imagesTr" / f"{CASES[2]}_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _unexpected_file(folder: Path) -> Path:
    path = folder / "imagesTr" / "notes.txt"
    path.write_text("hello")
    return path


def _four_d_image(folder: Path) -> Path:
    path = folder / "imagesTr" / f"{CASES[0]}_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(path), useCompression=True)
    return path


def _wrong_num_training(folder: Path) -> Path:
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    data["numTraining"] = 5
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("breaker, words", [
    (_shift_label_origin, "origin"),
    (_change_label_spacing, "spacing"),
    (_undeclared_label, "[7]"),
    (_nan_voxels, "2 NaN/Inf"),
    (_missing_only_channel, "missing"),
    (_missing_label, "missing"),
    (_truncated, "truncated"),
    (_unexpected_file, "unexpected file"),
    (_four_d_image, "4D"),
    (_wrong_num_training, "numTraining is 5"),
])
def test_each_problem_gives_one_line_naming_the_file(tmp_path: Path, breaker, words: str) -> None:
    folder = _make_dataset(tmp_path)
    broken = breaker(folder)
    problems = _problems(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(broken)), problems
    assert words in problems[0]


def test_missing_second_channel(tmp_path: Path) -> None:
    folder = _make_dataset(tmp_path, num_channels=2)
    assert _problems(tmp_path) == []
    missing = folder / "imagesTr" / f"{CASES[0]}_0001.nii.gz"
    missing.unlink()
    problems = _problems(tmp_path)
    assert problems == [f"{missing}: file is missing"]


def test_check_or_raise_lists_every_problem(tmp_path: Path) -> None:
    folder = _make_dataset(tmp_path)
    label = _undeclared_label(folder)
    image = _truncated(folder)  # same case as the label: the label is still checked
    with pytest.raises(DatasetIntegrityError) as info:
        check_dataset_or_raise(load_raw_dataset(tmp_path, 4))
    message = str(info.value)
    assert str(label) in message and str(image) in message and "2 integrity problem" in message


def test_unknown_dataset_id_names_the_root(tmp_path: Path) -> None:
    _make_dataset(tmp_path)
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_raw_dataset(tmp_path, 999)

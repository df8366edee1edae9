"""Shared pieces of the converters: errors, target folders, atomic image writes, dataset.json."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import SimpleITK as sitk

from suprem_auto.utils.atomic import TEMP_FILE_PATTERN, atomic_path, atomic_write_json
from suprem_auto.utils.output_rules import OutputRuleError, check_deletable

PathLike = Union[str, Path]
FILE_ENDING = ".nii.gz"
_DATASET_DIR = re.compile(r"^Dataset(\d{3})_(.+)$")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
#: what a converter writes into a dataset folder: the only entries ``--overwrite`` may delete
CONVERTER_ENTRIES = ("dataset.json", "imagesTr", "labelsTr", "imagesTs", "labelsTs", "conversion_report.json")


class ConversionError(ValueError):
    """Input that cannot be converted; the message names the file or folder and the problem."""


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` with a 3-digit id (1..999) and a name of letters, digits, ``_`` and ``-``."""
    if not 1 <= int(dataset_id) <= 999:
        raise ConversionError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not _NAME_OK.match(name):
        raise ConversionError(f"dataset name '{name}' must hold only letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def prepare_dataset_folder(raw_root: PathLike, dataset_id: int, name: str, overwrite: bool = False,
                           inputs: Iterable[PathLike] = ()) -> Path:
    """Create ``raw_root/DatasetXXX_Name``; refuse an existing dataset or another dataset with the same id.

    ``overwrite`` replaces an earlier conversion, but never a folder that holds one of ``inputs`` or entries no
    converter writes (see ``suprem_auto.utils.output_rules``)."""
    raw_root = Path(raw_root)
    folder = raw_root / dataset_folder_name(dataset_id, name)
    if raw_root.is_dir():
        for other in raw_root.iterdir():
            m = _DATASET_DIR.match(other.name)
            if other.is_dir() and m and int(m.group(1)) == int(dataset_id) and other.name != folder.name:
                raise ConversionError(f"{other}: dataset id {int(dataset_id):03d} is already used; pick another -d")
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise ConversionError(f"{folder}: target dataset folder already exists and is not empty "
                                  "(use --overwrite to replace it)")
        temp_files = [p.name for p in folder.iterdir() if TEMP_FILE_PATTERN.match(p.name)]
        try:
            check_deletable(folder, list(inputs), (*CONVERTER_ENTRIES, *temp_files), "target dataset folder")
        except OutputRuleError as exc:
            raise ConversionError(str(exc)) from None
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    return folder


def write_sitk_image(image: sitk.Image, target: PathLike) -> Path:
    """Write a SimpleITK image atomically (compressed)."""
    target = Path(target)
    with atomic_path(target, suffix=FILE_ENDING if target.name.endswith(FILE_ENDING) else target.suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return target


def copy_file_atomic(source: PathLike, target: PathLike) -> Path:
    """Copy a file byte for byte, atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def read_image_info(path: PathLike) -> sitk.ImageFileReader:
    """Read only an image header (dimension, size, components); errors name the file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ConversionError(f"{path}: unreadable image header") from None
    return reader


def read_sitk(path: PathLike) -> sitk.Image:
    """Read a whole image; errors name the file."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise ConversionError(f"{path}: unreadable or truncated image") from None


def write_dataset_json(folder: Path, channel_names: Mapping[str, str], labels: Mapping[str, int],
                       num_training: int, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write an nnU-Net v2 ``dataset.json`` (channel_names, labels, numTraining, file_ending) atomically.

    Written last by every converter, so a folder with a dataset.json is a finished conversion.
    """
    data: Dict[str, Any] = {"channel_names": dict(channel_names), "labels": dict(labels),
                            "numTraining": int(num_training), "file_ending": FILE_ENDING}
    for key, value in (extra or {}).items():
        data.setdefault(key, value)
    return atomic_write_json(folder / "dataset.json", data)

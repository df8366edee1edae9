"""Medical Segmentation Decathlon task folders (``TaskXX_Name``) into the raw format (``DatasetXXX_Name``).

MSD keeps all channels of a case in one 4D file (x, y, z, channel) and names the files ``case.nii.gz``. The raw
format wants one 3D file per channel, ``case_0000.nii.gz .. case_000N.nii.gz``. A 4D image is split along its last
SimpleITK dimension; each channel keeps the 3D part of the geometry (spacing, origin, 3x3 direction). 3D images and
labels are copied byte for byte. macOS ``._*`` resource files (and other hidden files) are skipped.
"""
from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from suprem_auto.conversion.common import (FILE_ENDING, ConversionError, copy_file_atomic, prepare_dataset_folder,
                                           read_image_info, read_sitk, write_dataset_json, write_sitk_image)
from suprem_auto.utils.atomic import load_json_or_raise

PathLike = Union[str, Path]
_TASK_DIR = re.compile(r"^Task(\d+)_(.+)$")
_CARRIED_KEYS = ("name", "description", "reference", "licence", "release")


def msd_case_files(folder: Path) -> List[Path]:
    """The ``.nii.gz`` files of an MSD images/labels folder, skipping hidden and macOS ``._`` files."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.name.endswith(FILE_ENDING) and not f.name.startswith("."))


def split_channels(image: sitk.Image, source: PathLike = "image") -> List[sitk.Image]:
    """Split a 4D image along its last dimension (or a vector image by component) into 3D images."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        if image.GetDimension() != 3:
            raise ConversionError(f"{source}: vector image must be 3D, got {image.GetDimension()}D")
        return [sitk.VectorIndexSelectionCast(image, c) for c in range(image.GetNumberOfComponentsPerPixel())]
    if image.GetDimension() == 3:
        return [image]
    if image.GetDimension() != 4:
        raise ConversionError(f"{source}: expected a 3D or 4D image, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image)  # (channel, z, y, x)
    spacing = image.GetSpacing()[:3]
    origin = image.GetOrigin()[:3]
    direction = np.array(image.GetDirection()).reshape(4, 4)[:3, :3].ravel().tolist()
    channels = []
    for c in range(array.shape[0]):
        channel = sitk.GetImageFromArray(array[c])
        channel.SetSpacing(spacing)
        channel.SetOrigin(origin)
        channel.SetDirection(direction)
        channels.append(channel)
    return channels


def convert_msd_image(source: Path, images_dir: Path, case_id: str, num_channels: int) -> List[Path]:
    """Write the channel files ``case_XXXX.nii.gz`` of one MSD image (3D copied, 4D split)."""
    info = read_image_info(source)
    targets = [images_dir / f"{case_id}_{c:04d}{FILE_ENDING}" for c in range(num_channels)]
    if info.GetDimension() == 3 and info.GetNumberOfComponents() == 1:
        if num_channels != 1:
            raise ConversionError(f"{source}: 3D image but dataset.json declares {num_channels} modalities")
        return [copy_file_atomic(source, targets[0])]
    channels = split_channels(read_sitk(source), source)
    if len(channels) != num_channels:
        raise ConversionError(f"{source}: image has {len(channels)} channels but dataset.json declares "
                              f"{num_channels} modalities")
    return [write_sitk_image(channel, target) for channel, target in zip(channels, targets)]


def convert_msd_label(source: Path, target: Path) -> Path:
    """Copy one MSD label map (must be 3D)."""
    info = read_image_info(source)
    if info.GetDimension() != 3 or info.GetNumberOfComponents() != 1:
        raise ConversionError(f"{source}: label map must be a 3D scalar image, got {info.GetDimension()}D")
    return copy_file_atomic(source, target)


def _convert_case(job: Tuple[Path, Optional[Path], Path, str, int]) -> str:
    image, label, folder, split, num_channels = job
    case_id = image.name[:-len(FILE_ENDING)]
    convert_msd_image(image, folder / f"images{split}", case_id, num_channels)
    if label is not None:
        convert_msd_label(label, folder / "labelsTr" / f"{case_id}{FILE_ENDING}")
    return case_id


def msd_labels_to_v2(labels: Dict[str, str], source: PathLike) -> Dict[str, int]:
    """MSD ``{"0": "background", "1": "edema"}`` into nnU-Net v2 ``{"background": 0, "edema": 1}``."""
    out: Dict[str, int] = {}
    for value, name in sorted(labels.items(), key=lambda kv: int(kv[0])):
        try:
            v = int(value)
        except ValueError:
            raise ConversionError(f"{source}: label key '{value}' is not an integer") from None
        name = "background" if v == 0 else str(name)
        if name in out:
            name = f"{name}_{v}"
        out[name] = v
    if out.get("background") != 0:
        raise ConversionError(f"{source}: labels must declare 0 (background)")
    return out


def default_name(task_folder: Path, msd_json: Dict[str, Any]) -> str:
    """Dataset name from ``TaskXX_Name`` (else dataset.json ``name``), made filename-safe."""
    m = _TASK_DIR.match(task_folder.name)
    name = m.group(2) if m else str(msd_json.get("name", task_folder.name))
    return re.sub(r"[^A-Za-z0-9_\-]", "_", name)


def convert_msd_task(task_folder: PathLike, raw_root: PathLike, dataset_id: int, name: Optional[str] = None,
                     num_processes: int = 1, overwrite: bool = False) -> Path:
    """Convert an MSD task folder into ``raw_root/DatasetXXX_Name``; returns the new dataset folder.

    dataset.json is written last (channel_names from ``modality``, labels inverted, numTraining counted).
    """
    task_folder = Path(task_folder)
    json_path = task_folder / "dataset.json"
    msd_json = load_json_or_raise(json_path, ConversionError, "MSD dataset.json")
    for key in ("modality", "labels"):
        if not isinstance(msd_json.get(key), dict) or not msd_json[key]:
            raise ConversionError(f"{json_path}: field '{key}' is missing or empty")
    channel_names = {str(k): str(v) for k, v in sorted(msd_json["modality"].items(), key=lambda kv: int(kv[0]))}
    if sorted(channel_names) != sorted(str(i) for i in range(len(channel_names))):
        raise ConversionError(f"{json_path}: 'modality' keys must be 0..N-1, got {sorted(channel_names)}")
    labels = msd_labels_to_v2(msd_json["labels"], json_path)
    train_images = msd_case_files(task_folder / "imagesTr")
    if not train_images:
        raise ConversionError(f"{task_folder / 'imagesTr'}: no .nii.gz training images")
    jobs_source: List[Tuple[Path, Optional[Path], str]] = []
    for image in train_images:
        label = task_folder / "labelsTr" / image.name
        if not label.is_file():
            raise ConversionError(f"{label}: label file is missing for training image {image.name}")
        jobs_source.append((image, label, "Tr"))
    jobs_source += [(image, None, "Ts") for image in msd_case_files(task_folder / "imagesTs")]

    folder = prepare_dataset_folder(raw_root, dataset_id, name or default_name(task_folder, msd_json), overwrite,
                                    inputs=[task_folder])
    if any(split == "Ts" for _, _, split in jobs_source):
        (folder / "imagesTs").mkdir(exist_ok=True)
    jobs = [(image, label, folder, split, len(channel_names)) for image, label, split in jobs_source]
    desc = f"converting {task_folder.name}"
    if num_processes <= 1:
        for job in tqdm(jobs, desc=desc, unit="case"):
            _convert_case(job)
    else:
        with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(tqdm(pool.map(_convert_case, jobs), total=len(jobs), desc=desc, unit="case"))
    extra = {k: msd_json[k] for k in _CARRIED_KEYS if k in msd_json}
    extra["converted_from"] = f"MSD {task_folder.name}"
    write_dataset_json(folder, channel_names, labels, len(train_images), extra)
    return folder

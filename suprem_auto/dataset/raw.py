"""The raw dataset format (nnU-Net v2's): ``DatasetXXX_Name/{dataset.json, imagesTr, labelsTr, imagesTs}``.

Images are ``{case}_{XXXX}{file_ending}`` (XXXX = 4-digit channel index), labels ``{case}{file_ending}``.
``dataset.json`` may also carry an explicit ``dataset`` map ``{case: {"images": [...], "label": ...}}`` with
paths relative to the dataset folder (environment variables are expanded).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from suprem_auto.dataset.labels import LabelSpec, parse_labels
from suprem_auto.utils.atomic import load_json_or_raise

PathLike = Union[str, Path]
_DATASET_DIR = re.compile(r"^Dataset(\d{3})_(.+)$")


class DatasetError(ValueError):
    """A dataset could not be found or its dataset.json is invalid; the message names the file."""


@dataclass
class Case:
    """One case: its channel files in channel order and its label file (None for test cases)."""

    case_id: str
    images: List[Path]
    label: Optional[Path] = None


@dataclass
class RawDataset:
    """A raw dataset folder with its parsed dataset.json."""

    folder: Path
    dataset_json: Dict[str, Any]
    labels: LabelSpec
    cases: Dict[str, Case] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def channel_names(self) -> List[str]:
        names = self.dataset_json["channel_names"]
        return [names[str(i)] for i in range(len(names))]

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]


def find_dataset_folder(root: PathLike, id_or_name: Union[str, int]) -> Path:
    """Find ``DatasetXXX_Name`` under ``root`` from an ID (``4``, ``004``) or a full or partial name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist (set --raw, SUPREM_RAW or nnUNet_raw)")
    key = str(id_or_name)
    candidates = [p for p in root.iterdir() if p.is_dir() and _DATASET_DIR.match(p.name)]
    if key.isdigit():
        wanted = int(key)
        matches = [p for p in candidates if int(_DATASET_DIR.match(p.name).group(1)) == wanted]
    else:
        matches = [p for p in candidates if p.name == key] or \
                  [p for p in candidates if _DATASET_DIR.match(p.name).group(2) == key]
    if not matches:
        known = ", ".join(sorted(p.name for p in candidates)) or "none"
        raise DatasetError(f"{root}: no dataset with id or name '{key}' (found: {known})")
    if len(matches) > 1:
        raise DatasetError(f"{root}: dataset id '{key}' is ambiguous: {', '.join(sorted(p.name for p in matches))}")
    return matches[0]


def validate_dataset_json(data: Any, path: PathLike) -> Dict[str, Any]:
    """Check required keys and types of dataset.json; errors name the file and the field."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: dataset.json must hold a JSON object")
    if "channel_names" not in data and "modality" in data:
        data["channel_names"] = data["modality"]  # nnU-Net v1 / MSD naming
    for key in ("channel_names", "labels", "file_ending"):
        if key not in data:
            raise DatasetError(f"{path}: dataset.json lacks the required field '{key}'")
    channels = data["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise DatasetError(f"{path}: field 'channel_names' must be a non-empty object like {{\"0\": \"CT\"}}")
    if sorted(channels) != [str(i) for i in range(len(channels))]:
        raise DatasetError(f"{path}: field 'channel_names' keys must be 0..{len(channels) - 1}, got {sorted(channels)}")
    if not isinstance(data["file_ending"], str) or not data["file_ending"].startswith("."):
        raise DatasetError(f"{path}: field 'file_ending' must be a string like '.nii.gz'")
    if "numTraining" in data and not isinstance(data["numTraining"], int):
        raise DatasetError(f"{path}: field 'numTraining' must be an integer")
    return data


def check_case_id(case_id: Any, source: PathLike) -> str:
    """A case id names files in every output folder, so it must be a plain file name: not empty, no path
    separator, not ``.`` or ``..``, not absolute, no NUL. Otherwise a ``DatasetError`` names ``source`` and the id."""
    text = case_id if isinstance(case_id, str) else ""
    problem = ("is not a non-empty string" if not text else
               "contains a NUL character" if "\0" in text else
               "is an absolute path" if Path(text).is_absolute() or text.startswith("\\") else
               "contains a path separator" if "/" in text or "\\" in text else
               "is '.' or '..'" if text in (".", "..") else "")
    if problem:
        raise DatasetError(f"{source}: case id {case_id!r} {problem}; a case id must be a plain file name "
                           "(no '/', '\\', '..' or NUL)")
    return text


def _expand(folder: Path, p: str) -> Path:
    path = Path(os.path.expandvars(p)).expanduser()
    return path if path.is_absolute() else folder / path


def list_cases(folder: Path, dataset_json: Dict[str, Any], split: str = "Tr") -> Dict[str, Case]:
    """List the cases of ``imagesTr`` (``split='Tr'``) or ``imagesTs`` with their channel and label files."""
    n_channels = len(dataset_json["channel_names"])
    json_path = folder / "dataset.json"
    if split == "Tr" and "dataset" in dataset_json:
        if not isinstance(dataset_json["dataset"], dict):
            raise DatasetError(f"{json_path}: field 'dataset' must be an object {{case: {{images, label}}}}")
        cases = {}
        for case_id, entry in dataset_json["dataset"].items():
            check_case_id(case_id, json_path)
            if not isinstance(entry, dict) or not isinstance(entry.get("images"), list):
                raise DatasetError(f"{json_path}: dataset entry {case_id!r} needs an 'images' list")
            cases[case_id] = Case(case_id, [_expand(folder, p) for p in entry["images"]],
                                  _expand(folder, entry["label"]) if entry.get("label") else None)
        return dict(sorted(cases.items()))
    ending = dataset_json["file_ending"]
    images_dir = folder / f"images{split}"
    if not images_dir.is_dir():
        return {}
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    ids = sorted({m.group(1) for f in images_dir.iterdir() if (m := pattern.match(f.name))})
    cases = {}
    for case_id in ids:
        check_case_id(case_id, images_dir / f"{case_id}_0000{ending}")
        images = [images_dir / f"{case_id}_{c:04d}{ending}" for c in range(n_channels)]
        label = folder / f"labels{split}" / f"{case_id}{ending}" if split == "Tr" else None
        cases[case_id] = Case(case_id, images, label)
    return cases


def load_raw_dataset(root: PathLike, id_or_name: Union[str, int]) -> RawDataset:
    """Find and parse a raw dataset (dataset.json validated, training cases listed)."""
    folder = find_dataset_folder(root, id_or_name)
    return load_raw_dataset_folder(folder)


def load_raw_dataset_folder(folder: PathLike) -> RawDataset:
    """Parse a raw dataset folder given directly."""
    folder = Path(folder)
    json_path = folder / "dataset.json"
    data = validate_dataset_json(load_json_or_raise(json_path, DatasetError, "dataset.json"), json_path)
    labels = parse_labels(data, json_path)
    return RawDataset(folder, data, labels, list_cases(folder, data, "Tr"))

"""Per-structure binary masks (AbdomenAtlas, TotalSegmentator) into one label map per case.

Input layout::

    CASES_FOLDER/<case>/ct.nii.gz
    CASES_FOLDER/<case>/segmentations/<structure>.nii.gz    one binary mask per structure

Label table: structures get values 1..N in sorted name order, or in the order of a user list, or the explicit
values of a labels.json (``["liver", ...]``, ``{"liver": 1, ...}`` or ``{"1": "liver", ...}``).

Overlap rule (deterministic): masks are painted in ascending label value, so where masks overlap **the structure
with the higher label value wins** (with a list: the one listed later; by default: the later name in sorted
order). Put small structures that lie inside others (tumours, vessels) last. Every overlap is counted in the
conversion report (``conversion_report.json`` in the dataset folder): voxels claimed by two or more structures per
case, and overwritten voxels per ``"loser -> winner"`` pair. A structure without a mask file in a case is treated as
absent (and listed under ``missing_masks``); mask files not in the table are ignored (listed under ``ignored_masks``).
"""
from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from suprem_auto.conversion.common import (FILE_ENDING, ConversionError, copy_file_atomic, prepare_dataset_folder,
                                           read_image_info, read_sitk, write_dataset_json, write_sitk_image)
from suprem_auto.imageio import geometry_mismatch, smallest_label_dtype
from suprem_auto.utils.atomic import atomic_write_json, load_json

PathLike = Union[str, Path]
MASK_ENDINGS = (".nii.gz", ".nii")
MASKS_SUBFOLDER = "segmentations"
OVERLAP_RULE = "higher label value wins (structures painted in ascending label value)"


@dataclass
class MaskConversionReport:
    """What a mask conversion did, including every overlap."""

    dataset_folder: Path
    label_table: Dict[str, int]
    overlap_rule: str = OVERLAP_RULE
    overlap_voxels: Dict[str, int] = field(default_factory=dict)
    overwritten_voxels: Dict[str, int] = field(default_factory=dict)
    missing_masks: Dict[str, List[str]] = field(default_factory=dict)
    ignored_masks: Dict[str, List[str]] = field(default_factory=dict)
    skipped_folders: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"dataset_folder": str(self.dataset_folder), "overlap_rule": self.overlap_rule,
                "label_table": self.label_table, "num_cases": len(self.overlap_voxels),
                "total_overlap_voxels": int(sum(self.overlap_voxels.values())),
                "overlap_voxels_per_case": self.overlap_voxels,
                "overwritten_voxels_loser_to_winner": self.overwritten_voxels,
                "missing_masks": self.missing_masks, "ignored_masks": self.ignored_masks,
                "skipped_folders": self.skipped_folders}


def _structure_name(path: Path) -> Optional[str]:
    if path.name.startswith("."):
        return None
    for ending in MASK_ENDINGS:
        if path.name.endswith(ending):
            return path.name[:-len(ending)]
    return None


def mask_files(case_folder: Path) -> Dict[str, Path]:
    """Structure name -> mask file of one case folder."""
    masks_dir = case_folder / MASKS_SUBFOLDER
    if not masks_dir.is_dir():
        return {}
    return {name: f for f in sorted(masks_dir.iterdir()) if (name := _structure_name(f))}


def label_table_from(spec: Union[Sequence[str], Mapping[str, Any]], source: PathLike = "label table") -> Dict[str, int]:
    """Normalise a structure list or mapping into ``{structure: value}`` sorted by value (background dropped)."""
    if isinstance(spec, Mapping):
        table: Dict[str, int] = {}
        for key, value in spec.items():
            if str(key).lstrip("-").isdigit() and isinstance(value, str):
                name, v = value, int(key)
            elif isinstance(value, int) and not isinstance(value, bool):
                name, v = str(key), value
            else:
                raise ConversionError(f"{source}: entry {key!r}: {value!r} is neither 'value: name' nor 'name: value'")
            if v == 0 or name == "background":
                continue
            if v < 0:
                raise ConversionError(f"{source}: structure '{name}' has a negative value {v}")
            if name in table:
                raise ConversionError(f"{source}: structure '{name}' is listed twice")
            table[name] = v
    else:
        names = [str(n) for n in spec if str(n) != "background"]
        if len(set(names)) != len(names):
            raise ConversionError(f"{source}: a structure is listed twice")
        table = {name: i + 1 for i, name in enumerate(names)}
    if not table:
        raise ConversionError(f"{source}: no structures")
    if len(set(table.values())) != len(table):
        raise ConversionError(f"{source}: two structures share a label value")
    return dict(sorted(table.items(), key=lambda kv: kv[1]))


def load_label_table(path: PathLike) -> Dict[str, int]:
    """Read a labels.json: a list of names, ``{"name": value}`` or ``{"value": "name"}`` (or under ``"labels"``)."""
    try:
        data = load_json(path)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read label table ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("labels"), (dict, list)):
        data = data["labels"]
    if not isinstance(data, (dict, list)):
        raise ConversionError(f"{path}: label table must be a JSON list or object")
    return label_table_from(data, path)


def find_cases(cases_folder: Path, image_name: str) -> Tuple[Dict[str, Path], List[str]]:
    """Case folders holding ``image_name`` (sorted) and the names of sub-folders skipped for lacking it."""
    if not cases_folder.is_dir():
        raise ConversionError(f"{cases_folder}: cases folder does not exist")
    cases, skipped = {}, []
    for sub in sorted(p for p in cases_folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / image_name).is_file():
            cases[sub.name] = sub
        else:
            skipped.append(sub.name)
    if not cases:
        raise ConversionError(f"{cases_folder}: no case folder holds '{image_name}'")
    return cases, skipped


def _geometry(reader_or_image: Any) -> Dict[str, Any]:
    return {"size": list(reader_or_image.GetSize()), "spacing": list(reader_or_image.GetSpacing()),
            "origin": list(reader_or_image.GetOrigin()), "direction": list(reader_or_image.GetDirection())}


def masks_to_label_map(image_geometry: Dict[str, Any], masks: Mapping[str, Path], table: Mapping[str, int]
                       ) -> Tuple[np.ndarray, int, Dict[str, int], List[str]]:
    """Paint the masks in ascending label value (higher value wins).

    Returns ``(label (z, y, x), voxels claimed by >= 2 structures, {"loser -> winner": voxels}, missing)``.
    """
    shape = tuple(image_geometry["size"][::-1])
    label = np.zeros(shape, dtype=smallest_label_dtype(max(table.values())))
    claims = np.zeros(shape, dtype=np.uint8)
    names = {v: k for k, v in table.items()}
    overwritten: Counter = Counter()
    missing: List[str] = []
    for name, value in sorted(table.items(), key=lambda kv: kv[1]):
        path = masks.get(name)
        if path is None:
            missing.append(name)
            continue
        mask_image = read_sitk(path)
        if mask_image.GetDimension() != 3:
            raise ConversionError(f"{path}: mask must be 3D, got {mask_image.GetDimension()}D")
        diff = geometry_mismatch(image_geometry, _geometry(mask_image))
        if diff:
            raise ConversionError(f"{path}: mask geometry differs from the image: {diff}")
        mask = sitk.GetArrayViewFromImage(mask_image) != 0
        taken = mask & (label != 0)
        if taken.any():
            losers, counts = np.unique(label[taken], return_counts=True)
            for loser, count in zip(losers, counts):
                overwritten[f"{names[int(loser)]} -> {name}"] += int(count)
        claims += mask
        label[mask] = value
    return label, int(np.count_nonzero(claims >= 2)), dict(overwritten), missing


CaseResult = Tuple[str, int, Dict[str, int], List[str], List[str]]  # id, overlap, overwritten, missing, ignored


def _convert_case(job: Tuple[str, Path, str, Dict[str, int], Path]) -> CaseResult:
    case_id, case_folder, image_name, table, dataset_folder = job
    image_path = case_folder / image_name
    info = read_image_info(image_path)
    if info.GetDimension() != 3 or info.GetNumberOfComponents() != 1:
        raise ConversionError(f"{image_path}: image must be a 3D scalar image, got {info.GetDimension()}D")
    geometry = _geometry(info)
    masks = mask_files(case_folder)
    label, overlap, overwritten, missing = masks_to_label_map(geometry, masks, table)
    image_target = dataset_folder / "imagesTr" / f"{case_id}_0000{FILE_ENDING}"
    if image_path.name.endswith(FILE_ENDING):
        copy_file_atomic(image_path, image_target)
    else:
        write_sitk_image(read_sitk(image_path), image_target)
    label_image = sitk.GetImageFromArray(label)
    label_image.SetSpacing(geometry["spacing"])
    label_image.SetOrigin(geometry["origin"])
    label_image.SetDirection(geometry["direction"])
    write_sitk_image(label_image, dataset_folder / "labelsTr" / f"{case_id}{FILE_ENDING}")
    ignored = sorted(set(masks) - set(table))
    return case_id, overlap, overwritten, missing, ignored


def convert_structure_masks(cases_folder: PathLike, raw_root: PathLike, dataset_id: int, name: str,
                            label_table: Optional[Union[Sequence[str], Mapping[str, Any]]] = None,
                            image_name: str = "ct.nii.gz", channel_name: str = "CT", num_processes: int = 1,
                            overwrite: bool = False) -> MaskConversionReport:
    """Convert a per-structure mask layout into ``raw_root/DatasetXXX_Name`` (one label map per case).

    ``label_table``: ordered structure list or mapping (see :func:`label_table_from`); default: every structure
    found in any case, in sorted order. Overlaps: the higher label value wins. Writes ``conversion_report.json``
    beside dataset.json and returns the report.
    """
    cases_folder = Path(cases_folder)
    cases, skipped = find_cases(cases_folder, image_name)
    if label_table is None:
        found = sorted({s for folder in cases.values() for s in mask_files(folder)})
        if not found:
            raise ConversionError(f"{cases_folder}: no '{MASKS_SUBFOLDER}/<structure>.nii.gz' masks in any case")
        table = label_table_from(found)
    else:
        table = label_table_from(label_table)
    folder = prepare_dataset_folder(raw_root, dataset_id, name, overwrite, inputs=[cases_folder])
    report = MaskConversionReport(folder, table, skipped_folders=skipped)
    jobs = [(case_id, case_folder, image_name, table, folder) for case_id, case_folder in cases.items()]
    desc = f"converting {cases_folder.name}"
    if num_processes <= 1:
        results = [_convert_case(job) for job in tqdm(jobs, desc=desc, unit="case")]
    else:
        with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(tqdm(pool.map(_convert_case, jobs), total=len(jobs), desc=desc, unit="case"))
    pairs: Counter = Counter()
    for case_id, overlap, overwritten, missing, ignored in results:
        report.overlap_voxels[case_id] = overlap
        pairs.update(overwritten)
        if missing:
            report.missing_masks[case_id] = missing
        if ignored:
            report.ignored_masks[case_id] = ignored
    report.overwritten_voxels = dict(sorted(pairs.items()))
    atomic_write_json(folder / "conversion_report.json", report.to_json())
    labels = {"background": 0, **table}
    write_dataset_json(folder, {"0": channel_name}, labels, len(cases),
                       {"converted_from": f"per-structure masks in {cases_folder}", "overlap_rule": OVERLAP_RULE})
    return report

"""Dataset integrity check: one clear line per problem, each naming the file.

Checked: every case has every channel file and its label; channels and label share geometry; label values are the
ones declared in dataset.json; images hold no NaN/Inf; every file is a readable, complete 3D image; ``numTraining``
matches the number of cases; ``imagesTr`` and ``labelsTr`` hold no files outside the naming scheme.

SimpleITK (ITK's NIfTI reader) reads a truncated ``.nii.gz`` without an error and silently replaces NaN/Inf voxels
by 0, so NIfTI files are also scanned as a byte stream: completeness against the header, NaN/Inf in float data.
"""
from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from suprem_auto.dataset.raw import RawDataset
from suprem_auto.imageio import ImageReadError, geometry_mismatch, read_image_file
from suprem_auto.imageio.nifti_scan import scan_nifti


class DatasetIntegrityError(ValueError):
    """A raw dataset failed :func:`verify_dataset`; the message lists every problem, one per line."""


def _read_checked(path: Path) -> Tuple[Optional[np.ndarray], Optional[dict], Optional[str], int]:
    """Read one file: ``(array, properties, None, nonfinite)`` or ``(None, None, problem line, 0)``."""
    if not path.is_file():
        return None, None, f"{path}: file is missing", 0
    nonfinite = 0
    if path.name.lower().endswith((".nii", ".nii.gz")):
        problem, nonfinite = scan_nifti(path)
        if problem:
            return None, None, f"{path}: unreadable: {problem}", 0
    try:
        array, props = read_image_file(path)
    except ImageReadError as exc:
        return None, None, str(exc), 0
    if np.issubdtype(array.dtype, np.floating):
        nonfinite = max(nonfinite, int(np.count_nonzero(~np.isfinite(array))))
    return array, props, None, nonfinite


def _label_values(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() < 1 << 16:
        counts = np.bincount(array.ravel().astype(np.int64, copy=False))
        return np.nonzero(counts)[0]
    return np.unique(array)


def check_case(case_id: str, images: Sequence[Path], label: Optional[Path], allowed_values: Sequence[int],
               expected_label: Optional[Path] = None) -> List[str]:
    """All problems of one case (one line each). ``expected_label`` names a missing label when ``label`` is None."""
    problems: List[str] = []
    reference: Optional[Tuple[Path, dict]] = None
    for path in images:
        array, props, problem, nonfinite = _read_checked(Path(path))
        if problem:
            problems.append(problem)
            continue
        if nonfinite:
            problems.append(f"{path}: {nonfinite} NaN/Inf voxels")
        if reference is None:
            reference = (Path(path), props["original_geometry"])
        else:
            diff = geometry_mismatch(reference[1], props["original_geometry"])
            if diff:
                problems.append(f"{path}: geometry differs from channel file {reference[0].name}: {diff}")
    if label is None:
        problems.append(f"{expected_label or case_id}: label file is missing for case {case_id}")
        return problems
    array, props, problem, nonfinite = _read_checked(Path(label))
    if problem:
        problems.append(problem)
        return problems
    if nonfinite:
        problems.append(f"{label}: {nonfinite} NaN/Inf voxels in the label map")
        return problems
    if reference is not None:
        diff = geometry_mismatch(reference[1], props["original_geometry"])
        if diff:
            problems.append(f"{label}: label geometry differs from image {reference[0].name}: {diff}")
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.rint(array)):
        problems.append(f"{label}: label map has non-integer (or NaN) values")
        return problems
    values = _label_values(array)
    undeclared = sorted(set(int(v) for v in values) - set(int(v) for v in allowed_values))
    if undeclared:
        problems.append(f"{label}: label values {undeclared} are not declared in dataset.json "
                        f"(allowed: {list(allowed_values)})")
    return problems


def _folder_problems(ds: RawDataset) -> Tuple[List[str], Dict[str, Path]]:
    """Naming, orphan and numTraining problems; also the label files of cases that have no image at all."""
    problems: List[str] = []
    orphans: Dict[str, Path] = {}
    ending = ds.file_ending
    n_channels = ds.num_channels
    if "dataset" not in ds.dataset_json:
        image_re = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
        images_dir = ds.folder / "imagesTr"
        if images_dir.is_dir():
            for f in sorted(images_dir.iterdir()):
                m = image_re.match(f.name)
                if not m:
                    problems.append(f"{f}: unexpected file in imagesTr (expected <case>_<XXXX>{ending})")
                elif int(m.group(2)) >= n_channels:
                    problems.append(f"{f}: channel {int(m.group(2))} is not declared in dataset.json "
                                    f"channel_names ({n_channels} channels)")
        else:
            problems.append(f"{images_dir}: folder is missing")
        labels_dir = ds.folder / "labelsTr"
        if labels_dir.is_dir():
            for f in sorted(labels_dir.iterdir()):
                if not f.name.endswith(ending) or f.name.startswith("."):
                    problems.append(f"{f}: unexpected file in labelsTr (expected <case>{ending})")
                    continue
                case_id = f.name[:-len(ending)]
                if case_id not in ds.cases:
                    orphans[case_id] = f
        else:
            problems.append(f"{labels_dir}: folder is missing")
    n_cases = len(ds.cases) + len(orphans)
    if n_cases == 0:
        problems.append(f"{ds.folder}: dataset has no training cases")
    declared = ds.dataset_json.get("numTraining")
    if declared is not None and declared != n_cases:
        problems.append(f"{ds.folder / 'dataset.json'}: numTraining is {declared} but the dataset has {n_cases} cases")
    return problems, orphans


CaseJob = Tuple[str, List[Path], Optional[Path], Optional[Path]]  # case id, channel files, label, expected label


def _case_jobs(ds: RawDataset, orphans: Dict[str, Path]) -> List[CaseJob]:
    jobs = []
    for case_id, case in ds.cases.items():
        if "dataset" in ds.dataset_json:
            expected = ds.folder / "dataset.json"
        else:
            expected = ds.folder / "labelsTr" / f"{case_id}{ds.file_ending}"
        jobs.append((case_id, list(case.images), case.label, expected))
    for case_id, label in orphans.items():  # a label whose images are all missing: report the channel files
        images = [ds.folder / "imagesTr" / f"{case_id}_{c:04d}{ds.file_ending}" for c in range(ds.num_channels)]
        jobs.append((case_id, images, label, label))
    return sorted(jobs, key=lambda j: j[0])


def verify_dataset(ds: RawDataset, num_processes: int = 1) -> List[str]:
    """Check a raw dataset; returns one line per problem (each naming the file), ``[]`` when clean."""
    problems, orphans = _folder_problems(ds)
    jobs = _case_jobs(ds, orphans)
    allowed: List[int] = list(ds.labels.all_values)
    per_case: Dict[str, List[str]] = {}
    desc = f"verifying {ds.name}"
    if num_processes <= 1 or len(jobs) <= 1:
        for case_id, images, label, expected in tqdm(jobs, desc=desc, unit="case", leave=False):
            per_case[case_id] = check_case(case_id, images, label, allowed, expected)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=context) as pool:
            futures = {pool.submit(check_case, case_id, images, label, allowed, expected): case_id
                       for case_id, images, label, expected in jobs}
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="case", leave=False):
                per_case[futures[future]] = future.result()
    for case_id in sorted(per_case):
        problems.extend(per_case[case_id])
    return problems


def check_dataset_or_raise(ds: RawDataset, num_processes: int = 1) -> None:
    """Run :func:`verify_dataset`; raise :class:`DatasetIntegrityError` listing every problem."""
    problems = verify_dataset(ds, num_processes)
    if problems:
        raise DatasetIntegrityError(f"{ds.folder}: {len(problems)} integrity problem(s):\n" + "\n".join(problems))


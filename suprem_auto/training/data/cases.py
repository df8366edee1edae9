"""Read-only access to the preprocessed cases of one configuration (memory-mapped)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Union

import numpy as np

from suprem_auto.utils.atomic import load_json


@dataclass
class PreprocessedCase:
    """One case: image (c, z, y, x) float32, segmentation (1, z, y, x) with -1 outside the nonzero mask,
    and the stored foreground locations per label (n, 4) in (c, z, y, x)."""

    case_id: str
    data: np.ndarray
    seg: np.ndarray
    locations: Dict[Union[int, str], np.ndarray]  # label value, or "1,2" for a region
    previous: Optional[np.ndarray] = None  # cascade: the previous stage's labels (1, z, y, x) on the same grid


class PreprocessedCases:
    """The cases of ``<preprocessed>/<Dataset>/<data_identifier>/`` (files are opened lazily, mmap'ed); with
    ``previous_stage`` (a cascade) also ``<previous_stage>/<case>.npy``, the previous stage's labels."""

    def __init__(self, folder: Path, case_ids: List[str], previous_stage: Optional[Path] = None) -> None:
        self.folder = Path(folder)
        self.previous_stage = Path(previous_stage) if previous_stage is not None else None
        if self.previous_stage is not None:
            absent = [c for c in case_ids if not (self.previous_stage / f"{c}.npy").is_file()]
            if absent:
                raise FileNotFoundError(f"{self.previous_stage}: previous-stage segmentation(s) missing: "
                                        f"{', '.join(absent[:5])}")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: preprocessed data folder missing (run suprem_plan_and_preprocess)")
        missing = [c for c in case_ids if not (self.folder / f"{c}.npy").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder}: preprocessed case(s) missing: {', '.join(missing[:5])}")
        self.case_ids = list(case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def load(self, case_id: str) -> PreprocessedCase:
        data = np.load(self.folder / f"{case_id}.npy", mmap_mode="r")
        seg = np.load(self.folder / f"{case_id}_seg.npy", mmap_mode="r")
        previous = (np.load(self.previous_stage / f"{case_id}.npy", mmap_mode="r")
                    if self.previous_stage is not None else None)
        return PreprocessedCase(case_id, data, seg, load_locations(self.folder / f"{case_id}_locs.npz"), previous)

    def properties(self, case_id: str) -> dict:
        return load_json(self.folder / f"{case_id}.json")


def load_locations(path: Path) -> Dict[Union[int, str], np.ndarray]:
    """Foreground locations per label (int key) or region (key "1,2", as stored) from ``<case>_locs.npz`` (empty
    dict if the file does not exist)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return {(int(k) if k.lstrip("-").isdigit() else k): f[k] for k in f.files
                if k.lstrip("-").isdigit() or all(v.isdigit() for v in k.split(","))}


def class_presence(folder: Path, case_ids: List[str]) -> Dict[str, Set[int]]:
    """Labels present in each case, from the stored locations (falls back to reading the segmentation)."""
    out: Dict[str, Set[int]] = {}
    for case in case_ids:
        locs = load_locations(Path(folder) / f"{case}_locs.npz")
        if locs:
            out[case] = {k for k, v in locs.items() if len(v) > 0}
        else:
            seg = np.load(Path(folder) / f"{case}_seg.npy", mmap_mode="r")
            out[case] = {int(v) for v in np.unique(seg) if v > 0}
    return out


def list_preprocessed_cases(folder: Path, raw_dataset: Optional[Path] = None) -> List[str]:
    """IDs of the finished cases of the folder (``<case>.json`` is written last and marks one; its arrays must be
    there too), sorted. With ``raw_dataset`` (a raw folder with a dataset.json) only cases still in it count."""
    folder = Path(folder)
    cases = sorted(p.name[:-5] for p in folder.glob("*.json")
                   if (folder / f"{p.name[:-5]}.npy").is_file() and (folder / f"{p.name[:-5]}_seg.npy").is_file())
    if raw_dataset is not None and (Path(raw_dataset) / "dataset.json").is_file():
        from suprem_auto.dataset import load_raw_dataset_folder

        raw_cases = set(load_raw_dataset_folder(raw_dataset).cases)
        cases = [c for c in cases if c in raw_cases]
    return cases


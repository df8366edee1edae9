"""On-disk format of a preprocessed case (see docs/ARCHITECTURE.md):

``<case>.npy`` float32 (c, z, y, x), ``<case>_seg.npy`` int8/int16 (1, z, y, x), ``<case>_locs.npz`` class
locations, ``<case>.json`` properties. The JSON is written last, so its presence marks a finished case.
Plain .npy was chosen over blosc2 by measurement (benchmarks/RESULTS.md): memory-mapped patch reads are faster.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np

from suprem_auto.utils.atomic import atomic_save_npy, atomic_write, atomic_write_json, load_json

PathLike = Union[str, Path]


def case_files(folder: PathLike, case_id: str) -> Dict[str, Path]:
    """Paths of a preprocessed case's four files."""
    folder = Path(folder)
    return {"data": folder / f"{case_id}.npy", "seg": folder / f"{case_id}_seg.npy",
            "locations": folder / f"{case_id}_locs.npz", "properties": folder / f"{case_id}.json"}


def case_is_complete(folder: PathLike, case_id: str) -> bool:
    """True when all four files of the case exist."""
    return all(p.is_file() for p in case_files(folder, case_id).values())


def save_preprocessed_case(folder: PathLike, case_id: str, data: np.ndarray, seg: np.ndarray,
                           props: Dict[str, Any], locations: Dict[str, np.ndarray]) -> None:
    """Write one case atomically (properties last)."""
    files = case_files(folder, case_id)
    atomic_save_npy(files["data"], np.ascontiguousarray(data, dtype=np.float32))
    atomic_save_npy(files["seg"], np.ascontiguousarray(seg))

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **locations)
    atomic_write(files["locations"], write_npz)
    atomic_write_json(files["properties"], props)


def load_preprocessed_case(folder: PathLike, case_id: str, mmap: bool = True) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Read (data, seg, properties); arrays are memory-mapped read-only by default."""
    files = case_files(folder, case_id)
    mode = "r" if mmap else None
    return (np.load(files["data"], mmap_mode=mode, allow_pickle=False),
            np.load(files["seg"], mmap_mode=mode, allow_pickle=False), load_json(files["properties"]))


def load_class_locations(folder: PathLike, case_id: str) -> Dict[str, np.ndarray]:
    """Foreground locations per class key ("1", or "1,2" for a region): int (n, 4) arrays of (c, z, y, x)."""
    with np.load(case_files(folder, case_id)["locations"], allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}

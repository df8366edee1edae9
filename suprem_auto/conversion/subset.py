"""A smaller copy of a raw dataset (e.g. a handful of hippocampus cases for demos and tests)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from tqdm import tqdm

from suprem_auto.conversion.common import ConversionError, copy_file_atomic, prepare_dataset_folder
from suprem_auto.dataset.raw import load_raw_dataset_folder
from suprem_auto.utils.atomic import atomic_write_json

PathLike = Union[str, Path]


def make_subset(source_folder: PathLike, raw_root: PathLike, dataset_id: int, name: str, num_cases: int,
                case_ids: Optional[Sequence[str]] = None, overwrite: bool = False) -> Path:
    """Copy ``num_cases`` training cases (the first in sorted order, or ``case_ids``) into a new dataset folder.

    Files are copied byte for byte; dataset.json is copied with ``numTraining`` updated and written last.
    """
    source = load_raw_dataset_folder(source_folder)
    chosen = list(case_ids) if case_ids is not None else sorted(source.cases)[:num_cases]
    unknown = [c for c in chosen if c not in source.cases]
    if unknown:
        raise ConversionError(f"{source.folder}: unknown case ids {unknown}")
    if not chosen or (case_ids is None and len(chosen) < num_cases):
        raise ConversionError(f"{source.folder}: has {len(source.cases)} cases, {num_cases} requested")
    folder = prepare_dataset_folder(raw_root, dataset_id, name, overwrite,
                                    inputs=[source.folder, *(p for c in source.cases.values() for p in c.images)])
    for case_id in tqdm(chosen, desc=f"copying {source.name}", unit="case"):
        case = source.cases[case_id]
        for channel, image in enumerate(case.images):
            copy_file_atomic(image, folder / "imagesTr" / f"{case_id}_{channel:04d}{source.file_ending}")
        if case.label is not None:
            copy_file_atomic(case.label, folder / "labelsTr" / f"{case_id}{source.file_ending}")
    data = {k: v for k, v in source.dataset_json.items() if k != "dataset"}
    data["numTraining"] = len(chosen)
    data["subset_of"] = source.name
    atomic_write_json(folder / "dataset.json", data)
    return folder

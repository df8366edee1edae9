"""Raw datasets for the fingerprint, planning and preprocessing tests (real data copied into tmp folders)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import NOT_BUNDLED, TOTALSEG, copy_hippocampus

CT_IMAGE = TOTALSEG / "example_ct.nii.gz"
CT_LABEL = TOTALSEG / "example_seg_fast_force_split.nii.gz"


def make_hippocampus(raw_root: Path, n_cases: int = 10) -> Path:
    """``n_cases`` real hippocampus cases as Dataset004_Hippocampus."""
    return copy_hippocampus(raw_root, n_cases)


def make_ct_dataset(raw_root: Path) -> Path:
    """TotalSegmentator's example CT and its predicted labels as a one-case dataset (channel "CT"); skips the
    calling test when the example is not there."""
    if not CT_IMAGE.is_file():
        pytest.skip(f"needs the TotalSegmentator example ({CT_IMAGE}), which {NOT_BUNDLED}")
    dst = raw_root / "Dataset900_TotalSegCT"
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    shutil.copy(CT_IMAGE, dst / "imagesTr" / "ct_000_0000.nii.gz")
    shutil.copy(CT_LABEL, dst / "labelsTr" / "ct_000.nii.gz")
    names = json.loads((TOTALSEG / "labels.json").read_text())[CT_LABEL.name]["labels"]
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {name: int(v) for v, name in names.items()},
                    "numTraining": 1, "file_ending": ".nii.gz"}
    (dst / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return dst

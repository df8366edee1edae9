"""Shared test fixtures: real data from ../shared/data, copied into temporary folders."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    env = os.environ.get("SUPREM_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    for c in candidates:
        if (c / "Dataset004_Hippocampus").is_dir():
            return c
    raise RuntimeError("shared data not found: set SUPREM_SHARED_DATA to ../shared/data")


SHARED_DATA = _find_shared()
HIPPO = SHARED_DATA / "Dataset004_Hippocampus"
TOTALSEG = SHARED_DATA / "totalsegmentator_example"
DEMO = REPO / "demo" / "Dataset901_HippocampusDemo"


def copy_hippocampus(raw_root: Path, n_cases: int, dataset_id: int = 4, name: str = "Hippocampus",
                     start: int = 0) -> Path:
    """Copy ``n_cases`` real hippocampus cases into ``raw_root/DatasetXXX_name`` with a fitting dataset.json."""
    dst = raw_root / f"Dataset{dataset_id:03d}_{name}"
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    cases: List[str] = sorted(p.name[: -len("_0000.nii.gz")] for p in (HIPPO / "imagesTr").glob("*_0000.nii.gz"))
    chosen = cases[start:start + n_cases]
    for c in chosen:
        shutil.copy(HIPPO / "imagesTr" / f"{c}_0000.nii.gz", dst / "imagesTr")
        shutil.copy(HIPPO / "labelsTr" / f"{c}.nii.gz", dst / "labelsTr")
    dataset_json = json.loads((HIPPO / "dataset.json").read_text())
    dataset_json["numTraining"] = len(chosen)
    (dst / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return dst


@pytest.fixture
def hippo_raw(tmp_path: Path) -> Path:
    """A raw root holding Dataset004_Hippocampus with 6 real cases."""
    root = tmp_path / "raw"
    copy_hippocampus(root, 6)
    return root

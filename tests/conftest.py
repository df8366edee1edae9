"""Shared test fixtures: real data copied into temporary folders.

Where the data comes from: ``SUPREM_SHARED_DATA`` when it is set (a folder without the data then means "no shared
data": there is no fallback), else ``../shared/data`` next to the repository. Without shared hippocampus data the
tests run on the bundled demo set (``demo/Dataset901_HippocampusDemo``: 24 real MSD hippocampus cases, imagesTr and
the labelled imagesTs pooled); tests that need a set that is not bundled (the TotalSegmentator CT/DICOM example,
ACDC) or more hippocampus cases than there are skip with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$SUPREM_SHARED_DATA`` if set (no fallback), else ``../shared/data`` beside the repository."""
    env = os.environ.get("SUPREM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


SHARED_DATA = shared_data_root()
DEMO = REPO / "demo" / "Dataset901_HippocampusDemo"
SHARED_HIPPO = SHARED_DATA / "Dataset004_Hippocampus"
HAS_SHARED_HIPPO = (SHARED_HIPPO / "dataset.json").is_file()
HIPPO = SHARED_HIPPO if HAS_SHARED_HIPPO else DEMO
TOTALSEG = SHARED_DATA / "totalsegmentator_example"
ACDC = SHARED_DATA / "Dataset027_ACDC"
NOT_BUNDLED = "is not bundled with the repository; point SUPREM_SHARED_DATA at the shared data folder"
requires_totalseg = pytest.mark.skipif(not TOTALSEG.is_dir(),
                                       reason=f"needs the TotalSegmentator example ({TOTALSEG}), which {NOT_BUNDLED}")
requires_acdc = pytest.mark.skipif(not ACDC.is_dir(), reason=f"needs Dataset027_ACDC ({ACDC}), which {NOT_BUNDLED}")
requires_shared_hippocampus = pytest.mark.skipif(
    not HAS_SHARED_HIPPO, reason=f"needs the full Dataset004_Hippocampus ({SHARED_HIPPO}), which {NOT_BUNDLED}")


def _hippocampus_pairs(folder: Path) -> Dict[str, Tuple[Path, Path]]:
    """case id -> (image, label) for every labelled case of imagesTr/labelsTr and imagesTs/labelsTs, sorted by id."""
    pairs: Dict[str, Tuple[Path, Path]] = {}
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        for image in (folder / images).glob("*_0000.nii.gz"):
            case = image.name[: -len("_0000.nii.gz")]
            label = folder / labels / f"{case}.nii.gz"
            if label.is_file():
                pairs[case] = (image, label)
    return dict(sorted(pairs.items()))


HIPPO_PAIRS = _hippocampus_pairs(HIPPO)
HIPPO_CASES: List[str] = list(HIPPO_PAIRS)


def hippo_image(case: str) -> Path:
    """The image file of one real hippocampus case."""
    return HIPPO_PAIRS[case][0]


def hippo_label(case: str) -> Path:
    """The label file of one real hippocampus case."""
    return HIPPO_PAIRS[case][1]


def hippo_cases(n: int, start: int = 0) -> List[str]:
    """``n`` real hippocampus case ids (sorted, from ``start``); skips the calling test when there are fewer."""
    chosen = HIPPO_CASES[start:start + n]
    if len(chosen) < n:
        pytest.skip(f"needs {start + n} hippocampus cases, {HIPPO} has {len(HIPPO_CASES)} "
                    f"(the full set {NOT_BUNDLED})")
    return chosen


def copy_hippocampus(raw_root: Path, n_cases: int, dataset_id: int = 4, name: str = "Hippocampus",
                     start: int = 0) -> Path:
    """Copy ``n_cases`` real hippocampus cases into ``raw_root/DatasetXXX_name`` with a fitting dataset.json."""
    chosen = hippo_cases(n_cases, start)
    dst = raw_root / f"Dataset{dataset_id:03d}_{name}"
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    for c in chosen:
        shutil.copy(hippo_image(c), dst / "imagesTr")
        shutil.copy(hippo_label(c), dst / "labelsTr")
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


@pytest.fixture
def single_torch_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("single_torch_thread")``): tests share
    2 cores with other jobs, and oversubscribed OpenMP threads slow tiny convolutions down many times."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

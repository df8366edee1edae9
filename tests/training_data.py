"""Small real training set for the training tests: hippocampus cases, a hand-written plan, real preprocessing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence

from conftest import copy_hippocampus

from suprem_auto.dataset import load_raw_dataset
from suprem_auto.paths import Roots, resolve_roots
from suprem_auto.planning import DEFAULT_PLANS_NAME
from suprem_auto.planning.hand_plans import plain_unet_plans
from suprem_auto.utils.atomic import atomic_write_json

DATASET = "Dataset004_Hippocampus"


def tiny_plans(patch_size: Sequence[int] = (24, 32, 24), batch_size: int = 2,
               features: Sequence[int] = (8, 16, 32), decoder_convs: int = 1) -> Dict[str, Any]:
    """A complete plan for 1 mm hippocampus MRI: z-score, no resampling, a plain U-Net with one stage per feature
    width (the package's hand plan, :func:`suprem_auto.planning.hand_plans.plain_unet_plans`)."""
    return plain_unet_plans(DATASET, patch_size=patch_size, batch_size=batch_size, features=features,
                            decoder_convs=decoder_convs)


def merge_foreground_labels(dataset_folder: Path) -> None:
    """Turn a hippocampus copy into a 2-class task (anterior + posterior -> 1), rewriting labels and dataset.json."""
    import SimpleITK as sitk

    for path in (dataset_folder / "labelsTr").glob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(sitk.Cast(image > 0, sitk.sitkUInt8), str(path))
    dataset_json = json.loads((dataset_folder / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "hippocampus": 1}
    (dataset_folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))


def make_training_roots(tmp: Path, n_cases: int = 6, plans: Dict[str, Any] | None = None, dataset_id: int = 4,
                        name: str = "Hippocampus", merge_labels: bool = False) -> Roots:
    """raw/preprocessed/results roots under ``tmp`` with ``n_cases`` real cases preprocessed by our pipeline."""
    from suprem_auto.preprocessing import preprocess_dataset

    roots = resolve_roots(str(tmp / "raw"), str(tmp / "preprocessed"), str(tmp / "results"))
    raw_folder = copy_hippocampus(roots.raw, n_cases, dataset_id=dataset_id, name=name)
    if merge_labels:
        merge_foreground_labels(raw_folder)
    ds = load_raw_dataset(roots.raw, dataset_id)
    plans = dict(plans or tiny_plans(), dataset_name=ds.name)
    out = roots.preprocessed / ds.name
    out.mkdir(parents=True)
    atomic_write_json(out / f"{DEFAULT_PLANS_NAME}.json", plans)
    shutil.copy(ds.folder / "dataset.json", out / "dataset.json")
    preprocess_dataset(ds, plans, "3d_fullres", out, num_processes=1, progress=False)
    return roots


def read_metrics(fold_dir: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]

import json
from pathlib import Path

import pytest

from suprem_auto.dataset import DatasetError, load_raw_dataset, parse_labels


def test_id_and_name_both_find_the_dataset(hippo_raw: Path) -> None:
    by_id = load_raw_dataset(hippo_raw, "4")
    assert by_id.folder == load_raw_dataset(hippo_raw, "Dataset004_Hippocampus").folder
    assert load_raw_dataset(hippo_raw, "Hippocampus").name == "Dataset004_Hippocampus"
    assert len(by_id.cases) == 6
    case = next(iter(by_id.cases.values()))
    assert case.images[0].name.endswith("_0000.nii.gz") and case.label.exists()


def test_unknown_dataset_id_names_the_root(hippo_raw: Path) -> None:
    with pytest.raises(DatasetError, match=str(hippo_raw)):
        load_raw_dataset(hippo_raw, 999)


def test_explicit_dataset_map(hippo_raw: Path) -> None:
    folder = hippo_raw / "Dataset004_Hippocampus"
    dj = json.loads((folder / "dataset.json").read_text())
    dj["dataset"] = {"caseA": {"images": ["imagesTr/hippocampus_001_0000.nii.gz"], "label": "labelsTr/hippocampus_001.nii.gz"}}
    (folder / "dataset.json").write_text(json.dumps(dj))
    ds = load_raw_dataset(hippo_raw, 4)
    assert list(ds.cases) == ["caseA"] and ds.cases["caseA"].images[0].exists()


def test_labels_regions_and_ignore() -> None:
    spec = parse_labels({"labels": {"background": 0, "edema": 1, "core": 2, "whole": [1, 2], "ignore": 3},
                         "regions_class_order": [1, 2, 3]})
    assert spec.ignore_label == 3 and spec.has_regions and spec.num_segmentation_heads == 3
    with pytest.raises(ValueError, match="highest"):
        parse_labels({"labels": {"background": 0, "ignore": 1, "a": 2}})
    with pytest.raises(ValueError, match="background"):
        parse_labels({"labels": {"a": 1}})

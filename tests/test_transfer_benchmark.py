"""Pure parts of ``benchmarks/transfer.py``: the subject split, run tags, policy arguments (no training)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import transfer  # noqa: E402


def _fake_source(folder: Path, cases: list) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    for case in cases:
        (folder / "imagesTr" / f"{case}_0000.nii.gz").touch()
    return folder


def test_selection_comes_after_the_old_parts(tmp_path: Path) -> None:
    source = _fake_source(tmp_path / "hippo", [f"hippocampus_{i:03d}" for i in range(30)])
    common = ["--source", str(source), "--n_pretrain", "10", "--n_pool", "5", "--n_test", "5"]
    old = transfer.case_split(source, transfer.parse_args(common + ["--n_selection", "0"]))
    new = transfer.case_split(source, transfer.parse_args(common + ["--n_selection", "4"]))
    for part in ("pretrain", "pool", "test"):
        assert new[part] == old[part]
    assert len(new["selection"]) == 4
    assert not set(new["selection"]) & set(new["pretrain"] + new["pool"] + new["test"])


def test_acdc_splits_by_patient(tmp_path: Path) -> None:
    cases = [f"patient{i:03d}_frame{f:02d}" for i in range(1, 13) for f in (1, 2)]
    source = _fake_source(tmp_path / "acdc", cases)
    args = transfer.parse_args(["--dataset", "acdc", "--source", str(source), "--n_pretrain", "4", "--n_pool", "4",
                                "--n_test", "2", "--n_selection", "2", "--sizes", "2"])
    split = transfer.case_split(source, args)
    parts = ("pretrain", "pool", "test", "selection")
    assert sorted(c for p in parts for c in split[p]) == sorted(cases)
    for part in parts:
        assert len(split[part]) == 2 * len(split[f"{part}_subjects"])
        assert {c.split("_")[0] for c in split[part]} == set(split[f"{part}_subjects"])
    first_two = transfer.pool_cases(split, 2, args)
    assert len(first_two) == 4 and {c.split("_")[0] for c in first_two} == set(split["pool_subjects"][:2])
    assert args.configuration == "2d" and args.spec.pretrain_id == 960


def test_run_tags(tmp_path: Path) -> None:
    args = transfer.parse_args(["--source", str(tmp_path), "--policies", "layer_decay", "short"])
    assert args.policies == ["layer_decay", "short"] and args.policy == "layer_decay"
    assert transfer.run_tag(args, 5, "pretrained", "layer_decay", 300, 0) == \
        "plain_unet_n5_pretrained-layer_decay_it300_s0"
    assert transfer.run_tag(args, 5, "scratch", None, 300, 1) == "plain_unet_n5_scratch_it300_s1"
    cross = transfer.parse_args(["--source", str(tmp_path), "--configuration", "2d", "--tag_suffix", "_xfrom_acdc"])
    assert cross.policies == [None]
    assert transfer.run_tag(cross, 5, "pretrained", None, 150, 0) == "plain_unet_2d_n5_pretrained_it150_s0_xfrom_acdc"
    acdc = transfer.parse_args(["--dataset", "acdc", "--source", str(tmp_path), "--policy", "default",
                                "--policies", "short"])
    assert acdc.policy is None and acdc.policies == ["short", None]
    assert transfer.run_tag(acdc, 10, "scratch", None, 600, 2) == "acdc_plain_unet_n10_scratch_it600_s2"


@pytest.mark.parametrize("width", [1.0, 0.25, 0.5])
def test_unnarrowed_round_trip(width: float) -> None:
    from suprem_auto.networks import scale_width

    arch = {"name": "plain_unet", "kwargs": {"n_stages": 3, "features_per_stage": [32, 64, 128],
                                             "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]],
                                             "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 2}}
    narrowed = scale_width(arch, width)
    assert transfer.unnarrowed(narrowed, width) == arch


def test_width_curve_points_from_budget_runs_keep_width_only_variants(tmp_path: Path) -> None:
    """``width_curves.py budget`` reads heldout_budget.py's results: every width run with nothing but a width flag,
    the iterations each bought and its held-out Dice; a run with another flag changed the recipe and is left out."""
    import json

    import width_curves

    def result(name: str, width: float, iterations: int, dice: float, flags: list) -> None:
        (tmp_path / name).write_text(json.dumps({"configuration": "3d_fullres", "network_width": width,
                                                 "iterations": iterations, "flags": flags,
                                                 "held_out": {"foreground_mean": dice}}))

    result("ours_3d_fullres_10m.json", 0.25, 1936, 0.883, [])
    result("ours_3d_fullres_40m.json", 0.25, 7736, 0.894, [])
    result("ours_3d_fullres_40m_network_width_0.5.json", 0.5, 2969, 0.889, ["--network_width", "0.5"])
    result("ours_3d_fullres_40m_batch_size_4.json", 0.25, 5000, 0.850, ["--batch_size", "4"])
    result("ours_2d_40m.json", 0.25, 13250, 0.876, [])
    points = width_curves.budget_points(tmp_path, "3d_fullres")
    assert points == {0.25: {1936: 0.883, 7736: 0.894}, 0.5: {2969: 0.889}}

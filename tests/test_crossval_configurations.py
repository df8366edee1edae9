"""Which configurations ``suprem_cross_validate`` trains when ``-c`` is not given, and in which order."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from suprem_auto.cli.cross_validate import build_parser, scratch_configurations
from suprem_auto.crossval.configurations import default_configurations, training_order
from suprem_auto.planning import save_plans
from suprem_auto.planning.hand_plans import plain_unet_plans


def _cascade_plans() -> dict:
    plans = plain_unet_plans("Dataset004_Hippocampus")
    full = plans["configurations"]["3d_fullres"]
    low = dict(copy.deepcopy(full), data_identifier="p_3d_lowres", spacing=[2.0, 2.0, 2.0],
               next_stage="3d_cascade_fullres")
    plans["configurations"]["3d_lowres"] = low
    plans["configurations"]["3d_cascade_fullres"] = dict(copy.deepcopy(full), previous_stage="3d_lowres")
    return plans


def _preprocessed(root: Path, plans: dict, with_data: list) -> Path:
    pre = root / "Dataset004_Hippocampus"
    pre.mkdir(parents=True)
    save_plans(plans, pre / "suprem_plans.json")
    for config in with_data:
        folder = pre / plans["configurations"][config]["data_identifier"]
        folder.mkdir()
        np.save(folder / "case_seg.npy", np.zeros((1, 2, 2, 2), dtype=np.int8))
    return pre


def test_cascade_trains_after_its_previous_stage() -> None:
    plans = _cascade_plans()
    assert training_order(["3d_cascade_fullres", "3d_fullres"], plans) == \
        ["3d_fullres", "3d_lowres", "3d_cascade_fullres"]
    assert training_order(["3d_cascade_fullres"], plans) == ["3d_lowres", "3d_cascade_fullres"]


def test_default_is_every_preprocessed_configuration(tmp_path: Path) -> None:
    plans = _cascade_plans()
    pre = _preprocessed(tmp_path / "only_fullres", plans, ["3d_fullres"])
    chosen, skipped = default_configurations(pre, "suprem_plans")
    assert chosen == ["3d_fullres"]  # the cascade shares full-res data but needs the low-res stage too
    assert any(line.startswith("3d_lowres: not preprocessed") and "-c 3d_lowres" in line for line in skipped)
    assert any(line.startswith("3d_cascade_fullres") for line in skipped)
    pre = _preprocessed(tmp_path / "both", plans, ["3d_fullres", "3d_lowres"])
    assert default_configurations(pre, "suprem_plans")[0] == ["3d_fullres", "3d_lowres", "3d_cascade_fullres"]


def test_cli_without_c_uses_the_plans(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _preprocessed(tmp_path / "pre", _cascade_plans(), ["3d_fullres", "3d_lowres"])
    args = build_parser().parse_args(["-d", "4", "--preprocessed", str(tmp_path / "pre"), "--raw", str(tmp_path),
                                      "--results", str(tmp_path / "results")])
    assert scratch_configurations(args) == ["3d_fullres", "3d_lowres", "3d_cascade_fullres"]
    assert "configurations: 3d_fullres 3d_lowres 3d_cascade_fullres" in capsys.readouterr().out
    args.configurations = ["3d_cascade_fullres"]
    assert scratch_configurations(args) == ["3d_lowres", "3d_cascade_fullres"]

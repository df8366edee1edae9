"""The typed plans view and the one place run options change a configuration plan, on plans made from real
hippocampus cases."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from planning_fixtures import make_hippocampus
from training_data import tiny_plans

from suprem_auto.dataset.raw import load_raw_dataset_folder
from suprem_auto.fingerprint import extract_fingerprint
from suprem_auto.planning import (PlansError, apply_overrides, load_plans, plan_default, plans_view, save_plans)


@pytest.fixture(scope="module")
def real_plans(tmp_path_factory):
    """The default planner's plans for 4 real hippocampus cases (2d and 3d_fullres)."""
    ds = load_raw_dataset_folder(make_hippocampus(tmp_path_factory.mktemp("raw"), 4))
    fingerprint = extract_fingerprint(ds, num_processes=1, progress=False)
    return plan_default(fingerprint, ds.channel_names, 3, ds.name)


def test_view_reads_the_plans_typed_and_writes_them_back_unchanged(real_plans):
    view = plans_view(real_plans)
    assert view.to_json() == real_plans
    assert json.loads(json.dumps(view.to_json())) == real_plans
    for name, block in real_plans["configurations"].items():
        plan = view.configuration(name)
        assert plan.patch_size == tuple(block["patch_size"]) and plan.batch_size == block["batch_size"]
        assert plan.spacing == tuple(block["spacing"]) and plan.data_identifier == block["data_identifier"]
        assert plan.architecture.name == block["architecture"]["name"]
        assert [n.scheme for n in plan.normalization] == [n["scheme"] for n in block["normalization"]]
        assert plan.is_2d == (name == "2d")
    assert view.dataset_name == real_plans["dataset_name"] and view.transpose_forward == tuple(
        real_plans["transpose_forward"])


def test_view_is_read_only_and_names_unknown_configurations(real_plans):
    view = plans_view(real_plans)
    plan = view.configuration("3d_fullres")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.batch_size = 99
    with pytest.raises(TypeError):
        plan.architecture.kwargs["features_per_stage"] = [1]
    with pytest.raises(PlansError, match=r"no configuration '3d_lowres' \(known: 2d, 3d_fullres\)"):
        view.configuration("3d_lowres")


def test_view_refuses_invalid_plans_naming_the_field(real_plans):
    bad = copy.deepcopy(real_plans)
    bad["configurations"]["3d_fullres"]["batch_size"] = 0
    with pytest.raises(PlansError, match=r"my\.json.*configurations\.3d_fullres\.batch_size"):
        plans_view(bad, "my.json")


def test_overrides_are_applied_validated_and_saved_like_the_planner_saves(real_plans, tmp_path):
    before = copy.deepcopy(real_plans)
    block = real_plans["configurations"]["3d_fullres"]
    strides = block["architecture"]["kwargs"]["strides"]
    divisor = [1, 1, 1]
    for stride in strides:
        divisor = [d * s for d, s in zip(divisor, stride)]
    patch = [2 * d for d in divisor]
    changed = apply_overrides(real_plans, "3d_fullres", {"patch_size": patch, "batch_size": 3,
                                                         "network_width": 0.5})
    assert real_plans == before  # the input is never changed
    new = plans_view(changed).configuration("3d_fullres")
    assert list(new.patch_size) == patch and new.batch_size == 3
    widths = block["architecture"]["kwargs"]["features_per_stage"]
    assert list(new.architecture.kwargs["features_per_stage"]) == [max(4, round(w / 2)) for w in widths]
    assert plans_view(changed).configuration("2d") == plans_view(real_plans).configuration("2d")
    path = save_plans(changed, tmp_path / "plans.json")
    assert load_plans(path) == changed


def test_bad_overrides_fail_before_anything_uses_them(real_plans):
    block = real_plans["configurations"]["3d_fullres"]
    odd = [p + 1 for p in block["patch_size"]]  # no longer divisible by the network's downsampling
    with pytest.raises(PlansError, match=r"configurations\.3d_fullres\.architecture\.kwargs\.strides"):
        apply_overrides(real_plans, "3d_fullres", {"patch_size": odd})
    with pytest.raises(PlansError, match="--patch_size .* must be 3 integers"):
        apply_overrides(real_plans, "3d_fullres", {"patch_size": [32, 32]})
    with pytest.raises(PlansError, match="--batch_size 0"):
        apply_overrides(real_plans, "3d_fullres", {"batch_size": 0})
    with pytest.raises(PlansError, match="--network_width -1"):
        apply_overrides(real_plans, "3d_fullres", {"network_width": -1})
    with pytest.raises(PlansError, match="unknown plan override"):
        apply_overrides(real_plans, "3d_fullres", {"lr": 0.1})
    with pytest.raises(PlansError, match="no configuration '3d_lowres'"):
        apply_overrides(real_plans, "3d_lowres", {"batch_size": 2})


def test_backbone_override_gives_the_backbone_its_defaults_and_keeps_the_plans_one():
    plans = tiny_plans()
    same = apply_overrides(plans, "3d_fullres", {"backbone": "plain_unet", "network_width": 1.0})
    assert same == plans
    other = apply_overrides(plans, "3d_fullres", {"backbone": "segresnet"})
    assert other["configurations"]["3d_fullres"]["architecture"] == {"name": "segresnet", "kwargs": {}}

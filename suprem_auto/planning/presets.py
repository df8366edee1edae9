"""Preset planners: fixed SuPreM backbones with pinned preprocessing, shipped as JSON in ``suprem_auto.presets``.

A preset pins orientation (RAS), spacing, normalization and architecture. Only the patch (the default shrunk to
the dataset's median shape, rounded up to the architecture's divisor) and the batch size (scaled from a reference
to the memory budget) depend on the dataset.

A preset file with ``"planner": "resenc"`` is a residual-encoder preset instead (nnU-Net's ResEnc M/L/XL): it holds
the parameters of :mod:`suprem_auto.planning.resenc_planner`, which plans like the default planner.
"""
from __future__ import annotations

import json
import warnings
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.planning.resenc_planner import check_resenc_preset, plan_resenc
from suprem_auto.planning.schema import PlansError

PRESET_PACKAGE = "suprem_auto.presets"
PRESET_FIELDS = ("preset", "reorient_to_ras", "spacing", "normalization", "resampling", "architecture",
                 "patch_divisor", "default_patch_size", "batch_size_reference", "min_batch_size")


PRESET_PLANNERS = ("preset", "resenc")


def _read_preset(name: str) -> Dict[str, Any]:
    source = f"{PRESET_PACKAGE}/{name}.json"
    try:
        preset = json.loads(resources.files(PRESET_PACKAGE).joinpath(f"{name}.json").read_text())
    except json.JSONDecodeError as exc:
        raise PlansError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(preset, dict):
        raise PlansError(f"{source}: a preset must be a JSON object")
    return preset


def list_presets(planner: Optional[str] = "preset") -> List[str]:
    """Names of the shipped presets of one planner kind: ``"preset"`` (the SuPreM backbones, the default),
    ``"resenc"`` (residual-encoder presets), or ``None`` for all."""
    files = resources.files(PRESET_PACKAGE)
    names = sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".json"))
    if planner is None:
        return names
    return [n for n in names if _read_preset(n).get("planner", "preset") == planner]


def load_preset(name: str) -> Dict[str, Any]:
    """Read and check a shipped preset; unknown names list the known ones."""
    known = list_presets(None)
    if name not in known:
        raise PlansError(f"unknown preset '{name}' (known: {', '.join(known)})")
    source = f"{PRESET_PACKAGE}/{name}.json"
    preset = _read_preset(name)
    planner = preset.get("planner", "preset")
    if planner not in PRESET_PLANNERS:
        raise PlansError(f"{source}: field 'planner' must be one of {PRESET_PLANNERS}, got {planner!r}")
    if planner == "resenc":
        return check_resenc_preset(preset, source)
    for key in PRESET_FIELDS:
        if key not in preset:
            raise PlansError(f"{source}: field '{key}' is missing")
    return preset


def preset_patch_size(default_patch: Sequence[int], median_shape: Sequence[float], divisor: int) -> List[int]:
    """Default patch, shrunk per axis to the median shape rounded up to a multiple of ``divisor``."""
    out = []
    for default, median in zip(default_patch, median_shape):
        fitted = int(np.ceil(max(float(median), 1.0) / divisor) * divisor)
        out.append(int(min(default, fitted)))
    return out


def preset_batch_size(preset: Dict[str, Any], patch: Sequence[int], gpu_memory_gb: float, dataset_voxels: float) -> int:
    """Batch size scaled from the preset's reference (memory and patch voxels), capped at 5 % of the dataset."""
    ref = preset["batch_size_reference"]
    scale = (gpu_memory_gb / float(ref["gpu_memory_gb"])) * (np.prod(ref["patch_size"], dtype=np.float64) /
                                                            np.prod(patch, dtype=np.float64))
    batch = int(np.floor(float(ref["batch_size"]) * scale))
    fraction = float(preset.get("max_dataset_fraction_per_batch", 0.05))
    cap = int(round(dataset_voxels * fraction / np.prod(patch, dtype=np.float64)))
    return max(min(batch, cap), int(preset["min_batch_size"]))


def plan_preset(name: str, fingerprint: Dict[str, Any], channel_names: Sequence[str], dataset_name: str,
                gpu_memory_gb: Optional[float] = None, num_outputs: Optional[int] = None) -> Dict[str, Any]:
    """Plans ``<name>_plans`` for a dataset under a shipped preset: one 3d_fullres configuration for a SuPreM
    backbone preset (memory budget default 8 GB); the default planner's configurations for a ResEnc preset (which
    needs ``num_outputs``, the network's output channels; memory default: the preset's target)."""
    preset = load_preset(name)
    if preset.get("planner") == "resenc":
        if num_outputs is None:
            raise PlansError(f"preset {name}: planning a residual-encoder preset needs num_outputs")
        return plan_resenc(preset, fingerprint, channel_names, num_outputs, dataset_name, gpu_memory_gb)
    gpu_memory_gb = 8.0 if gpu_memory_gb is None else gpu_memory_gb
    plans_name = f"{name}_plans"
    expected = preset.get("expected_channel_name")
    for channel in channel_names:
        if expected and channel.casefold() != str(expected).casefold():
            warnings.warn(f"preset {name} was pre-trained on {expected}; channel '{channel}' gets its "
                          f"{expected} normalization anyway", stacklevel=2)
    if len(channel_names) != int(preset.get("num_input_channels", 1)):
        warnings.warn(f"preset {name} expects {preset.get('num_input_channels', 1)} input channel(s), the dataset "
                      f"has {len(channel_names)}; pre-trained first-layer weights must be adapted", stacklevel=2)
    perms = np.asarray(fingerprint.get("ras_permutations") or [[0, 1, 2]] * len(fingerprint["spacings"]))
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    if not preset["reorient_to_ras"]:
        perms = np.tile(np.arange(3), (len(spacings), 1))
    spacings_ras = np.take_along_axis(spacings, perms, axis=1)
    shapes_ras = np.take_along_axis(shapes, perms, axis=1)
    target = np.asarray(preset["spacing"], dtype=float)
    median_shape = np.median(np.round(shapes_ras * spacings_ras / target), axis=0)
    patch = preset_patch_size(preset["default_patch_size"], median_shape, int(preset["patch_divisor"]))
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * len(spacings))
    batch = preset_batch_size(preset, patch, gpu_memory_gb, dataset_voxels)
    config = {
        "data_identifier": f"{plans_name}_3d_fullres", "spacing": [float(s) for s in target], "patch_size": patch,
        "batch_size": batch, "median_image_size_in_voxels": [float(m) for m in median_shape],
        "normalization": [json.loads(json.dumps(preset["normalization"])) for _ in channel_names],
        "resampling": dict(preset["resampling"]), "architecture": json.loads(json.dumps(preset["architecture"])),
        "patch_divisor": int(preset["patch_divisor"]), "batch_dice": bool(preset.get("batch_dice", False)),
    }
    return {
        "format_version": 1, "plans_name": plans_name, "dataset_name": dataset_name, "preset": name,
        "planner": "preset", "gpu_memory_gb": float(gpu_memory_gb), "reorient_to_ras": bool(preset["reorient_to_ras"]),
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": [float(s) for s in np.median(spacings_ras, axis=0)],
        "original_median_shape_after_transp": [float(s) for s in np.median(shapes_ras, axis=0)],
        "foreground_intensity_properties_per_channel": fingerprint["foreground_intensity_properties_per_channel"],
        "configurations": {"3d_fullres": config},
    }

"""Residual-encoder presets (nnU-Net's ResEnc M/L/XL planners): the default planner's spacing, transposition,
normalization and configurations with a ``resenc_unet`` and its own memory rule.

Per configuration the patch starts as the default planner's and shrinks (the default rule) until the ResEnc U-Net's
activation-voxel estimate is at most the preset's reference, scaled from the preset's memory target to the requested
one. The batch is ``round(reference / estimate * reference_batch_size)``, at least ``min_batch_size`` and capped so
that one batch covers at most ``max_dataset_fraction_per_batch`` of the dataset (1.0 in the shipped presets:
nnU-Net's ResEnc planners replace the default 5 % cap by the whole dataset). The preset's numbers are data, in
``plans/resenc_*.json`` (``"planner": "resenc"``).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.planning.default_planner import (capped_batch_size, dataset_geometry, fit_patch_to_memory,
                                                  normalization_for_channels, plan_configurations, plans_document)
from suprem_auto.planning.schema import PlansError
from suprem_auto.planning.topology import Topology, features_per_stage, resenc_unet_feature_map_voxels

RESENC_FIELDS = ("preset", "planner", "gpu_memory_gb", "feature_map_reference", "reference_batch_size",
                 "n_blocks_per_stage", "n_conv_per_stage_decoder", "base_features", "max_features",
                 "min_batch_size", "max_dataset_fraction_per_batch")
_DIMS = ("2d", "3d")


def check_resenc_preset(preset: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Raise :class:`PlansError` naming the file and field when a ResEnc preset lacks a field or has a bad one."""
    for key in RESENC_FIELDS:
        if key not in preset:
            raise PlansError(f"{source}: field '{key}' is missing")
    for key in ("feature_map_reference", "reference_batch_size", "max_features"):
        for dim in _DIMS:
            value = preset[key].get(dim) if isinstance(preset[key], dict) else None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise PlansError(f"{source}: field '{key}.{dim}' must be a positive number, got {value!r}")
    blocks = preset["n_blocks_per_stage"]
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, int) and b >= 1 for b in blocks):
        raise PlansError(f"{source}: field 'n_blocks_per_stage' must be a non-empty list of integers >= 1")
    for key in ("gpu_memory_gb", "max_dataset_fraction_per_batch"):
        if not isinstance(preset[key], (int, float)) or preset[key] <= 0:
            raise PlansError(f"{source}: field '{key}' must be a positive number, got {preset[key]!r}")
    return preset


def _per_stage(value: Any, n: int, field: str) -> List[int]:
    """An int for every stage, or the first ``n`` entries of a list (too short a list is an error)."""
    if isinstance(value, int):
        return [value] * n
    if len(value) < n:
        raise PlansError(f"ResEnc preset field '{field}' has {len(value)} entries, the plan needs {n} stages")
    return [int(v) for v in value[:n]]


def plan_resenc_unet(preset: Dict[str, Any], spacing: Sequence[float], median_shape: Sequence[float],
                     num_outputs: int, dataset_voxels: float, gpu_memory_gb: float) -> Dict[str, Any]:
    """Patch size, topology and batch size of a residual-encoder U-Net for one configuration."""
    spacing_arr = np.asarray(spacing, dtype=float)
    median = np.asarray(median_shape, dtype=float)
    dim = f"{len(spacing_arr)}d"
    reference = float(preset["feature_map_reference"][dim]) * gpu_memory_gb / float(preset["gpu_memory_gb"])
    max_features = int(preset["max_features"][dim])

    def kwargs_for(top: Topology) -> Dict[str, Any]:
        n = top.n_stages
        return {"n_stages": n, "features_per_stage": features_per_stage(n, int(preset["base_features"]), max_features),
                "kernel_sizes": top.kernel_sizes, "strides": top.strides,
                "n_blocks_per_stage": _per_stage(preset["n_blocks_per_stage"], n, "n_blocks_per_stage"),
                "n_conv_per_stage_decoder": _per_stage(preset["n_conv_per_stage_decoder"], n - 1,
                                                       "n_conv_per_stage_decoder")}

    def estimate(top: Topology) -> int:
        kw = kwargs_for(top)
        return resenc_unet_feature_map_voxels(top.patch_size, top, kw["features_per_stage"], num_outputs,
                                              kw["n_blocks_per_stage"], kw["n_conv_per_stage_decoder"])

    topology = fit_patch_to_memory(spacing_arr, median, lambda top: estimate(top) <= reference)
    voxels = estimate(topology)
    batch_size = capped_batch_size(reference, voxels, int(preset["reference_batch_size"][dim]), dataset_voxels,
                                   topology.patch_size, float(preset["max_dataset_fraction_per_batch"]),
                                   int(preset["min_batch_size"]))
    return {"spacing": [float(s) for s in spacing_arr], "patch_size": [int(p) for p in topology.patch_size],
            "batch_size": batch_size, "median_image_size_in_voxels": [float(m) for m in median],
            "architecture": {"name": "resenc_unet", "kwargs": kwargs_for(topology)},
            "estimated_feature_map_voxels": int(voxels)}


def plan_resenc(preset: Dict[str, Any], fingerprint: Dict[str, Any], channel_names: Sequence[str],
                num_outputs: int, dataset_name: str, gpu_memory_gb: Optional[float] = None) -> Dict[str, Any]:
    """Plans ``<preset>_plans`` (2d, 3d_fullres, 3d_lowres when useful) under a ResEnc preset.

    ``gpu_memory_gb`` defaults to the preset's target (M 8, L 24, XL 40); another value scales its reference.
    The preprocessing equals the default planner's but is stored under this plans name (data identifiers
    ``<plans_name>_<configuration>``), so the cases are preprocessed again for these plans.
    """
    name = preset["preset"]
    plans_name = f"{name}_plans"
    memory = float(preset["gpu_memory_gb"] if gpu_memory_gb is None else gpu_memory_gb)
    if memory != float(preset["gpu_memory_gb"]):
        warnings.warn(f"preset {name} is calibrated for {preset['gpu_memory_gb']:g} GB; planning it for {memory:g} GB "
                      f"scales its reference (patch and batch sizes differ from nnU-Net's {name})", stacklevel=2)
    geometry = dataset_geometry(fingerprint)
    normalization = normalization_for_channels(channel_names, fingerprint["foreground_intensity_properties_per_channel"],
                                               fingerprint["median_relative_size_after_cropping"])

    def plan(spacing: Sequence[float], median_shape: Sequence[float]) -> Dict[str, Any]:
        return plan_resenc_unet(preset, spacing, median_shape, num_outputs, geometry.dataset_voxels, memory)

    configs = plan_configurations(plans_name, geometry, plan, normalization)
    return plans_document(plans_name, dataset_name, fingerprint, geometry, configs, name, "resenc", memory)

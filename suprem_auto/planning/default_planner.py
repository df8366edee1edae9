"""The default planner: nnU-Net's heuristics for 2d, 3d_fullres and 3d_lowres plain U-Net configurations."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.planning.topology import (features_per_stage, plain_unet_feature_map_voxels,
                                           pool_and_conv_topology)

DEFAULT_PLANS_NAME = "suprem_plans"
ANISOTROPY_THRESHOLD = 3.0
LOWRES_CREATION_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
MAX_DATASET_FRACTION_PER_BATCH = 0.05
REFERENCE_GPU_MEMORY_GB = 8.0
# activation-voxel budget of an 8 GB GPU and the batch size it corresponds to (nnU-Net's calibration)
FEATURE_MAP_REFERENCE = {3: 560_000_000, 2: 85_000_000}
REFERENCE_BATCH_SIZE = {3: 2, 2: 12}
MAX_FEATURES = {3: 320, 2: 512}
INITIAL_PATCH_EDGE = {3: 256, 2: 2048}
MIN_BATCH_SIZE = 2
DEFAULT_RESAMPLING = {"data_order": 3, "seg_order": 1, "probabilities_order": 1, "order_z": 0,
                      "force_separate_z": None, "anisotropy_threshold": ANISOTROPY_THRESHOLD}


def fullres_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Median spacing; a much coarser axis with few voxels gets its 10th-percentile spacing instead."""
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    anisotropic_voxels = median_shape[worst] * ANISOTROPY_THRESHOLD < min(median_shape[others])
    if anisotropic_spacing and anisotropic_voxels:
        finer = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(finer, max(target[others]) + 1e-5)
    return target


def transpose_for(spacing: Sequence[float]) -> List[int]:
    """Coarsest axis first, the others in their order."""
    coarsest = int(np.argmax(spacing))
    return [coarsest] + [a for a in range(len(spacing)) if a != coarsest]


def normalization_for_channels(channel_names: Sequence[str], intensity: Dict[str, Dict[str, float]],
                               median_relative_size_after_cropping: float) -> List[Dict[str, Any]]:
    """One normalization entry per channel from its name (CT -> clip + global z-score; others per-image z-score)."""
    use_mask = median_relative_size_after_cropping < 0.75
    entries = []
    for c, name in enumerate(channel_names):
        key = name.casefold()
        if key == "ct":
            props = intensity[str(c)]
            entries.append({"scheme": "ct", "use_mask": False,
                            "params": {"lower": props["percentile_00_5"], "upper": props["percentile_99_5"],
                                       "mean": props["mean"], "std": props["std"]}})
        elif key in ("nonorm", "none"):
            entries.append({"scheme": "none", "use_mask": False, "params": {}})
        elif key in ("rescale_to_0_1", "rescale_0_1", "rgb_to_0_1"):
            entries.append({"scheme": "rescale_0_1", "use_mask": False, "params": {}})
        else:
            entries.append({"scheme": "zscore", "use_mask": use_mask, "params": {}})
    return entries


def _initial_patch(spacing: np.ndarray, median_shape: np.ndarray) -> List[int]:
    dim = len(spacing)
    inverse = 1.0 / spacing
    scale = (INITIAL_PATCH_EDGE[dim] ** dim / np.prod(inverse)) ** (1.0 / dim)
    patch = np.round(inverse * scale).astype(int)
    return [int(max(1, p)) for p in np.minimum(patch, median_shape)]


def plan_plain_unet(spacing: Sequence[float], median_shape: Sequence[float], num_outputs: int,
                    dataset_voxels: float, gpu_memory_gb: float) -> Dict[str, Any]:
    """Patch size, topology and batch size of a plain U-Net for one configuration under a memory budget."""
    spacing_arr = np.asarray(spacing, dtype=float)
    median = np.asarray(median_shape, dtype=float)
    dim = len(spacing_arr)
    reference = FEATURE_MAP_REFERENCE[dim] * gpu_memory_gb / REFERENCE_GPU_MEMORY_GB
    ref_bs = REFERENCE_BATCH_SIZE[dim]
    topology = pool_and_conv_topology(spacing_arr, _initial_patch(spacing_arr, median))

    def estimate(top: Any) -> int:
        return plain_unet_feature_map_voxels(top.patch_size, top, features_per_stage(top.n_stages, 32, MAX_FEATURES[dim]),
                                             num_outputs)

    voxels = estimate(topology)
    for _ in range(10000):
        if voxels / ref_bs * MIN_BATCH_SIZE <= reference:
            break
        patch = list(topology.patch_size)
        axis = int(np.argsort(np.asarray(patch) / median)[-1])
        trial = list(patch)
        trial[axis] -= topology.divisible_by[axis]
        step = pool_and_conv_topology(spacing_arr, trial).divisible_by[axis] if trial[axis] > 0 else topology.divisible_by[axis]
        if patch[axis] - step < 1:
            break
        patch[axis] -= step
        topology = pool_and_conv_topology(spacing_arr, patch)
        voxels = estimate(topology)
    patch = topology.patch_size
    batch_size = int(round(reference / voxels * ref_bs))
    dataset_cap = int(round(dataset_voxels * MAX_DATASET_FRACTION_PER_BATCH / np.prod(patch, dtype=np.float64)))
    batch_size = max(min(batch_size, dataset_cap), MIN_BATCH_SIZE)
    n_stages = topology.n_stages
    architecture = {"name": "plain_unet", "kwargs": {
        "n_stages": n_stages, "features_per_stage": features_per_stage(n_stages, 32, MAX_FEATURES[dim]),
        "kernel_sizes": topology.kernel_sizes, "strides": topology.strides,
        "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 2}}
    return {"spacing": [float(s) for s in spacing_arr], "patch_size": [int(p) for p in patch],
            "batch_size": batch_size, "median_image_size_in_voxels": [float(m) for m in median],
            "architecture": architecture, "estimated_feature_map_voxels": int(voxels)}


def _configuration(plans_name: str, name: str, planned: Dict[str, Any], normalization: List[Dict[str, Any]],
                   batch_dice: bool) -> Dict[str, Any]:
    config = {"data_identifier": f"{plans_name}_{name}"}
    config.update(planned)
    config.update({"normalization": copy.deepcopy(normalization), "resampling": dict(DEFAULT_RESAMPLING), "batch_dice": batch_dice})
    return config


def plan_default(fingerprint: Dict[str, Any], channel_names: Sequence[str], num_outputs: int, dataset_name: str,
                 gpu_memory_gb: float = REFERENCE_GPU_MEMORY_GB,
                 plans_name: str = DEFAULT_PLANS_NAME) -> Dict[str, Any]:
    """Plans (2d, 3d_fullres, and 3d_lowres when useful) for a dataset from its fingerprint."""
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    num_cases = len(spacings)
    fullres_spacing = fullres_target_spacing(spacings, shapes)
    transpose = transpose_for(fullres_spacing)
    backward = [int(a) for a in np.argsort(transpose)]
    resampled_shapes = np.round(shapes * spacings / fullres_spacing)
    median_shape_t = np.median(resampled_shapes, axis=0)[transpose]
    spacing_t = fullres_spacing[transpose]
    dataset_voxels = float(np.prod(median_shape_t, dtype=np.float64) * num_cases)
    normalization = normalization_for_channels(channel_names, fingerprint["foreground_intensity_properties_per_channel"],
                                               fingerprint["median_relative_size_after_cropping"])
    configs: Dict[str, Dict[str, Any]] = {}
    plan_2d = plan_plain_unet(spacing_t[1:], median_shape_t[1:], num_outputs, dataset_voxels, gpu_memory_gb)
    configs["2d"] = _configuration(plans_name, "2d", plan_2d, normalization, batch_dice=True)
    lowres: Optional[Dict[str, Any]] = None
    if median_shape_t[0] > 1:
        fullres = plan_plain_unet(spacing_t, median_shape_t, num_outputs, dataset_voxels, gpu_memory_gb)
        lowres = _plan_lowres(fullres, spacing_t, median_shape_t, num_outputs, dataset_voxels, gpu_memory_gb)
        configs["3d_fullres"] = _configuration(plans_name, "3d_fullres", fullres, normalization,
                                               batch_dice=lowres is not None)
        if lowres is not None:
            configs["3d_lowres"] = _configuration(plans_name, "3d_lowres", lowres, normalization, batch_dice=False)
    return {
        "format_version": 1, "plans_name": plans_name, "dataset_name": dataset_name, "preset": None,
        "planner": "default", "gpu_memory_gb": float(gpu_memory_gb), "reorient_to_ras": False,
        "transpose_forward": transpose, "transpose_backward": backward,
        "original_median_spacing_after_transp": [float(s) for s in np.median(spacings, axis=0)[transpose]],
        "original_median_shape_after_transp": [float(s) for s in np.median(shapes, axis=0)[transpose]],
        "foreground_intensity_properties_per_channel": fingerprint["foreground_intensity_properties_per_channel"],
        "configurations": configs,
    }


def _plan_lowres(fullres: Dict[str, Any], spacing_t: np.ndarray, median_shape_t: np.ndarray, num_outputs: int,
                 dataset_voxels: float, gpu_memory_gb: float) -> Optional[Dict[str, Any]]:
    """A coarser configuration when the fullres patch covers < 25 % of the median image (None otherwise)."""
    median_voxels = float(np.prod(median_shape_t, dtype=np.float64))
    if np.prod(fullres["patch_size"], dtype=np.float64) / median_voxels >= LOWRES_CREATION_THRESHOLD:
        return None
    lowres_spacing = np.array(spacing_t, dtype=float)
    lowres, lowres_voxels = None, median_voxels
    patch_voxels = float(np.prod(fullres["patch_size"], dtype=np.float64))
    while patch_voxels / lowres_voxels < LOWRES_CREATION_THRESHOLD:
        ratio = lowres_spacing.max() / lowres_spacing
        if np.any(ratio > 2):
            lowres_spacing[ratio > 2] *= LOWRES_SPACING_STEP
        else:
            lowres_spacing *= LOWRES_SPACING_STEP
        lowres_shape = np.round(spacing_t / lowres_spacing * median_shape_t)
        lowres_voxels = float(np.prod(spacing_t / lowres_spacing * median_shape_t))
        lowres = plan_plain_unet(lowres_spacing, lowres_shape, num_outputs, dataset_voxels, gpu_memory_gb)
        patch_voxels = float(np.prod(lowres["patch_size"], dtype=np.float64))
    if lowres is None or median_voxels / lowres_voxels < 2:
        return None
    return lowres

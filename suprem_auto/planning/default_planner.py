"""The default planner: nnU-Net's heuristics for 2d, 3d_fullres, 3d_lowres and 3d_cascade_fullres plain U-Net
configurations."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.planning.topology import (Topology, features_per_stage, plain_unet_feature_map_voxels,
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


def fit_patch_to_memory(spacing: np.ndarray, median_shape: np.ndarray,
                        fits: Callable[[Topology], bool]) -> Topology:
    """Topology of the largest patch that ``fits``: start at the initial patch (``_initial_patch``), then shrink the
    axis that is largest relative to the median shape by one divisibility step at a time (nnU-Net's rule)."""
    topology = pool_and_conv_topology(spacing, _initial_patch(spacing, median_shape))
    for _ in range(10000):
        if fits(topology):
            break
        patch = list(topology.patch_size)
        axis = int(np.argsort(np.asarray(patch) / median_shape)[-1])
        trial = list(patch)
        trial[axis] -= topology.divisible_by[axis]
        step = pool_and_conv_topology(spacing, trial).divisible_by[axis] if trial[axis] > 0 else topology.divisible_by[axis]
        if patch[axis] - step < 1:
            break
        patch[axis] -= step
        topology = pool_and_conv_topology(spacing, patch)
    return topology


def capped_batch_size(reference: float, voxels: float, ref_bs: int, dataset_voxels: float, patch: Sequence[int],
                      max_dataset_fraction: float, min_batch_size: int = MIN_BATCH_SIZE) -> int:
    """round(reference / voxels * ref_bs), capped so that one batch covers at most ``max_dataset_fraction`` of the
    dataset's voxels, and at least ``min_batch_size``."""
    batch_size = int(round(reference / voxels * ref_bs))
    dataset_cap = int(round(dataset_voxels * max_dataset_fraction / np.prod(patch, dtype=np.float64)))
    return max(min(batch_size, dataset_cap), min_batch_size)


def plan_plain_unet(spacing: Sequence[float], median_shape: Sequence[float], num_outputs: int,
                    dataset_voxels: float, gpu_memory_gb: float) -> Dict[str, Any]:
    """Patch size, topology and batch size of a plain U-Net for one configuration under a memory budget."""
    spacing_arr = np.asarray(spacing, dtype=float)
    median = np.asarray(median_shape, dtype=float)
    dim = len(spacing_arr)
    reference = FEATURE_MAP_REFERENCE[dim] * gpu_memory_gb / REFERENCE_GPU_MEMORY_GB
    ref_bs = REFERENCE_BATCH_SIZE[dim]

    def estimate(top: Topology) -> int:
        return plain_unet_feature_map_voxels(top.patch_size, top, features_per_stage(top.n_stages, 32, MAX_FEATURES[dim]),
                                             num_outputs)

    topology = fit_patch_to_memory(spacing_arr, median,
                                   lambda top: estimate(top) / ref_bs * MIN_BATCH_SIZE <= reference)
    voxels = estimate(topology)
    patch = topology.patch_size
    batch_size = capped_batch_size(reference, voxels, ref_bs, dataset_voxels, patch, MAX_DATASET_FRACTION_PER_BATCH)
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


@dataclass
class DatasetGeometry:
    """What every planner of the default family derives from the fingerprint (axes after transposition)."""

    spacings: np.ndarray
    shapes: np.ndarray
    transpose: List[int]
    backward: List[int]
    spacing_t: np.ndarray
    median_shape_t: np.ndarray
    dataset_voxels: float


def dataset_geometry(fingerprint: Dict[str, Any]) -> DatasetGeometry:
    """Fullres target spacing, transposition, median resampled shape and total voxels of a dataset."""
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    fullres_spacing = fullres_target_spacing(spacings, shapes)
    transpose = transpose_for(fullres_spacing)
    resampled_shapes = np.round(shapes * spacings / fullres_spacing)
    median_shape_t = np.median(resampled_shapes, axis=0)[transpose]
    return DatasetGeometry(spacings, shapes, transpose, [int(a) for a in np.argsort(transpose)],
                           fullres_spacing[transpose], median_shape_t,
                           float(np.prod(median_shape_t, dtype=np.float64) * len(spacings)))


PlanFunction = Callable[[Sequence[float], Sequence[float]], Dict[str, Any]]


def plan_configurations(plans_name: str, geometry: DatasetGeometry, plan: PlanFunction,
                        normalization: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """2d, 3d_fullres (more than one slice) and 3d_lowres (when useful), each planned by ``plan(spacing, median)``."""
    spacing_t, median_shape_t = geometry.spacing_t, geometry.median_shape_t
    configs: Dict[str, Dict[str, Any]] = {}
    configs["2d"] = _configuration(plans_name, "2d", plan(spacing_t[1:], median_shape_t[1:]), normalization,
                                   batch_dice=True)
    if median_shape_t[0] > 1:
        fullres = plan(spacing_t, median_shape_t)
        lowres = _plan_lowres(fullres, spacing_t, median_shape_t, plan)
        configs["3d_fullres"] = _configuration(plans_name, "3d_fullres", fullres, normalization,
                                               batch_dice=lowres is not None)
        if lowres is not None:
            configs["3d_lowres"] = _configuration(plans_name, "3d_lowres", lowres, normalization, batch_dice=False)
            configs["3d_lowres"]["next_stage"] = "3d_cascade_fullres"
            configs["3d_cascade_fullres"] = cascade_configuration(configs["3d_fullres"], "3d_fullres", "3d_lowres")
    return configs


def cascade_configuration(fullres: Dict[str, Any], fullres_name: str, previous_stage: str) -> Dict[str, Any]:
    """nnU-Net's ``3d_cascade_fullres``: the fullres block (same data_identifier: it trains on the fullres data) whose
    network also takes the ``previous_stage``'s segmentation as one-hot input channels."""
    config = copy.deepcopy(fullres)
    config.update({"inherits_from": fullres_name, "previous_stage": previous_stage})
    return config


def plans_document(plans_name: str, dataset_name: str, fingerprint: Dict[str, Any], geometry: DatasetGeometry,
                   configs: Dict[str, Dict[str, Any]], preset: Optional[str], planner: str,
                   gpu_memory_gb: float) -> Dict[str, Any]:
    """The plans dict around planned configurations (no reorientation; the default planner's transposition)."""
    transpose = geometry.transpose
    return {
        "format_version": 1, "plans_name": plans_name, "dataset_name": dataset_name, "preset": preset,
        "planner": planner, "gpu_memory_gb": float(gpu_memory_gb), "reorient_to_ras": False,
        "transpose_forward": transpose, "transpose_backward": geometry.backward,
        "original_median_spacing_after_transp": [float(s) for s in np.median(geometry.spacings, axis=0)[transpose]],
        "original_median_shape_after_transp": [float(s) for s in np.median(geometry.shapes, axis=0)[transpose]],
        "foreground_intensity_properties_per_channel": fingerprint["foreground_intensity_properties_per_channel"],
        "configurations": configs,
    }


def plan_default(fingerprint: Dict[str, Any], channel_names: Sequence[str], num_outputs: int, dataset_name: str,
                 gpu_memory_gb: float = REFERENCE_GPU_MEMORY_GB,
                 plans_name: str = DEFAULT_PLANS_NAME) -> Dict[str, Any]:
    """Plans (2d, 3d_fullres, and 3d_lowres when useful) for a dataset from its fingerprint."""
    geometry = dataset_geometry(fingerprint)
    normalization = normalization_for_channels(channel_names, fingerprint["foreground_intensity_properties_per_channel"],
                                               fingerprint["median_relative_size_after_cropping"])

    def plan(spacing: Sequence[float], median_shape: Sequence[float]) -> Dict[str, Any]:
        return plan_plain_unet(spacing, median_shape, num_outputs, geometry.dataset_voxels, gpu_memory_gb)

    configs = plan_configurations(plans_name, geometry, plan, normalization)
    return plans_document(plans_name, dataset_name, fingerprint, geometry, configs, None, "default", gpu_memory_gb)


def _plan_lowres(fullres: Dict[str, Any], spacing_t: np.ndarray, median_shape_t: np.ndarray,
                 plan: PlanFunction) -> Optional[Dict[str, Any]]:
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
        lowres = plan(lowres_spacing, lowres_shape)
        patch_voxels = float(np.prod(lowres["patch_size"], dtype=np.float64))
    if lowres is None or median_voxels / lowres_voxels < 2:
        return None
    return lowres

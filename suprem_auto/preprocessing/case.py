"""Preprocessing of one case and its inverse for predicted probabilities.

Forward (``preprocess_case``): transpose -> crop to nonzero -> normalize -> resample to the configuration's spacing.
Inverse (``revert_probabilities``): resample back to the cropped shape -> paste into the uncropped grid -> transpose
back, channel by channel so only one full-resolution output array is ever allocated.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from suprem_auto.imageio.cropping import bbox_slices, crop_to_nonzero
from suprem_auto.planning.view import ConfigurationPlan, plans_view
from suprem_auto.preprocessing.normalization import normalize
from suprem_auto.preprocessing.resampling import (compute_new_shape, resample_data, resample_segmentation,
                                                  resample_volume, separate_z_axis)

MAX_LOCATIONS_PER_CLASS = 10000
MIN_LOCATION_FRACTION = 0.01
LOCATION_SEED = 1234


def _configuration(plans: Dict[str, Any], configuration: str) -> ConfigurationPlan:
    """The typed plan of ``configuration`` (an unknown one raises ``PlansError`` listing the known ones)."""
    return plans_view(plans).configuration(configuration)


def target_spacing_for(config: ConfigurationPlan, spacing_transposed: Sequence[float]) -> List[float]:
    """3D target spacing of a configuration (2D configurations keep the through-plane spacing)."""
    spacing = [float(s) for s in config.spacing]
    if len(spacing) == 2:
        return [float(spacing_transposed[0])] + spacing
    return spacing


def _seg_dtype(seg: np.ndarray) -> np.dtype:
    return np.dtype(np.int8) if seg.size == 0 or int(seg.max()) <= 127 else np.dtype(np.int16)


def preprocess_case(images: np.ndarray, seg: Optional[np.ndarray], props: Dict[str, Any], plans: Dict[str, Any],
                    configuration: str) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, Any]]:
    """Preprocess one case read by ``imageio.read_images`` (float32 (c, z, y, x)) and its optional (1, z, y, x) seg.

    Returns float32 data, the int8/int16 seg (-1 outside the nonzero mask; None when ``seg`` is None) and ``props``
    extended with what :func:`revert_probabilities` needs.
    """
    config = _configuration(plans, configuration)
    resampling = config.resampling
    transpose = [int(a) for a in plans["transpose_forward"]]
    props = dict(props)
    images = np.asarray(images, dtype=np.float32).transpose([0] + [a + 1 for a in transpose])
    if seg is not None:
        seg = np.asarray(seg).transpose([0] + [a + 1 for a in transpose])
    spacing = [float(props["spacing"][a]) for a in transpose]
    props["shape_before_cropping"] = list(images.shape[1:])
    images, seg_cropped, bbox = crop_to_nonzero(images, seg)
    props["bbox_used_for_cropping"] = bbox
    props["shape_after_cropping_and_before_resampling"] = list(images.shape[1:])
    data = normalize(images, seg_cropped, [{"scheme": n.scheme, "use_mask": n.use_mask, "params": n.params}
                                           for n in config.normalization])
    del images
    target = target_spacing_for(config, spacing)
    new_shape = compute_new_shape(data.shape[1:], spacing, target)
    threshold = float(resampling.get("anisotropy_threshold", 3.0))
    force = resampling.get("force_separate_z")
    z_data = separate_z_axis(spacing, target, threshold, force)
    data = resample_data(data, new_shape, int(resampling["data_order"]), z_data, int(resampling.get("order_z", 0)))
    seg_out = None
    if seg is not None:
        seg_res = resample_segmentation(seg_cropped[0], new_shape, z_data, int(resampling.get("seg_order", 1)),
                                        int(resampling.get("order_z", 0)))
        seg_out = seg_res[None].astype(_seg_dtype(seg_res), copy=False)
    props.update({"spacing_transposed": spacing, "target_spacing": target, "shape_after_resampling": list(new_shape),
                  "transpose_forward": transpose, "configuration": configuration,
                  "plans_name": plans.get("plans_name")})
    return np.ascontiguousarray(data), seg_out, props


def preprocess_files(image_paths: Sequence[Any], plans: Dict[str, Any], configuration: str,
                     label_path: Optional[Any] = None) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, Any]]:
    """Read a case's channel files (and label) and preprocess it."""
    from suprem_auto.imageio import read_images, read_segmentation

    reorient = bool(plans.get("reorient_to_ras", False))
    images, props = read_images(list(image_paths), reorient_to_ras=reorient)
    seg = None
    if label_path is not None:
        seg, _ = read_segmentation(label_path, reorient_to_ras=reorient)
    return preprocess_case(images, seg, props, plans, configuration)


def _channel_as_numpy(probabilities: Any, c: int) -> np.ndarray:
    channel = probabilities[c]
    if hasattr(channel, "detach"):  # torch tensor; avoids importing torch here
        channel = channel.detach().float().cpu().numpy()
    return np.asarray(channel, dtype=np.float32)


def revert_probabilities(probabilities: Union[np.ndarray, Any], props: Dict[str, Any], plans: Dict[str, Any],
                         configuration: str, regions: bool = False) -> np.ndarray:
    """Map (C, z', y', x') probabilities in preprocessed space back to the (C, z, y, x) space of ``read_images``.

    Outside the crop, channel 0 (background) gets probability 1 and all others 0 (all 0 with ``regions``).
    Works channel by channel: peak memory is the output plus a few single-channel volumes.
    """
    resampling = _configuration(plans, configuration).resampling
    transpose = [int(a) for a in props["transpose_forward"]]
    num_channels = int(probabilities.shape[0])
    cropped_shape = [int(s) for s in props["shape_after_cropping_and_before_resampling"]]
    full_shape_t = [int(s) for s in props["shape_before_cropping"]]
    backward = np.argsort(transpose)
    full_shape = [full_shape_t[a] for a in backward]
    out = np.zeros((num_channels, *full_shape), dtype=np.float32)
    out_t = out.transpose([0] + [a + 1 for a in transpose])
    z_axis = separate_z_axis(props["target_spacing"], props["spacing_transposed"],
                             float(resampling.get("anisotropy_threshold", 3.0)), resampling.get("force_separate_z"))
    order = int(resampling.get("probabilities_order", 1))
    box = bbox_slices(props["bbox_used_for_cropping"])
    for c in range(num_channels):
        resized = resample_volume(_channel_as_numpy(probabilities, c), cropped_shape, order, z_axis,
                                  int(resampling.get("order_z", 0)))
        if c == 0 and not regions:
            out_t[c][...] = 1.0
        out_t[c][box] = resized
        del resized
    return out


def probabilities_to_segmentation(probabilities: np.ndarray, label_spec: Any) -> np.ndarray:
    """(C, z, y, x) probabilities to a (z, y, x) label map: argmax over labels, or regions thresholded at 0.5."""
    probabilities = np.asarray(probabilities)
    if label_spec.has_regions:
        seg = np.zeros(probabilities.shape[1:], dtype=np.int16)
        for channel, value in enumerate(label_spec.regions_class_order):
            seg[probabilities[channel] > 0.5] = value
        return seg
    values = np.asarray([v for v in sorted(label_spec.names) if v != label_spec.ignore_label], dtype=np.int16)
    if len(values) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability channels for {len(values)} labels")
    return values[np.argmax(probabilities, axis=0)]


def location_keys(label_spec: Any) -> List[Tuple[str, Tuple[int, ...]]]:
    """Keys of the class-location file with the label values each covers ("1", or "1,2,3" for a region)."""
    if label_spec.has_regions:
        return [(",".join(str(v) for v in region), tuple(region)) for region in label_spec.regions]
    return [(str(v), (v,)) for v in label_spec.foreground_labels]


def sample_foreground_locations(seg: np.ndarray, label_spec: Any, seed: int = LOCATION_SEED) -> Dict[str, np.ndarray]:
    """Foreground voxel coordinates (n, 4) = (c, z, y, x) per label or region: min(10000, n), at least ceil(1 % n)."""
    rng = np.random.RandomState(seed)
    locations: Dict[str, np.ndarray] = {}
    for key, values in location_keys(label_spec):
        mask = np.isin(seg, values) if len(values) > 1 else seg == values[0]
        coords = np.argwhere(mask)
        n = len(coords)
        if n == 0:
            locations[key] = np.zeros((0, 4), dtype=np.int64)
            continue
        take = max(min(MAX_LOCATIONS_PER_CLASS, n), int(math.ceil(MIN_LOCATION_FRACTION * n)))
        chosen = rng.choice(n, take, replace=False) if take < n else np.arange(n)
        locations[key] = coords[np.sort(chosen)].astype(np.int64)
    return locations

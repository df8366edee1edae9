"""SuPreM direct inference on one CT: the release's preprocessing, sliding window, activation and post-processing.

Release recipe (SuPreM ``direct_inference``): RAS orientation, 1.5 mm isotropic spacing (linear), HU window
[-175, 250] scaled to [0, 1] with clipping, crop to the voxels above the window's floor, 96^3 sliding window with
overlap 0.75 and Gaussian weighting, one sigmoid per class (inside the head, applied once), threshold 0.5, and the
largest connected component (26-connected) of the nine organs the release post-processes. Probabilities are mapped
back to the input grid (linear) before thresholding, so masks are written in the input's exact geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from suprem_auto.segment.head import OrganModel

WINDOW_HU = (-175.0, 250.0)
SPACING_MM = 1.5
FAST_SPACING_MM = 3.0  # --fast: like TotalSegmentator's --fast, a coarser grid (8x fewer voxels)
PATCH = (96, 96, 96)
STEP = 0.25  # the release's overlap 0.75
FAST_STEP = 0.5
THRESHOLD = 0.5
PATCH_DIVISOR = {"suprem_unet": 8, "swin_unetr": 32}
_CONFIG = "direct_inference"


@dataclass
class SegmentOptions:
    """How to run: ``fast`` = 3 mm grid and overlap 0.5; ``patch_size`` and ``step`` override the release's."""

    roi_subset: Optional[Sequence[str]] = None
    fast: bool = False
    patch_size: Optional[Sequence[int]] = None
    step: Optional[float] = None
    postprocess: bool = True
    device: str = "auto"
    progress: bool = False


@dataclass
class Segmentation:
    """Masks in ``read_images`` array space (RAS-reoriented), with the image and geometry they belong to."""

    masks: Dict[str, np.ndarray]          # structure name -> bool (z, y, x)
    values: Dict[str, int]                 # structure name -> label value (1-based channel of the release head)
    image: np.ndarray                      # HU (z, y, x)
    props: Dict[str, Any]


def postprocess_targets() -> List[str]:
    """The organs whose largest connected component the release keeps (data in ``label_maps.json``)."""
    from suprem_auto.pretrained.label_maps import DEFAULT_LABEL_MAPS
    from suprem_auto.utils.atomic import load_json

    return list(load_json(DEFAULT_LABEL_MAPS).get("direct_inference_postprocess_targets", []))


def check_subset(roi_subset: Optional[Sequence[str]], class_names: Sequence[str]) -> List[str]:
    """The requested structures in head order (all when None); ValueError naming unknown ones and the known."""
    if not roi_subset:
        return list(class_names)
    unknown = [n for n in roi_subset if n not in class_names]
    if unknown:
        raise ValueError(f"--roi_subset: unknown structure(s) {', '.join(unknown)} (this head has: "
                         f"{', '.join(class_names)})")
    return [n for n in class_names if n in set(roi_subset)]


def direct_inference_plans(spacing: float, patch: Sequence[int], backbone: str) -> Dict[str, Any]:
    """A plan (valid plans, as every reader checks them) that makes our preprocessing do the release's: no
    transposition, the windowed image is cropped to its nonzero box (HU > -175), resampled linearly to ``spacing``,
    and not normalised again."""
    from suprem_auto.planning.schema import PLANS_FORMAT_VERSION

    return {"format_version": PLANS_FORMAT_VERSION, "plans_name": "suprem_direct_inference",
            "dataset_name": "direct_inference", "preset": None, "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "reorient_to_ras": True,
            "foreground_intensity_properties_per_channel": {"0": {}},
            "configurations": {_CONFIG: {
                "data_identifier": _CONFIG, "batch_size": 1, "architecture": {"name": backbone, "kwargs": {}},
                "spacing": [spacing] * 3, "patch_size": list(patch),
                "normalization": [{"scheme": "none", "use_mask": False, "params": {}}],
                "resampling": {"data_order": 1, "seg_order": 1, "probabilities_order": 1, "order_z": 0,
                               "force_separate_z": False, "anisotropy_threshold": 3.0}}}}


def window(image_hu: np.ndarray) -> np.ndarray:
    """HU window [-175, 250] scaled to [0, 1] with clipping (the release's ScaleIntensityRanged)."""
    lo, hi = WINDOW_HU
    return np.clip((image_hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (the mask itself when empty)."""
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def _patch(model: OrganModel, options: SegmentOptions) -> Tuple[int, ...]:
    patch = tuple(int(p) for p in (options.patch_size or PATCH))
    divisor = PATCH_DIVISOR[model.backbone]
    if len(patch) != 3 or any(p <= 0 or p % divisor for p in patch):
        raise ValueError(f"--patch_size {list(patch)}: needs 3 sizes divisible by {divisor} for {model.backbone}")
    return patch


def segment_ct(ct_path: Path, model: OrganModel, options: SegmentOptions) -> Segmentation:
    """Run the release recipe on one CT file (or DICOM series folder) and return the requested masks."""
    from suprem_auto.imageio import read_images
    from suprem_auto.inference.sliding_window import predict_sliding_window, resolve_device
    from suprem_auto.preprocessing import preprocess_case, revert_probabilities

    names = check_subset(options.roi_subset, model.class_names)
    patch = _patch(model, options)
    images, props = read_images([ct_path], reorient_to_ras=True)
    if images.shape[0] != 1:
        raise ValueError(f"{ct_path}: expected one CT channel, found {images.shape[0]}")
    plans = direct_inference_plans(FAST_SPACING_MM if options.fast else SPACING_MM, patch, model.backbone)
    data, _, pprops = preprocess_case(window(images), None, props, plans, _CONFIG)
    device = resolve_device(options.device)
    network = model.network.to(device).eval()
    step = options.step if options.step is not None else (FAST_STEP if options.fast else STEP)
    # tile batch 1: the SuPreM U-Net normalises with batch statistics, so tiles must go one by one, as released
    probabilities = predict_sliding_window(network, torch.from_numpy(data), patch, len(model.class_names), step=step,
                                           mirror_axes=None, tile_batch_size=1, device=device,
                                           progress=options.progress, precision="fp32")
    keep = [model.class_names.index(n) for n in names]
    reverted = revert_probabilities(probabilities[keep], pprops, plans, _CONFIG, regions=True)
    targets = set(postprocess_targets()) if options.postprocess else set()
    masks = {}
    for name, channel in zip(names, reverted):
        mask = channel > THRESHOLD
        masks[name] = largest_component(mask) if name in targets else mask
    values = {name: model.class_names.index(name) + 1 for name in names}
    return Segmentation(masks, values, images[0], props)


def label_map(segmentation: Segmentation) -> np.ndarray:
    """One (z, y, x) label map; where structures overlap the higher label value wins (as the release's
    combined_labels)."""
    out = np.zeros(segmentation.image.shape, dtype=np.uint8 if max(segmentation.values.values(), default=0) < 256
                   else np.uint16)
    for name in sorted(segmentation.masks, key=lambda n: segmentation.values[n]):
        out[segmentation.masks[name]] = segmentation.values[name]
    return out

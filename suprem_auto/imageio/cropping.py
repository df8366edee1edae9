"""Crop a case to the bounding box of its nonzero voxels (any channel), as nnU-Net does. Lives below fingerprinting
(which measures shapes after the crop) and preprocessing (which crops)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from scipy.ndimage import binary_fill_holes

BBox = List[List[int]]  # per axis [start, stop)


def nonzero_mask(images: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x) mask of voxels where any channel is nonzero, holes filled."""
    mask = np.any(images != 0, axis=0)
    return binary_fill_holes(mask)


def bbox_of_mask(mask: np.ndarray) -> BBox:
    """Per-axis [start, stop) of the mask's True voxels (the whole array when the mask is empty)."""
    bbox: BBox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return [[0, s] for s in mask.shape]
        bbox.append([int(hits[0]), int(hits[-1]) + 1])
    return bbox


def bbox_slices(bbox: BBox) -> Tuple[slice, ...]:
    """Slices selecting a bounding box."""
    return tuple(slice(lo, hi) for lo, hi in bbox)


def crop_to_nonzero(images: np.ndarray, seg: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, BBox]:
    """Crop images (c, z, y, x) and seg (1, z, y, x) to the nonzero bounding box.

    Returns the cropped images, a cropped int16 seg where background voxels outside the nonzero mask are -1
    (a seg of 0/-1 is made when ``seg`` is None), and the bounding box.
    """
    mask = nonzero_mask(images)
    bbox = bbox_of_mask(mask)
    box = bbox_slices(bbox)
    images = images[(slice(None),) + box]
    mask = mask[box]
    if seg is None:
        seg_out = np.where(mask, 0, -1).astype(np.int16)[None]
    else:
        seg_out = seg[(slice(None),) + box].astype(np.int16)
        seg_out[(seg_out == 0) & ~mask[None]] = -1
    return images, seg_out, bbox

"""Per-structure statistics of a segmentation: volume in mL and mean image intensity inside the mask."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL (spacing in mm)."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def structure_statistics(masks: Mapping[str, np.ndarray], image: np.ndarray,
                         spacing: Sequence[float]) -> Dict[str, Dict[str, Any]]:
    """``{name: {"voxels", "volume_ml", "mean_intensity"}}``; volume = voxel count x voxel volume, the mean is over
    the image's voxels inside the mask (None for an empty mask)."""
    unit = voxel_volume_ml(spacing)
    out: Dict[str, Dict[str, Any]] = {}
    for name, mask in masks.items():
        count = int(np.count_nonzero(mask))
        out[name] = {"voxels": count, "volume_ml": round(count * unit, 4),
                     "mean_intensity": round(float(image[mask].mean()), 2) if count else None}
    return out

"""Axis bookkeeping for reorientation to RAS (SimpleITK's DICOMOrient) without reading voxels."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np


def ras_axis_permutation(direction: Sequence[float]) -> List[int]:
    """Permutation p such that ``array.transpose(p)`` has the axis order of the RAS-reoriented (z, y, x) array.

    ``direction`` is SimpleITK's row-major 3x3 direction. Flips do not change shapes or spacings, so only the
    axis order matters for planning. Oblique directions fall back to the nearest axis.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    physical_of_itk_axis = np.argmax(np.abs(matrix), axis=0)  # itk axis j points along physical axis phys[j]
    if sorted(physical_of_itk_axis.tolist()) != [0, 1, 2]:
        return [0, 1, 2]
    itk_axis_of_physical = np.argsort(physical_of_itk_axis)
    # numpy axis a <-> itk axis 2 - a, before and after reorientation
    return [int(2 - itk_axis_of_physical[2 - a]) for a in range(3)]

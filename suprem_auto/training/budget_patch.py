"""The 2D patch of a budgeted run: a smaller in-plane crop buys more iterations in the same minutes.

nnU-Net plans a 2D patch that covers the whole median slice (ACDC: 256x224), made for 1,000 epochs on a GPU. On a CPU
the step time of the narrow short-budget network grows with the patch's pixels (ACDC, 2 cores, batch 2: 0.21 s per
step at 256x224, 0.09 s at 160x160), and foreground oversampling keeps the structures in the smaller crop. Measured
(benchmarks/RESULTS.md, "A smaller 2D patch under a budget"): ACDC 2d, 10 minutes, 0.779 -> 0.841 held-out Dice with
160x160, 0.45 of the planned area. The rule: scale each in-plane axis by ``sqrt(area_factor)``, round to the nearest
multiple of the network's total stride on that axis, never below ``min_edge`` (nor above the planned size), so that
small slices (hippocampus 56x40), whose step is dominated by fixed costs, keep their patch.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, List


def total_strides(architecture: Optional[Mapping[str, Any]], dims: int) -> Optional[List[int]]:
    """The product of the architecture's per-stage strides on each axis (what every patch axis must divide by);
    None when the architecture does not list strides."""
    strides = ((architecture or {}).get("kwargs") or {}).get("strides")
    if not strides:
        return None
    total = [1] * dims
    for stage in strides:
        per_axis = [int(stage)] * dims if isinstance(stage, (int, float)) else [int(s) for s in stage]
        if len(per_axis) != dims:
            return None
        total = [t * s for t, s in zip(total, per_axis)]
    return total


def budget_patch_2d(planned: Sequence[int], strides: Sequence[int], area_factor: float,
                    min_edge: int) -> Optional[List[int]]:
    """The smaller 2D patch for a budgeted run, or None when it would not change the planned one (or the
    patch is not 2D)."""
    if len(planned) != 2 or len(strides) != 2 or not 0 < area_factor <= 1:
        return None
    scale = math.sqrt(area_factor)
    patch = []
    for size, stride in zip(planned, strides):
        size, stride = int(size), max(1, int(stride))
        floor = min(size, max(stride, math.ceil(min_edge / stride) * stride))
        shrunk = max(stride, round(size * scale / stride) * stride)
        patch.append(min(size, max(floor, shrunk)))
    return None if patch == [int(p) for p in planned] else patch

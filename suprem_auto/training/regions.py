"""Region-based targets: an integer label map to one binary channel per region (nnU-Net's ``regions``).

A region is a tuple of label values (dataset.json ``"whole tumour": [1, 2, 3]``); a voxel belongs to it when its
label is one of those values. Regions may overlap. The ignore label belongs to no region and is returned as a
mask of the voxels that count (losses and metrics skip the others); -1 (padding outside the image) is background.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

Regions = Sequence[Sequence[int]]


def region_targets(target: torch.Tensor, regions: Regions,
                   ignore_label: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(regions (b, R, ...) bool, valid (b, 1, ...) bool or None)`` for an integer label map ``target``
    (b, 1, ...). ``valid`` is None without an ignore label; with one, ignored voxels are False there and belong to
    no region."""
    if target.ndim < 3 or target.shape[1] != 1:
        raise ValueError(f"region targets need a label map (b, 1, ...), got shape {tuple(target.shape)}")
    if not regions:
        raise ValueError("region targets need at least one region")
    labels = target.long()
    channels = []
    for region in regions:
        values = torch.as_tensor([int(v) for v in region], dtype=labels.dtype, device=labels.device)
        channels.append(torch.isin(labels[:, 0], values))
    out = torch.stack(channels, dim=1)
    if ignore_label is None:
        return out, None
    valid = labels != int(ignore_label)
    return out & valid, valid

"""Online pseudo-Dice: true/false positives and false negatives per foreground class from argmax predictions, or
per region from sigmoid outputs."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from suprem_auto.training.regions import region_targets


def tp_fp_fn(logits: torch.Tensor, target: torch.Tensor,
             ignore_label: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts per foreground class (channel 1..C-1), float64 on the CPU, for logits (b, C, ...) and an integer
    target (b, 1, ...)."""
    num_classes = logits.shape[1]
    pred = logits.argmax(1)
    tgt = target[:, 0].long()
    valid = torch.ones_like(tgt, dtype=torch.bool) if ignore_label is None else tgt != ignore_label
    counts = []
    for c in range(1, num_classes):
        p, t = (pred == c) & valid, (tgt == c) & valid
        counts.append(torch.stack([(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]))
    stacked = torch.stack(counts).cpu().double() if counts else torch.zeros((0, 3), dtype=torch.float64)
    return stacked[:, 0], stacked[:, 1], stacked[:, 2]


def region_tp_fp_fn(logits: torch.Tensor, target: torch.Tensor, regions: Sequence[Sequence[int]],
                    ignore_label: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts per region, float64 on the CPU, for sigmoid logits (b, R, ...) (a voxel is predicted in a region
    where its sigmoid > 0.5, i.e. logit > 0) and an integer target (b, 1, ...); ignored voxels count nowhere."""
    tgt, valid = region_targets(target, regions, ignore_label)
    pred = logits > 0
    if valid is not None:
        pred = pred & valid
    spatial = (0,) + tuple(range(2, logits.ndim))
    counts = torch.stack([(pred & tgt).sum(spatial), (pred & ~tgt).sum(spatial), (~pred & tgt).sum(spatial)])
    counts = counts.cpu().double()
    return counts[0], counts[1], counts[2]


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> List[float]:
    """``2TP / (2TP + FP + FN)`` per class; NaN where the class is absent from both prediction and target."""
    denom = 2 * tp + fp + fn
    return [float("nan") if d == 0 else float(2 * t / d) for t, d in zip(tp.tolist(), denom.tolist())]

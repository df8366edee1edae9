"""Soft Dice + binary cross-entropy per region on sigmoid outputs (nnU-Net's ``DC_and_BCE_loss`` idea).

The target stays an integer label map (b, 1, ...) until here, so :class:`~suprem_auto.training.loss.
DeepSupervisionLoss` downsamples it exactly as for the softmax path (nearest) and this loss turns each resolution
into region channels (:func:`suprem_auto.training.regions.region_targets`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from suprem_auto.training.loss import soft_dice
from suprem_auto.training.regions import Regions, region_targets


class DiceBCELoss(nn.Module):
    """``bce_weight * BCE-with-logits - dice_weight * mean soft Dice`` over all regions (every channel is
    foreground, nnU-Net's ``do_bg=True``). Voxels holding ``ignore_label`` count in neither term; ``batch_dice``
    pools the Dice statistics over the batch instead of per sample (smooth 1e-5, as :class:`DiceCELoss`)."""

    def __init__(self, regions: Regions, batch_dice: bool = False, dice_weight: float = 1.0,
                 bce_weight: float = 1.0, ignore_label: Optional[int] = None, smooth: float = 1e-5) -> None:
        super().__init__()
        self.regions = [tuple(int(v) for v in r) for r in regions]
        self.batch_dice = batch_dice
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.ignore_label = ignore_label
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"{logits.shape[1]} output channels for {len(self.regions)} regions")
        regions, valid = region_targets(target, self.regions, self.ignore_label)
        logits = logits.float()
        onehot = regions.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        mask = valid.to(logits.dtype) if valid is not None else None
        if mask is None:
            bce = bce.mean()
        else:
            bce = (bce * mask).sum() / (mask.sum() * logits.shape[1]).clamp_min(1)
        dice = soft_dice(torch.sigmoid(logits), onehot, mask, self.batch_dice, self.smooth)
        return self.bce_weight * bce - self.dice_weight * dice.mean()

"""Dice + cross-entropy loss with an optional ignore label, and the deep-supervision wrapper."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


def deep_supervision_weights(num_outputs: int, lowest: float = 0.0) -> List[float]:
    """nnU-Net's weights: 1/2^i for output i (highest resolution first), ``lowest`` (0; 1e-6 under DDP so every
    parameter gets a gradient) for the lowest-resolution output, normalised to sum 1."""
    weights = [1.0 / (2 ** i) for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = lowest
    total = sum(weights)
    return [w / total for w in weights]


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, mask: Optional[torch.Tensor], batch_dice: bool,
              smooth: float) -> torch.Tensor:
    """Soft Dice per (sample,) channel of probabilities against one-hot targets (b, c, ...); ``mask`` (b, 1, ...)
    keeps only its voxels; ``batch_dice`` pools the statistics over the batch (one value per channel)."""
    if mask is not None:
        probs = probs * mask
        onehot = onehot * mask
    spatial = tuple(range(2, probs.ndim))
    axes = (0,) + spatial if batch_dice else spatial
    intersect = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    return (2 * intersect + smooth) / (denom + smooth).clamp_min(1e-8)


class DiceCELoss(nn.Module):
    """Soft Dice (foreground classes, smooth 1e-5) + cross-entropy on softmax logits.

    ``target`` is an integer map (b, 1, z, y, x). Voxels equal to ``ignore_label`` count in neither term.
    ``batch_dice`` pools the Dice statistics over the batch instead of per sample.
    """

    def __init__(self, batch_dice: bool = False, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ignore_label: Optional[int] = None, smooth: float = 1e-5) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.ignore_label = ignore_label
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target[:, 0].long()
        if self.ignore_label is not None:
            valid = (target != self.ignore_label)
            target = torch.where(valid, target, torch.zeros_like(target))
        else:
            valid = None
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        if valid is None:
            ce = ce.mean()
        else:
            ce = (ce * valid).sum() / valid.sum().clamp_min(1)
        probs = torch.softmax(logits.float(), dim=1)
        onehot = F.one_hot(target, num_classes=logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        mask = valid[:, None].to(probs.dtype) if valid is not None else None
        dice = soft_dice(probs, onehot, mask, self.batch_dice, self.smooth)[..., 1:]  # no background
        return self.ce_weight * ce - self.dice_weight * dice.mean()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over a list of outputs; targets are downsampled (nearest) to each output's size."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = list(weights)

    def forward(self, outputs: Union[torch.Tensor, Sequence[torch.Tensor]], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for weight, out in zip(self.weights, outputs):
            if weight == 0:
                continue
            total = total + weight * self.loss(out, downsample_target(target, out.shape[2:]))
        return total


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer target map (b, 1, *spatial) to ``size``."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest").to(target.dtype)

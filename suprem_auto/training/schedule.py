"""Learning-rate schedules as pure functions of the epoch (so resuming reproduces them exactly)."""
from __future__ import annotations

import math


def poly_lr(base_lr: float, epoch: int, num_epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay: ``base_lr * (1 - epoch / num_epochs) ** exponent``."""
    return base_lr * (1 - min(epoch, num_epochs) / num_epochs) ** exponent


def warmup_cosine_lr(base_lr: float, epoch: int, num_epochs: int, warmup_epochs: int) -> float:
    """Linear warm-up from ``base_lr / (warmup+1)`` to ``base_lr`` over ``warmup_epochs``, then cosine to 0."""
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    span = max(1, num_epochs - warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def lr_for_epoch(schedule: str, base_lr: float, epoch: int, num_epochs: int, poly_exponent: float = 0.9,
                 warmup_epochs: int = 0) -> float:
    """Dispatch on the schedule name ("poly" or "warmup_cosine")."""
    if schedule == "poly":
        return poly_lr(base_lr, epoch, num_epochs, poly_exponent)
    if schedule == "warmup_cosine":
        return warmup_cosine_lr(base_lr, epoch, num_epochs, warmup_epochs)
    raise ValueError(f"unknown lr schedule '{schedule}' (known: poly, warmup_cosine)")

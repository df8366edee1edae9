"""Learning-rate curves as pure functions: of the epoch (nnU-Net style, so resuming reproduces them exactly) and of
the run's progress, a share in [0, 1] of planned iterations or of the training time (budgeted runs)."""
from __future__ import annotations

import math

SCHEDULES = ("poly", "warmup_cosine", "warmup_poly")


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


def warmup_poly_lr(base_lr: float, epoch: int, num_epochs: int, warmup_epochs: int, exponent: float = 0.9) -> float:
    """Linear warm-up as :func:`warmup_cosine_lr`, then nnU-Net's polynomial decay over the remaining epochs (the
    shape of nnU-Net's pre-trained-weights trainer: 50 warm-up epochs of 1000, then poly)."""
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    return poly_lr(base_lr, epoch - warmup_epochs, max(1, num_epochs - warmup_epochs), exponent)


def lr_for_epoch(schedule: str, base_lr: float, epoch: int, num_epochs: int, poly_exponent: float = 0.9,
                 warmup_epochs: int = 0) -> float:
    """Dispatch on the schedule name ("poly", "warmup_cosine" or "warmup_poly")."""
    if schedule == "poly":
        return poly_lr(base_lr, epoch, num_epochs, poly_exponent)
    if schedule == "warmup_cosine":
        return warmup_cosine_lr(base_lr, epoch, num_epochs, warmup_epochs)
    if schedule == "warmup_poly":
        return warmup_poly_lr(base_lr, epoch, num_epochs, warmup_epochs, poly_exponent)
    raise ValueError(f"unknown lr schedule '{schedule}' (known: {', '.join(SCHEDULES)})")


def lr_at_progress(schedule: str, base_lr: float, progress: float, warmup_fraction: float = 0.0,
                   poly_exponent: float = 0.9, first_step: float = 0.0) -> float:
    """Learning rate at ``progress`` (clipped to [0, 1]) of a run.

    ``warmup_cosine``: linear warm-up over ``warmup_fraction`` from ``base_lr * first_step / (warmup_fraction +
    first_step)`` (``first_step``: the progress one step makes; with iterations ``1 / N`` this is the per-iteration
    ``base_lr * (i + 1) / (W + 1)``), then a cosine that reaches 0 at progress 1. ``warmup_poly``: the same warm-up,
    then ``(1 - rest) ** poly_exponent`` over the rest of the run. ``poly``: ``(1 - progress) ** poly_exponent``
    (no warm-up).
    """
    p = min(1.0, max(0.0, float(progress)))
    if schedule == "poly":
        return base_lr * (1.0 - p) ** poly_exponent
    if schedule not in ("warmup_cosine", "warmup_poly"):
        raise ValueError(f"unknown lr schedule '{schedule}' (known: {', '.join(SCHEDULES)})")
    if p < warmup_fraction:
        return base_lr * (p + first_step) / (warmup_fraction + first_step)
    rest = min(1.0, (p - warmup_fraction) / max(1e-12, 1.0 - warmup_fraction))
    if schedule == "warmup_poly":
        return base_lr * (1.0 - rest) ** poly_exponent
    return base_lr * 0.5 * (1 + math.cos(math.pi * rest))

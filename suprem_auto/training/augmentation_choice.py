"""Whether a budgeted run augments its data, from how often the budget lets it see each training sample.

nnU-Net's augmentation (rotation, scaling, intensity, simulated low resolution) is made for 1,000 epochs. A short
budget shows each training sample only a few times, and augmented samples are harder to fit: measured
(benchmarks/RESULTS.md, "Where the short ACDC runs lose Dice"), switching it off gained +0.02 held-out Dice on ACDC 2d
at about 6 passes over the training slices and +0.01 on hippocampus at 23 passes over the cases, and lost about
0.005 on ACDC at 24 passes. The rule: augment unless the iterations the width probe predicts, times the batch, cover
the training samples fewer than ``min_passes`` times (samples: cases for a 3D configuration, slices for 2D).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass
class AugmentationChoice:
    """The decision and what it rests on (kept in the fold's ``width_choice.json`` beside the width it came from)."""

    augment: bool
    reason: str
    predicted_passes: Optional[float] = None
    min_passes: Optional[float] = None
    training_samples: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        return f"augmentation {'on' if self.augment else 'off'} ({self.reason})"


def choose_augmentation(predicted_iterations: int, batch_size: int, training_samples: int,
                        min_passes: float) -> AugmentationChoice:
    """Augment when ``predicted_iterations x batch_size`` covers ``training_samples`` at least ``min_passes`` times."""
    if training_samples <= 0:
        raise ValueError("choose_augmentation: no training samples")
    passes = predicted_iterations * batch_size / training_samples
    augment = passes >= min_passes
    reason = (f"the budget buys ~{predicted_iterations} iterations of batch {batch_size}, ~{passes:.1f} passes over "
              f"{training_samples} training samples, {'at least' if augment else 'fewer than'} {min_passes:g}")
    return AugmentationChoice(augment, reason, round(passes, 2), float(min_passes), int(training_samples))

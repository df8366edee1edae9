"""What the end of a budgeted run costs: the final validation (from the cases it will predict and the forward time
measured on this machine) and robust step-time estimates (median over a window of recent measurements)."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

#: measurements a median is taken over (recent iterations, epoch ends, forward timings)
WINDOW = 25
#: start-up of a final validation besides its cases (predictor, evaluation, summary) and, per validation case besides
#: the network calls, reading, preprocessing, reverting, export and metrics: a constant plus a share per voxel of the
#: case's original image. Fitted to the measured final validations of budgeted runs (``final_validation_measured_s``
#: beside the estimate in budget_plan.json), 2-core EPYC and Xeon: 4 hippocampus cases 0.6-0.9 s (calls 0.25 s of
#: it), 20 hippocampus cases 2.2-3.9 s, 23 ACDC volumes (2d, ~0.5 M voxels each) 8-11 s. The first constants (1.5 s,
#: 0.5 s per case) reserved 2-5x the measured time; these keep the estimate at or a little above every measurement.
FIXED_OVERHEAD_S = 0.5
PER_CASE_S = 0.2
PER_VOXEL_S = 2e-7


@dataclass
class RecentTimes:
    """The last :data:`WINDOW` durations of one kind; ``estimate`` is their median (a busy moment moves it little)."""

    values: List[float] = field(default_factory=list)
    window: int = WINDOW

    def add(self, seconds: float) -> None:
        self.values.append(float(seconds))
        del self.values[:-self.window]

    def estimate(self, default: float = 0.0) -> float:
        return float(statistics.median(self.values)) if self.values else default


def network_calls(shape: Sequence[int], patch: Sequence[int], tile_batch_size: int, step: float = 0.5) -> int:
    """Forward calls of the sliding window over one image, ``tile_batch_size`` tiles each (the count of
    :func:`suprem_auto.inference.sliding_window.count_network_calls`, the one tile count)."""
    from suprem_auto.inference.sliding_window import count_network_calls

    return count_network_calls(shape, patch, tile_batch_size, step)


@dataclass
class ValidationWorkload:
    """The final validation as work: network calls (tiles / tile batch x mirror passes) and original voxels."""

    num_cases: int
    network_calls: int
    voxels: int
    patch_size: List[int]
    tile_batch_size: int
    mirror_passes: int

    def estimate_s(self, sec_per_call: float) -> float:
        """Seconds: the calls at the measured time per call, plus reading/export/metrics per case and start-up."""
        if self.num_cases == 0:
            return 0.0
        return (FIXED_OVERHEAD_S + self.network_calls * sec_per_call + PER_CASE_S * self.num_cases
                + PER_VOXEL_S * self.voxels)

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def validation_workload(case_shapes: Sequence[Sequence[int]], original_voxels: Sequence[int],
                        patch: Sequence[int], tile_batch_size: int, mirror_passes: int,
                        step: float = 0.5) -> ValidationWorkload:
    """The workload of predicting cases of these preprocessed shapes (and original voxel counts)."""
    calls = sum(network_calls(s, patch, tile_batch_size, step) for s in case_shapes) * max(1, mirror_passes)
    return ValidationWorkload(len(case_shapes), int(calls), int(sum(original_voxels)), [int(p) for p in patch],
                              int(tile_batch_size), int(mirror_passes))


@torch.inference_mode()
def time_network_call(network: nn.Module, num_channels: int, patch: Sequence[int], tile_batch_size: int,
                      device: torch.device, precision: str, warm_up: bool = True) -> float:
    """Seconds of one eval-mode forward of ``tile_batch_size`` tiles at ``patch`` with the inference precision
    (after one untimed call that builds the kernels when ``warm_up``)."""
    from suprem_auto.utils.precision import autocast_context

    was_training = network.training
    network.eval()
    try:
        tiles = torch.zeros((tile_batch_size, num_channels, *patch), device=device)
        best = 0.0
        for i in range(2 if warm_up else 1):
            start = time.perf_counter()
            with autocast_context(precision, device):
                network(tiles)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = time.perf_counter() - start
        return best
    finally:
        network.train(was_training)


def original_voxels(properties: Optional[Dict[str, Any]], fallback_shape: Sequence[int]) -> int:
    """Voxels of a case's image before cropping (from its preprocessing properties), else of ``fallback_shape``."""
    shape = (properties or {}).get("shape_before_cropping") or fallback_shape
    return int(math.prod(int(s) for s in shape))

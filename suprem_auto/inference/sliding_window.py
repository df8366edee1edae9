"""Sliding-window prediction of a whole volume with overlapping, Gaussian-weighted tiles.

The volume is padded to at least the patch size, tiles start at evenly spread positions (step = ``step`` x patch),
each tile's logits are weighted by a Gaussian importance map (sigma = patch / 8) and accumulated. Test-time
mirroring averages the logits of every non-empty combination of the allowed axes with the unflipped pass.
2D configurations (a patch of two sizes) are predicted slice by slice along axis 0 with the same code.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
from contextlib import nullcontext
from typing import ContextManager, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from suprem_auto.utils.device import DeviceLike, resolve_device

logger = logging.getLogger(__name__)
__all__ = ["compute_tile_starts", "count_tiles", "count_network_calls", "gaussian_importance_map",
           "mirror_combinations", "predict_sliding_window", "resolve_device", "resolve_precision"]
GAUSSIAN_FLOOR = 1e-3  # lowest tile weight relative to the centre: keeps fp16 accumulation and division well defined


def compute_tile_starts(shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> List[List[int]]:
    """Start index of the tiles along each axis.

    ``shape`` must be at least ``patch`` on every axis. Per axis ``ceil((size - patch) / (patch * step)) + 1``
    tiles are spread evenly from 0 to ``size - patch``, so neighbouring tiles overlap by at least ``1 - step``.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    if len(shape) != len(patch):
        raise ValueError(f"shape {tuple(shape)} and patch {tuple(patch)} differ in dimensionality")
    starts: List[List[int]] = []
    for size, p in zip(shape, patch):
        if size < p:
            raise ValueError(f"shape {tuple(shape)} is smaller than the patch {tuple(patch)}; pad it first")
        last = size - p
        n = int(math.ceil(last / max(p * step, 1.0))) + 1 if last > 0 else 1
        spacing = last / (n - 1) if n > 1 else 0.0
        starts.append([int(round(i * spacing)) for i in range(n)])
    return starts


@functools.lru_cache(maxsize=8)
def _gaussian_cached(patch: Tuple[int, ...], sigma_scale: float, peak_at_half: bool) -> np.ndarray:
    weights = np.ones((), dtype=np.float64)
    for p in patch:
        centre = p // 2 if peak_at_half else (p - 1) / 2.0
        coords = np.arange(p, dtype=np.float64) - centre
        sigma = max(p * sigma_scale, 1e-6)
        weights = np.multiply.outer(weights, np.exp(-0.5 * (coords / sigma) ** 2))
    weights /= weights.max()
    weights = np.maximum(weights, GAUSSIAN_FLOOR).astype(np.float32)
    weights.setflags(write=False)
    return weights


def gaussian_importance_map(patch: Sequence[int], sigma_scale: float = 1.0 / 8, nnunet_centre: bool = False) -> np.ndarray:
    """Separable Gaussian of the patch's shape, sigma = patch * sigma_scale, max 1, floored at 1e-3.

    Centred (symmetric, so mirrored test-time passes stay flip-equivariant), or with ``nnunet_centre`` peaking at
    voxel ``p // 2`` per axis as nnU-Net v2's map does (used for nnU-Net model folders, so their overlapping tiles
    are weighted as ``nnUNetv2_predict`` weights them). Cached per patch size; the returned array is read-only.
    """
    return _gaussian_cached(tuple(int(p) for p in patch), float(sigma_scale), bool(nnunet_centre))


def mirror_combinations(mirror_axes: Optional[Sequence[int]]) -> List[Tuple[int, ...]]:
    """The identity plus every non-empty combination of the allowed axes (8 passes for 3 axes)."""
    axes = tuple(sorted(set(mirror_axes or ())))
    combos: List[Tuple[int, ...]] = [()]
    for r in range(1, len(axes) + 1):
        combos.extend(itertools.combinations(axes, r))
    return combos


def resolve_precision(precision: Optional[str], device: torch.device, cpu_bf16: bool = False) -> str:
    """The autocast precision of a prediction: ``auto`` detects as training does (``utils/precision.py``: CUDA
    fp16, CPU bf16 where native, else fp32); ``None`` keeps this function's former default (CUDA fp16, CPU fp32, or
    bf16 with ``cpu_bf16``); ``fp32``/``bf16``/``fp16`` force."""
    from suprem_auto.utils.precision import inference_precision

    if precision is None:
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_bf16 and device.type == "cpu" else "fp32"
    if cpu_bf16 and precision == "auto" and device.type == "cpu":
        precision = "bf16"
    return inference_precision(precision, device)


def _autocast(device: torch.device, precision: str) -> ContextManager:
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _pad_to_patch(data: torch.Tensor, patch: Sequence[int]) -> Tuple[torch.Tensor, List[slice]]:
    """Zero-pad the spatial axes (centred) to at least ``patch``; return the padded data and the crop back."""
    spatial = data.shape[1:]
    pad_before = [max(p - s, 0) // 2 for s, p in zip(spatial, patch)]
    pad_after = [max(p - s, 0) - b for s, p, b in zip(spatial, patch, pad_before)]
    crop = [slice(b, b + s) for b, s in zip(pad_before, spatial)]
    if not any(pad_before) and not any(pad_after):
        return data, crop
    torch_pad: List[int] = []
    for b, a in zip(reversed(pad_before), reversed(pad_after)):
        torch_pad.extend([b, a])
    return torch.nn.functional.pad(data, torch_pad, mode="constant", value=0.0), crop


def _starts_per_axis(shape: Sequence[int], patch: Sequence[int], step: float, two_d: bool) -> List[List[int]]:
    """Tile starts per axis of a padded shape. In 2D mode axis 0 is walked slice by slice (patch[0] == 1)."""
    if two_d:
        return [list(range(shape[0]))] + compute_tile_starts(shape[1:], patch[1:], step)
    return compute_tile_starts(shape, patch, step)


def _tile_slices(shape: Sequence[int], patch: Sequence[int], step: float, two_d: bool) -> List[Tuple[slice, ...]]:
    """Spatial slices of all tiles (the starts of :func:`_starts_per_axis`, combined)."""
    per_axis = _starts_per_axis(shape, patch, step, two_d)
    return [tuple(slice(s, s + p) for s, p in zip(starts, patch)) for starts in itertools.product(*per_axis)]


def count_tiles(shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> int:
    """Tiles the sliding window predicts over an image of spatial ``shape`` (padded to at least the patch); a
    2-size ``patch`` is predicted slice by slice along axis 0. The one tile count (the budget's reserve uses it)."""
    full = (1, *patch) if len(patch) == 2 else tuple(int(p) for p in patch)
    padded = [max(int(sz), int(p)) for sz, p in zip(shape, full)]
    return math.prod(len(starts) for starts in _starts_per_axis(padded, full, step, len(patch) == 2))


def count_network_calls(shape: Sequence[int], patch: Sequence[int], tile_batch_size: int, step: float = 0.5) -> int:
    """Forward calls of one pass (no mirroring) over the image: tiles in batches of ``tile_batch_size``."""
    return math.ceil(count_tiles(shape, patch, step) / max(1, int(tile_batch_size)))


def _batches(items: List[Tuple[slice, ...]], size: int) -> Iterator[List[Tuple[slice, ...]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _forward(network: nn.Module, tiles: torch.Tensor, two_d: bool) -> torch.Tensor:
    """Run the network on (b, c, *patch) tiles; in 2D mode the singleton axis 0 is squeezed around the call."""
    out = network(tiles[:, :, 0] if two_d else tiles)
    if isinstance(out, (list, tuple)):  # a network built with deep supervision: full resolution comes first
        out = out[0]
    return out[:, :, None] if two_d else out


def _predict_tiles(network: nn.Module, tiles: torch.Tensor, combos: List[Tuple[int, ...]], two_d: bool) -> torch.Tensor:
    """Mirror-averaged logits (float32) of a batch of tiles. Axes in ``combos`` are spatial axis indices."""
    total: Optional[torch.Tensor] = None
    for combo in combos:
        dims = [a + 2 for a in combo]
        x = torch.flip(tiles, dims) if dims else tiles
        y = _forward(network, x, two_d).float()
        y = torch.flip(y, dims) if dims else y
        total = y if total is None else total + y
    assert total is not None
    return total / len(combos)


def _accumulate(network: nn.Module, data: torch.Tensor, patch: Sequence[int], num_outputs: int, step: float,
                combos: List[Tuple[int, ...]], tile_batch_size: int, device: torch.device, store: torch.device,
                precision: str, progress: bool, two_d: bool, nnunet_gaussian: bool = False) -> torch.Tensor:
    padded, crop = _pad_to_patch(data, patch)
    shape = padded.shape[1:]
    acc_dtype = torch.float16 if store.type == "cuda" else torch.float32
    logits = torch.zeros((num_outputs, *shape), dtype=acc_dtype, device=store)
    weights = torch.zeros(tuple(shape), dtype=torch.float32, device=store)
    gaussian = torch.tensor(gaussian_importance_map(patch[1:] if two_d else patch, nnunet_centre=nnunet_gaussian))
    if two_d:
        gaussian = gaussian[None]
    gaussian = gaussian.to(store)
    tiles = _tile_slices(shape, patch, step, two_d)
    padded = padded.to(device, non_blocking=True) if padded.device != device else padded
    with tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for batch in _batches(tiles, tile_batch_size):
            x = torch.stack([padded[(slice(None), *s)] for s in batch])
            with _autocast(device, precision):
                y = _predict_tiles(network, x, combos, two_d)
            if y.shape[1] != num_outputs:
                raise ValueError(f"network gives {y.shape[1]} output channels, expected {num_outputs}")
            y = y.to(store)
            for tile_logits, s in zip(y, batch):
                logits[(slice(None), *s)] += (tile_logits * gaussian).to(acc_dtype)
                weights[s] += gaussian
            bar.update(len(batch))
    logits = logits[(slice(None), *crop)]
    result = logits.float() / weights[tuple(crop)]
    return result.cpu()


@torch.inference_mode()
def predict_sliding_window(network: nn.Module, data: torch.Tensor, patch_size: Sequence[int], num_outputs: int,
                           step: float = 0.5, mirror_axes: Optional[Sequence[int]] = (0, 1, 2),
                           tile_batch_size: int = 1, device: DeviceLike = "auto", progress: bool = True,
                           cpu_bf16: bool = False, precision: Optional[str] = None,
                           nnunet_gaussian: bool = False) -> torch.Tensor:
    """Averaged logits ``(num_outputs, z, y, x)`` (float32, CPU) of ``network`` over the ``(c, z, y, x)`` volume.

    ``patch_size`` has 3 sizes (3D network) or 2 (2D network fed ``(b, c, y, x)`` slices along axis 0).
    ``mirror_axes`` are spatial axes of the patch (``None`` or ``()`` disables test-time mirroring).
    Accumulation happens on ``device`` (fp16 on CUDA, fp32 elsewhere) and moves to CPU memory if the device
    runs out. ``precision`` (:func:`resolve_precision`): ``auto`` = bf16 autocast on a CPU with native bf16, fp16 on
    CUDA, else fp32; ``None`` = fp16 on CUDA and fp32 on CPU unless ``cpu_bf16``. ``nnunet_gaussian`` weights tiles
    with nnU-Net's off-centre map (:func:`gaussian_importance_map`). The network must be on ``device`` and in eval
    mode.
    """
    if data.ndim != 4:
        raise ValueError(f"expected data of shape (c, z, y, x), got {tuple(data.shape)}")
    two_d = len(patch_size) == 2
    if len(patch_size) not in (2, 3):
        raise ValueError(f"patch_size must have 2 or 3 sizes, got {tuple(patch_size)}")
    patch = (1, *patch_size) if two_d else tuple(int(p) for p in patch_size)
    n_spatial = len(patch_size)
    if mirror_axes and any(a < 0 or a >= n_spatial for a in mirror_axes):
        raise ValueError(f"mirror axes {tuple(mirror_axes)} outside the {n_spatial} spatial axes")
    combos = mirror_combinations(mirror_axes)
    if two_d:
        combos = [tuple(a + 1 for a in c) for c in combos]
    device = resolve_device(device)
    precision = resolve_precision(precision, device, cpu_bf16)
    data = data.float()
    args = (network, data, patch, num_outputs, step, combos, max(1, int(tile_batch_size)), device)
    if device.type != "cpu":
        try:
            return _accumulate(*args, store=device, precision=precision, progress=progress, two_d=two_d,
                               nnunet_gaussian=nnunet_gaussian)
        except torch.OutOfMemoryError:
            logger.warning("%s ran out of memory; accumulating the sliding window in CPU memory", device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return _accumulate(*args, store=torch.device("cpu"), precision=precision, progress=progress, two_d=two_d,
                       nnunet_gaussian=nnunet_gaussian)

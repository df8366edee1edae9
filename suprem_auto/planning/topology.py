"""Network topology from voxel spacing and patch size (nnU-Net's pooling/convolution rules).

Stage by stage, an axis is downsampled (stride 2) while its feature map is at least ``2 * min_feature_map`` voxels
and its spacing is within a factor 2 of the finest spacing among such axes (a lone axis needs
``3 * min_feature_map``). Its convolution kernel becomes 3 once its spacing is within a factor 2 of the finest
spacing (1 before that, giving anisotropic kernels). The patch is then rounded up to a multiple of ``2**npool``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass
class Topology:
    """Per-stage strides and kernels, the padded patch size and what it must be divisible by."""

    strides: List[List[int]]
    kernel_sizes: List[List[int]]
    patch_size: List[int]
    divisible_by: List[int]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_to_multiple(shape: Sequence[int], divisor: Sequence[int]) -> List[int]:
    """Round every axis up to a multiple of its divisor."""
    return [int(math.ceil(s / d) * d) for s, d in zip(shape, divisor)]


def pool_and_conv_topology(spacing: Sequence[float], patch_size: Sequence[int],
                           min_feature_map: int = 4) -> Topology:
    """Topology for a patch at a spacing (see module docstring)."""
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [int(p) for p in patch_size]
    strides: List[List[int]] = [[1] * dim]
    kernels: List[List[int]] = []
    kernel = [1] * dim
    pools_per_axis = [0] * dim
    while True:
        candidates = [a for a in range(dim) if current_size[a] >= 2 * min_feature_map]
        if not candidates:
            break
        finest = min(current_spacing[a] for a in candidates)
        candidates = [a for a in candidates if current_spacing[a] / finest < 2]
        if len(candidates) == 1 and current_size[candidates[0]] < 3 * min_feature_map:
            break
        overall_finest = min(current_spacing)
        for a in range(dim):
            if kernel[a] != 3 and current_spacing[a] / overall_finest < 2:
                kernel[a] = 3
        stride = [1] * dim
        for a in candidates:
            stride[a] = 2
            pools_per_axis[a] += 1
            current_spacing[a] *= 2
            current_size[a] = int(math.ceil(current_size[a] / 2))
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)  # bottleneck
    divisible_by = [2 ** n for n in pools_per_axis]
    return Topology(strides, kernels, pad_to_multiple(patch_size, divisible_by), divisible_by)


def features_per_stage(n_stages: int, base: int = 32, maximum: int = 320) -> List[int]:
    """min(base * 2**i, maximum) per stage."""
    return [min(base * 2 ** i, maximum) for i in range(n_stages)]


def plain_unet_feature_map_voxels(patch_size: Sequence[int], topology: Topology, features: Sequence[int],
                                  num_outputs: int, n_conv_encoder: int = 2, n_conv_decoder: int = 2) -> int:
    """Total activation voxels of the conv outputs of a plain U-Net (the memory proxy nnU-Net calibrates against).

    Encoder: every conv of every stage at that stage's resolution. Decoder: the transposed conv output, the convs
    of each stage, and the segmentation output at full resolution.
    """
    sizes = []
    size = np.asarray(patch_size, dtype=np.int64)
    for stride in topology.strides:
        size = size // np.asarray(stride)
        sizes.append(size.copy())
    total = 0
    for s, f in zip(sizes, features):
        total += n_conv_encoder * f * int(np.prod(s))
    for stage in range(len(sizes) - 2, -1, -1):
        voxels = int(np.prod(sizes[stage]))
        total += features[stage] * voxels  # transposed conv output
        total += n_conv_decoder * features[stage] * voxels
    total += num_outputs * int(np.prod(sizes[0]))
    return int(total)


def resenc_unet_feature_map_voxels(patch_size: Sequence[int], topology: Topology, features: Sequence[int],
                                   num_outputs: int, n_blocks_per_stage: Sequence[int],
                                   n_conv_decoder: Sequence[int]) -> int:
    """Total activation voxels of the conv outputs of a residual-encoder U-Net (nnU-Net's ResEnc memory proxy).

    Encoder: the stem conv at full resolution; per residual block its two convs, plus the shortcut's 1x1 conv where
    the block changes width or resolution (the first block of a stage). Decoder: as the plain U-Net's, with
    ``n_conv_decoder[s]`` convs per stage (counted from the deepest decoder stage).
    """
    sizes = []
    size = np.asarray(patch_size, dtype=np.int64)
    for stride in topology.strides:
        size = size // np.asarray(stride)
        sizes.append(size.copy())
    total = features[0] * int(np.prod(patch_size, dtype=np.int64))  # stem
    in_features, in_size = features[0], np.asarray(patch_size, dtype=np.int64)
    for s, (out_size, f) in enumerate(zip(sizes, features)):
        voxels = int(np.prod(out_size))
        total += 2 * f * voxels * n_blocks_per_stage[s]
        if in_features != f or np.any(in_size != out_size):
            total += f * voxels  # projection shortcut of the stage's first block
        in_features, in_size = f, out_size
    n = len(sizes)
    for d in range(n - 1):  # d = 0: the deepest decoder stage, at the resolution of encoder stage n - 2
        stage = n - 2 - d
        voxels = int(np.prod(sizes[stage]))
        total += features[stage] * voxels  # transposed conv output
        total += n_conv_decoder[d] * features[stage] * voxels
    total += num_outputs * int(np.prod(sizes[0]))
    return int(total)

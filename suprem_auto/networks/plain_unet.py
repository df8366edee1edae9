"""nnU-Net-style plain convolutional U-Net (2D or 3D), written for suprem_auto.

Encoder stage s: ``n_conv_per_stage[s]`` blocks of conv -> InstanceNorm(eps 1e-5, affine) -> LeakyReLU(0.01);
the first conv of a stage carries the stage stride. Decoder: transposed conv (kernel = stride) to the skip's
width, concat ``[upsampled, skip]``, ``n_conv_per_stage_decoder[s]`` blocks, and a 1x1 segmentation layer.
With ``deep_supervision`` the forward returns one output per decoder stage, highest resolution first.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _as_list(value: int | Sequence[int], n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def _ops(dim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dim == 3:
        return nn.Conv3d, nn.InstanceNorm3d, nn.ConvTranspose3d
    if dim == 2:
        return nn.Conv2d, nn.InstanceNorm2d, nn.ConvTranspose2d
    raise ValueError(f"plain_unet supports 2D or 3D kernels, got {dim}D")


class ConvNormAct(nn.Module):
    """conv -> InstanceNorm(affine) -> LeakyReLU(0.01, inplace)."""

    def __init__(self, dim: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        conv, norm, _ = _ops(dim)
        self.conv = conv(in_ch, out_ch, tuple(kernel), tuple(stride), padding=tuple(k // 2 for k in kernel), bias=True)
        self.norm = norm(out_ch, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.conv(x)))


def _stage(dim: int, n: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]) -> nn.Sequential:
    ones = [1] * dim
    return nn.Sequential(*[ConvNormAct(dim, in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else ones)
                           for i in range(n)])


class PlainConvEncoder(nn.Module):
    def __init__(self, dim: int, in_ch: int, features: list[int], kernels: list[list[int]],
                 strides: list[list[int]], n_conv: list[int]) -> None:
        super().__init__()
        stages = []
        for s, width in enumerate(features):
            stages.append(_stage(dim, n_conv[s], in_ch, width, kernels[s], strides[s]))
            in_ch = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainConvDecoder(nn.Module):
    def __init__(self, dim: int, features: list[int], kernels: list[list[int]], strides: list[list[int]],
                 n_conv: list[int], num_outputs: int) -> None:
        super().__init__()
        conv, _, transp = _ops(dim)
        n_stages = len(features)
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for d in range(n_stages - 1):  # d=0 is the deepest decoder stage
            below, skip = features[n_stages - 1 - d], features[n_stages - 2 - d]
            stride = tuple(strides[n_stages - 1 - d])
            self.transpconvs.append(transp(below, skip, stride, stride, bias=True))
            ones = [1] * dim
            self.stages.append(_stage(dim, n_conv[d], 2 * skip, skip, kernels[n_stages - 2 - d], ones))
            self.seg_layers.append(conv(skip, num_outputs, 1, 1, 0, bias=True))
        self.deep_supervision = False

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        n = len(self.stages)
        for d in range(n):
            x = self.stages[d](torch.cat((self.transpconvs[d](x), skips[-(d + 2)]), 1))
            if self.deep_supervision or d == n - 1:
                outputs.append(self.seg_layers[d](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


class PlainConvUNet(nn.Module):
    """nnU-Net PlainConvUNet equivalent. ``deep_supervision`` can be switched after construction."""

    def __init__(self, num_input_channels: int, num_outputs: int, n_stages: int,
                 features_per_stage: int | Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_conv_per_stage: int | Sequence[int],
                 n_conv_per_stage_decoder: int | Sequence[int], deep_supervision: bool = False) -> None:
        super().__init__()
        features = _as_list(features_per_stage, n_stages)
        kernels = [list(map(int, k)) for k in kernel_sizes]
        strides_l = [list(map(int, s)) for s in strides]
        n_conv = _as_list(n_conv_per_stage, n_stages)
        n_conv_dec = _as_list(n_conv_per_stage_decoder, n_stages - 1)
        dim = len(kernels[0])
        lengths = {"features_per_stage": len(features), "kernel_sizes": len(kernels), "strides": len(strides_l),
                   "n_conv_per_stage": len(n_conv)}
        bad = [f"{k} has {v} entries" for k, v in lengths.items() if v != n_stages]
        if len(n_conv_dec) != n_stages - 1:
            bad.append(f"n_conv_per_stage_decoder has {len(n_conv_dec)} entries (need {n_stages - 1})")
        if bad:
            raise ValueError(f"plain_unet with n_stages={n_stages}: " + "; ".join(bad))
        self.encoder = PlainConvEncoder(dim, num_input_channels, features, kernels, strides_l, n_conv)
        self.decoder = PlainConvDecoder(dim, features, kernels, strides_l, n_conv_dec, num_outputs)
        self.deep_supervision = deep_supervision
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.ConvTranspose3d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=1e-2)
                nn.init.zeros_(m.bias)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))

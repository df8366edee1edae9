"""Residual-encoder U-Net (nnU-Net's ResEnc M/L/XL network), written for suprem_auto with nnU-Net's parameter names.

Encoder: a stem (one conv -> InstanceNorm -> LeakyReLU at the first stage's width and kernel), then per stage
``n_blocks_per_stage[s]`` residual blocks. A block is conv1 (conv-norm-act, carrying the stage stride) -> conv2
(conv-norm, no activation), added to a skip path, then LeakyReLU. The skip path of a block that strides or changes
width is ``[AvgPool(stride) if strided] + 1x1 conv (no bias) -> norm``; otherwise it is the identity.
Decoder: as the plain U-Net's (transposed conv, concat ``[upsampled, skip]``, ``n_conv_per_stage_decoder[s]``
conv-norm-act blocks, 1x1 segmentation layer per stage; deep supervision returns them highest resolution first).

State-dict names equal nnU-Net's primary names (``encoder.stem.convs.0.conv.weight``,
``encoder.stages.1.blocks.0.skip.1.conv.weight``, ``decoder.stages.0.convs.0.norm.bias``, ...); nnU-Net's aliases of
the same tensors (``*.all_modules.*`` and ``decoder.encoder.*``) are not stored.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def _as_list(value: int | Sequence[int], n: int) -> List[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def _ops(dim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dim == 3:
        return nn.Conv3d, nn.InstanceNorm3d, nn.ConvTranspose3d, nn.AvgPool3d
    if dim == 2:
        return nn.Conv2d, nn.InstanceNorm2d, nn.ConvTranspose2d, nn.AvgPool2d
    raise ValueError(f"resenc_unet supports 2D or 3D kernels, got {dim}D")


class ConvNorm(nn.Module):
    """conv -> InstanceNorm(eps 1e-5, affine) [-> LeakyReLU(0.01)]."""

    def __init__(self, dim: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int],
                 bias: bool = True, activation: bool = True) -> None:
        super().__init__()
        conv, norm, _, _ = _ops(dim)
        self.conv = conv(in_ch, out_ch, tuple(kernel), tuple(stride), padding=tuple((k - 1) // 2 for k in kernel),
                         bias=bias)
        self.norm = norm(out_ch, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return self.nonlin(x) if self.nonlin is not None else x


class StackedConvs(nn.Module):
    """``n`` conv-norm-act blocks in ``convs``; the first carries the stride."""

    def __init__(self, dim: int, n: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[ConvNorm(dim, in_ch if i == 0 else out_ch, out_ch, kernel,
                                              stride if i == 0 else [1] * dim) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class ResidualBlock(nn.Module):
    """Basic residual block with an average-pooling projection shortcut ("ResNet-D" style)."""

    def __init__(self, dim: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        _, _, _, pool = _ops(dim)
        self.conv1 = ConvNorm(dim, in_ch, out_ch, kernel, stride)
        self.conv2 = ConvNorm(dim, out_ch, out_ch, kernel, [1] * dim, activation=False)
        self.nonlin2 = nn.LeakyReLU(0.01, inplace=True)
        strided = any(s != 1 for s in stride)
        skip: List[nn.Module] = []
        if strided:
            skip.append(pool(tuple(stride), tuple(stride)))
        if in_ch != out_ch:
            skip.append(ConvNorm(dim, in_ch, out_ch, [1] * dim, [1] * dim, bias=False, activation=False))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class ResidualStage(nn.Module):
    def __init__(self, dim: int, n_blocks: int, in_ch: int, out_ch: int, kernel: Sequence[int],
                 stride: Sequence[int]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(dim, in_ch if b == 0 else out_ch, out_ch, kernel,
                                                    stride if b == 0 else [1] * dim) for b in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualEncoder(nn.Module):
    def __init__(self, dim: int, in_ch: int, features: List[int], kernels: List[List[int]],
                 strides: List[List[int]], n_blocks: List[int]) -> None:
        super().__init__()
        self.stem = StackedConvs(dim, 1, in_ch, features[0], kernels[0], [1] * dim)
        stages, width = [], features[0]
        for s, out in enumerate(features):
            stages.append(ResidualStage(dim, n_blocks[s], width, out, kernels[s], strides[s]))
            width = out
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    def __init__(self, dim: int, features: List[int], kernels: List[List[int]], strides: List[List[int]],
                 n_conv: List[int], num_outputs: int) -> None:
        super().__init__()
        conv, _, transp, _ = _ops(dim)
        n = len(features)
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for d in range(n - 1):  # d=0 is the deepest decoder stage
            below, skip = features[n - 1 - d], features[n - 2 - d]
            stride = tuple(strides[n - 1 - d])
            self.transpconvs.append(transp(below, skip, stride, stride, bias=True))
            self.stages.append(StackedConvs(dim, n_conv[d], 2 * skip, skip, kernels[n - 2 - d], [1] * dim))
            self.seg_layers.append(conv(skip, num_outputs, 1, 1, 0, bias=True))
        self.deep_supervision = False

    def forward(self, skips: List[torch.Tensor]) -> torch.Tensor | List[torch.Tensor]:
        x = skips[-1]
        outputs = []
        n = len(self.stages)
        for d in range(n):
            x = self.stages[d](torch.cat((self.transpconvs[d](x), skips[-(d + 2)]), 1))
            if self.deep_supervision or d == n - 1:
                outputs.append(self.seg_layers[d](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


class ResidualEncoderUNet(nn.Module):
    """U-Net with a residual encoder (nnU-Net ResEnc presets). ``deep_supervision`` can be switched later."""

    def __init__(self, num_input_channels: int, num_outputs: int, n_stages: int,
                 features_per_stage: int | Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_blocks_per_stage: int | Sequence[int],
                 n_conv_per_stage_decoder: int | Sequence[int], deep_supervision: bool = False) -> None:
        super().__init__()
        features = _as_list(features_per_stage, n_stages)
        kernels = [[int(k) for k in ks] for ks in kernel_sizes]
        strides_l = [[int(s) for s in st] for st in strides]
        n_blocks = _as_list(n_blocks_per_stage, n_stages)
        n_conv_dec = _as_list(n_conv_per_stage_decoder, n_stages - 1)
        lengths = {"features_per_stage": len(features), "kernel_sizes": len(kernels), "strides": len(strides_l),
                   "n_blocks_per_stage": len(n_blocks)}
        bad = [f"{k} has {v} entries" for k, v in lengths.items() if v != n_stages]
        if len(n_conv_dec) != n_stages - 1:
            bad.append(f"n_conv_per_stage_decoder has {len(n_conv_dec)} entries (need {n_stages - 1})")
        if bad:
            raise ValueError(f"resenc_unet with n_stages={n_stages}: " + "; ".join(bad))
        dim = len(kernels[0])
        self.encoder = ResidualEncoder(dim, num_input_channels, features, kernels, strides_l, n_blocks)
        self.decoder = UNetDecoder(dim, features, kernels, strides_l, n_conv_dec, num_outputs)
        self.deep_supervision = deep_supervision
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.ConvTranspose3d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=1e-2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor | List[torch.Tensor]:
        return self.decoder(self.encoder(x))

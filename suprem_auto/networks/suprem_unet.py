"""The SuPreM / Models Genesis 3D U-Net (``UNet3D``) with the exact parameter names of the released checkpoints.

Keys: ``down_tr{64,128,256,512}.ops.{0,1}.{conv1,bn1}``, ``up_tr{256,128,64}.{up_conv,ops...}``, ``out_tr.final_conv``.
Normalisation is ``ContBatchNorm3d``: batch statistics are used in training *and* eval (as in the original code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
    """BatchNorm3d that always normalises with the current batch's statistics (running stats are only updated)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"ContBatchNorm3d expects a 5D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


class LUConv(nn.Module):
    """Conv3d(k3) -> ContBatchNorm3d -> ReLU(inplace)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn1(self.conv1(x)))


def _two_convs(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(LUConv(in_channels, mid_channels), LUConv(mid_channels, out_channels))


class DownTransition(nn.Module):
    """Two LUConvs; returns (pooled output, output before pooling). The deepest stage does not pool."""

    def __init__(self, in_channels: int, depth: int, base_width: int = 32) -> None:
        super().__init__()
        width = base_width * 2 ** depth
        self.ops = _two_convs(in_channels, width, 2 * width)
        self.pool = depth < 3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before_pool = self.ops(x)
        out = F.max_pool3d(before_pool, 2) if self.pool else before_pool
        return out, before_pool


class UpTransition(nn.Module):
    """Transposed conv (k2 s2), concat ``[upsampled, skip]``, two LUConvs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = _two_convs(in_channels + skip_channels, out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.ops(torch.cat((self.up_conv(x), skip), 1))


class OutputTransition(nn.Module):
    """1x1x1 conv to the class logits (no activation)."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.final_conv = nn.Conv3d(in_channels, num_outputs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)


class UNet3D(nn.Module):
    """Models Genesis / SuPreM U-Net (19.07M backbone parameters). Input sizes must be divisible by 8.

    ``base_width`` 32 is the released checkpoints' width (stage outputs 64-128-256-512); other values scale every
    stage alike (for training from scratch or from our own pre-training) and keep the parameter names.
    ``num_outputs=None`` builds the pre-training variant without ``out_tr`` (used by the Universal head).
    ``deep_supervision`` is accepted for interface compatibility and ignored (single output).
    """


    def __init__(self, num_input_channels: int = 1, num_outputs: int | None = 1, base_width: int = 32) -> None:
        super().__init__()
        c1, c2, c3, c4 = (base_width * 2 ** k for k in (1, 2, 3, 4))  # 64, 128, 256, 512 at the released width
        self.down_tr64 = DownTransition(num_input_channels, 0, base_width)
        self.down_tr128 = DownTransition(c1, 1, base_width)
        self.down_tr256 = DownTransition(c2, 2, base_width)
        self.down_tr512 = DownTransition(c3, 3, base_width)
        self.up_tr256 = UpTransition(c4, c3, c3)
        self.up_tr128 = UpTransition(c3, c2, c2)
        self.up_tr64 = UpTransition(c2, c1, c1)
        if num_outputs is not None:
            self.out_tr = OutputTransition(c1, num_outputs)
        self.deep_supervision = False

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (bottleneck, 16 x base_width channels; last decoder features, 2 x base_width channels)."""
        out64, skip64 = self.down_tr64(x)
        out128, skip128 = self.down_tr128(out64)
        out256, skip256 = self.down_tr256(out128)
        out512, _ = self.down_tr512(out256)
        up256 = self.up_tr256(out512, skip256)
        up128 = self.up_tr128(up256, skip128)
        up64 = self.up_tr64(up128, skip64)
        return out512, up64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_tr(self.forward_features(x)[1])

"""MONAI SwinUNETR with the MONAI 0.9.0 patch-merging slicing, so released weights compute what they were trained to.

MONAI 0.9.0 gathers the eight 2x2x2 sub-grids in the order [000,100,010,001,101,010,001,111] (010 and 001 twice,
110 and 011 never); MONAI >= 1.5 changed this. Parameter names and shapes are identical in both versions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinUNETR

# (d, h, w) offsets of the eight sub-grids concatenated by MONAI 0.9.0, in order.
V090_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class PatchMergingV090(PatchMergingV2):
    """Patch merging exactly as in MONAI 0.9.0 (3D); 2D inputs use the parent's slicing (unchanged since 0.9.0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in V090_OFFSETS], -1)
        return self.reduction(self.norm(x))


class SuPreMSwinUNETR(SwinUNETR):
    """SwinUNETR (feature_size 48 by default) with v0.9.0 patch merging; input sizes must be divisible by 32."""


    def __init__(self, num_input_channels: int, num_outputs: int | None, feature_size: int = 48,
                 depths: tuple[int, ...] = (2, 2, 2, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 dropout_path_rate: float = 0.0, use_checkpoint: bool = False, patch_merging: str = "v0.9.0") -> None:
        if patch_merging not in ("v0.9.0", "monai"):
            raise ValueError(f"swin_unetr patch_merging must be 'v0.9.0' or 'monai', got {patch_merging!r}")
        downsample = PatchMergingV090 if patch_merging == "v0.9.0" else "mergingv2"
        super().__init__(in_channels=num_input_channels, out_channels=max(1, num_outputs or 1),
                         feature_size=feature_size, depths=tuple(depths), num_heads=tuple(num_heads),
                         drop_rate=0.0, attn_drop_rate=0.0, dropout_path_rate=dropout_path_rate,
                         use_checkpoint=use_checkpoint, downsample=downsample)
        if num_outputs is None:
            del self.out
        self.deep_supervision = False

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (bottleneck ``encoder10`` output, 16*feature_size ch; ``decoder1`` output, feature_size ch)."""
        hidden = self.swinViT(x, self.normalize)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return dec4, self.decoder1(dec0, enc0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"swin_unetr input spatial size {tuple(x.shape[2:])} must be divisible by 32")
        return self.out(self.forward_features(x)[1])

"""CLIP-driven Universal Model head (SuPreM direct inference), rebuilt with the released parameter names.

State dict (in order): ``organ_embedding`` (C,512) buffer, ``backbone.*``, ``precls_conv`` (GN(16,F) + ReLU + conv
F->8), ``GAP`` (GN(16,B) + ReLU + global average pool + conv B->256), ``controller`` (conv 512->153), ``text_to_vision``
(Linear 512->256). For each class a controller output parameterises a 3-layer dynamic 1x1x1 head (8->8->8->1) applied
to the precls features. Output: C sigmoid probabilities, no background channel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suprem_auto.networks.suprem_unet import UNet3D
from suprem_auto.networks.swin_unetr import SuPreMSwinUNETR

HEAD_CHANNELS = 8
# Dynamic head: weights of the three 1x1x1 layers (8x8, 8x8, 8x1) then their biases (8, 8, 1): 153 numbers per class.
WEIGHT_NUMS = (HEAD_CHANNELS * HEAD_CHANNELS, HEAD_CHANNELS * HEAD_CHANNELS, HEAD_CHANNELS)
BIAS_NUMS = (HEAD_CHANNELS, HEAD_CHANNELS, 1)


class UniversalModel(nn.Module):
    """Backbone returning (bottleneck, decoder features) + text-conditioned dynamic heads, one per class."""

    def __init__(self, backbone: str, num_classes: int, num_input_channels: int = 1) -> None:
        super().__init__()
        if backbone == "suprem_unet":
            net: nn.Module = UNet3D(num_input_channels, None)
            feat, bottleneck = 64, 512
        elif backbone == "swin_unetr":
            net = SuPreMSwinUNETR(num_input_channels, None)
            feat, bottleneck = 48, 768
        else:
            raise ValueError(f"the Universal head exists for suprem_unet and swin_unetr, not {backbone!r}")
        net.architecture_name = backbone
        self.register_buffer("organ_embedding", torch.randn(num_classes, 512))
        self.backbone = net
        self.precls_conv = nn.Sequential(nn.GroupNorm(16, feat), nn.ReLU(inplace=True),
                                         nn.Conv3d(feat, HEAD_CHANNELS, kernel_size=1))
        self.GAP = nn.Sequential(nn.GroupNorm(16, bottleneck), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1),
                                 nn.Conv3d(bottleneck, 256, kernel_size=1))
        self.controller = nn.Conv3d(512, sum(WEIGHT_NUMS) + sum(BIAS_NUMS), kernel_size=1)
        self.text_to_vision = nn.Linear(512, 256)
        self.num_classes = num_classes
        self.architecture_name = backbone

    def _dynamic_heads(self, features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply per-class 1x1x1 heads. features (8, D, H, W) of one sample; params (C, 153) -> (C, D, H, W)."""
        c = params.shape[0]
        chunks = torch.split(params, list(WEIGHT_NUMS + BIAS_NUMS), dim=1)
        weights, biases = chunks[:3], chunks[3:]
        x = features.unsqueeze(0).repeat(1, c, 1, 1, 1)  # (1, C*8, D, H, W): classes as conv groups
        for layer in range(3):
            out_ch = HEAD_CHANNELS if layer < 2 else 1
            w = weights[layer].reshape(c * out_ch, -1, 1, 1, 1)
            x = F.conv3d(x, w, biases[layer].reshape(c * out_ch), groups=c)
            if layer < 2:
                x = F.relu(x)
        return x[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities (B, C, D, H, W)."""
        bottleneck, decoded = self.backbone.forward_features(x)
        task = F.relu(self.text_to_vision(self.organ_embedding))[:, :, None, None, None]  # (C, 256, 1, 1, 1)
        image = self.GAP(bottleneck)  # (B, 256, 1, 1, 1)
        head_inputs = self.precls_conv(decoded)
        logits = []
        for i in range(x.shape[0]):
            cond = torch.cat([image[i:i + 1].expand(self.num_classes, -1, -1, -1, -1), task], 1)
            params = self.controller(cond).flatten(1)
            logits.append(self._dynamic_heads(head_inputs[i], params))
        return torch.sigmoid(torch.stack(logits))

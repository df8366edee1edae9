"""MONAI SegResNet as used by SuPreM (blocks_down [1,2,2,4], blocks_up [1,1,1], init_filters 16; 4.70M params)."""
from __future__ import annotations

from typing import Sequence

from monai.networks.nets import SegResNet


class SuPreMSegResNet(SegResNet):
    """SegResNet with SuPreM's configuration; ``deep_supervision`` is accepted and ignored. Input divisible by 8."""


    def __init__(self, num_input_channels: int, num_outputs: int, init_filters: int = 16,
                 blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
                 dropout_prob: float | None = 0.0) -> None:
        super().__init__(spatial_dims=3, init_filters=init_filters, in_channels=num_input_channels,
                         out_channels=num_outputs, dropout_prob=dropout_prob or None,
                         blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up))
        self.deep_supervision = False

"""The one tile count (``count_network_calls``) is what the sliding window really does, 3D and 2D, so the budget's
final-validation reserve (``training/reserve.py``) counts the calls prediction makes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import hippo_cases, hippo_image

from suprem_auto.imageio import read_images
from suprem_auto.inference.sliding_window import count_network_calls, predict_sliding_window
from suprem_auto.training.reserve import network_calls


class CountingNet(nn.Module):
    """A 1x1 convolution that counts its calls (3D, or 2D for slice-wise prediction)."""

    def __init__(self, two_d: bool) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if two_d else nn.Conv3d)(1, 2, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


@pytest.mark.parametrize("patch, tile_batch", [((24, 32, 24), 1), ((24, 32, 24), 3), ((40, 56, 40), 2),
                                                ((32, 32), 4)])
def test_counted_calls_are_the_calls_the_window_makes(patch, tile_batch):
    images, _ = read_images([hippo_image(hippo_cases(1)[0])])
    data = torch.from_numpy(images)
    net = CountingNet(len(patch) == 2).eval()
    predict_sliding_window(net, data, patch, 2, mirror_axes=None, tile_batch_size=tile_batch, device="cpu",
                           progress=False, precision="fp32")
    expected = count_network_calls(data.shape[1:], patch, tile_batch)
    assert net.calls == expected
    assert network_calls(data.shape[1:], patch, tile_batch) == expected

"""Sliding-window inference: tiling, Gaussian weighting, mirroring, 2D mode, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from suprem_auto.inference.sliding_window import (compute_tile_starts, gaussian_importance_map, mirror_combinations,
                                                  predict_sliding_window)

pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _conv_net(dims: int, in_ch: int, out_ch: int, kernel: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    net = nn.Sequential(conv(in_ch, 4, kernel, padding=kernel // 2), nn.LeakyReLU(), conv(4, out_ch, 1))
    return net.eval()


@pytest.mark.parametrize("seed", range(5))
def test_tile_starts_cover_every_voxel_within_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        patch = rng.integers(1, 40, size=3)
        shape = patch + rng.integers(0, 120, size=3)
        step = float(rng.choice([0.25, 0.33, 0.5, 0.7, 1.0]))
        starts = compute_tile_starts(shape.tolist(), patch.tolist(), step)
        for size, p, s in zip(shape, patch, starts):
            covered = np.zeros(size, dtype=bool)
            for start in s:
                assert 0 <= start <= size - p
                covered[start:start + p] = True
            assert covered.all(), (size, p, step, s)
            assert s[0] == 0 and s[-1] == size - p
            gaps = np.diff(s)
            assert np.all(gaps > 0)
            assert np.all(gaps <= np.ceil(p * step)), (size, p, step, s)


def test_tile_starts_reject_volume_smaller_than_patch() -> None:
    with pytest.raises(ValueError, match="smaller than the patch"):
        compute_tile_starts([10, 10, 10], [12, 8, 8])


def test_gaussian_importance_map_shape_and_sigma() -> None:
    g = gaussian_importance_map([33, 17, 9])
    assert g.shape == (33, 17, 9) and g.max() == pytest.approx(1.0)
    assert np.unravel_index(g.argmax(), g.shape) == (16, 8, 4)
    np.testing.assert_allclose(g, g[::-1, ::-1, ::-1], rtol=1e-6)
    sigma0 = 33 / 8  # one sigma from the centre along axis 0 the weight drops to exp(-1/2)
    expected = np.exp(-0.5 * (4.0 / sigma0) ** 2)
    assert g[16 + 4, 8, 4] == pytest.approx(expected, rel=1e-5)
    assert g.min() > 0


def test_mirror_combinations_count() -> None:
    assert len(mirror_combinations((0, 1, 2))) == 8
    assert len(mirror_combinations((0, 2))) == 4
    assert mirror_combinations(None) == [()]


@pytest.mark.parametrize("shape", [(1, 20, 21, 13), (2, 5, 30, 9)])
def test_pointwise_network_equals_whole_volume_application(shape: tuple) -> None:
    """A 1x1x1 network gives the same logits per voxel whatever the tiling: compare against one direct pass."""
    net = _conv_net(3, shape[0], 3, kernel=1)
    data = torch.randn(shape)
    out = predict_sliding_window(net, data, (8, 12, 8), 3, step=0.5, mirror_axes=(0, 1, 2), device="cpu",
                                 progress=False)
    with torch.no_grad():
        direct = net(data[None])[0]
    assert out.shape == (3, *shape[1:]) and out.dtype == torch.float32
    torch.testing.assert_close(out, direct, rtol=1e-4, atol=1e-5)


def test_single_tile_equals_network_output() -> None:
    net = _conv_net(3, 1, 2, kernel=3)
    data = torch.randn(1, 8, 12, 10)
    out = predict_sliding_window(net, data, (8, 12, 10), 2, mirror_axes=None, device="cpu", progress=False)
    with torch.no_grad():
        torch.testing.assert_close(out, net(data[None])[0], rtol=1e-4, atol=1e-5)


def test_mirroring_makes_prediction_flip_equivariant() -> None:
    """With mirroring over all axes, predicting a flipped case gives the flipped prediction (symmetric tiling)."""
    net = _conv_net(3, 1, 2, kernel=3, seed=1)
    data = torch.randn(1, 20, 20, 12)  # patch 8, step 0.5 -> starts 0,4,8,12 (mirror symmetric)
    patch = (8, 8, 12)
    flip = lambda t: torch.flip(t, (1, 2, 3))  # noqa: E731
    with_tta = predict_sliding_window(net, data, patch, 2, mirror_axes=(0, 1, 2), device="cpu", progress=False)
    with_tta_flipped = predict_sliding_window(net, flip(data), patch, 2, mirror_axes=(0, 1, 2), device="cpu",
                                              progress=False)
    torch.testing.assert_close(with_tta_flipped, flip(with_tta), rtol=1e-4, atol=1e-5)
    plain = predict_sliding_window(net, data, patch, 2, mirror_axes=None, device="cpu", progress=False)
    plain_flipped = predict_sliding_window(net, flip(data), patch, 2, mirror_axes=None, device="cpu", progress=False)
    assert not torch.allclose(plain_flipped, flip(plain), atol=1e-3)  # the network alone is not symmetric


def test_two_d_patch_predicts_slice_by_slice() -> None:
    net = _conv_net(2, 1, 3, kernel=3, seed=2)
    data = torch.randn(1, 5, 16, 16)
    out = predict_sliding_window(net, data, (16, 16), 3, mirror_axes=None, device="cpu", progress=False)
    with torch.no_grad():
        direct = torch.stack([net(data[:, z][None])[0] for z in range(5)], dim=1)
    torch.testing.assert_close(out, direct, rtol=1e-4, atol=1e-5)
    tta = predict_sliding_window(net, data, (16, 16), 3, mirror_axes=(0, 1), device="cpu", progress=False)
    tta_flipped = predict_sliding_window(net, torch.flip(data, (2, 3)), (16, 16), 3, mirror_axes=(0, 1), device="cpu",
                                         progress=False)
    torch.testing.assert_close(tta_flipped, torch.flip(tta, (2, 3)), rtol=1e-4, atol=1e-5)


def test_tile_batch_size_does_not_change_result() -> None:
    net = _conv_net(3, 1, 2, kernel=3, seed=3)
    data = torch.randn(1, 19, 23, 17)
    one = predict_sliding_window(net, data, (8, 8, 8), 2, mirror_axes=(0,), tile_batch_size=1, device="cpu",
                                 progress=False)
    many = predict_sliding_window(net, data, (8, 8, 8), 2, mirror_axes=(0,), tile_batch_size=5, device="cpu",
                                  progress=False)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)


def test_cpu_bf16_autocast_is_close_to_fp32() -> None:
    net = _conv_net(3, 1, 2, kernel=3, seed=4)
    data = torch.randn(1, 12, 12, 12)
    fp32 = predict_sliding_window(net, data, (8, 8, 8), 2, mirror_axes=None, device="cpu", progress=False)
    bf16 = predict_sliding_window(net, data, (8, 8, 8), 2, mirror_axes=None, device="cpu", progress=False,
                                  cpu_bf16=True)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)


def test_wrong_output_channels_is_a_clear_error() -> None:
    net = _conv_net(3, 1, 2, kernel=1)
    with pytest.raises(ValueError, match="output channels"):
        predict_sliding_window(net, torch.randn(1, 8, 8, 8), (8, 8, 8), 3, device="cpu", progress=False)


def test_nnunet_gaussian_peaks_where_nnunet_puts_it() -> None:
    """nnU-Net v2 puts the peak of its importance map at voxel p // 2 (off-centre for even sizes); ours is centred
    (flip-equivariant mirroring). The nnU-Net placement is what nnU-Net model folders predict with."""
    ours = gaussian_importance_map([40, 56, 41])
    theirs = gaussian_importance_map([40, 56, 41], nnunet_centre=True)
    assert np.unravel_index(np.argmax(theirs), theirs.shape) == (20, 28, 20)
    assert np.allclose(ours, ours[::-1, ::-1, ::-1])
    assert not np.allclose(theirs, theirs[::-1, ::-1, ::-1])
    assert np.allclose(ours[:, :, 20], ours.max(axis=2)) and np.allclose(theirs[:, :, 20], theirs.max(axis=2))

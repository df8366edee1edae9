"""Resampling of images, label maps and probabilities between voxel spacings.

Coordinates follow skimage's ``resize`` (and nnU-Net): output voxel ``j`` samples input coordinate
``(j + 0.5) * n_in / n_out - 0.5`` with edge values repeated. Anisotropic data (max/min spacing above a threshold,
one coarse axis) is resampled "separately along z": in-plane with the requested order, along the coarse axis with
``order_z`` (0 = nearest). Label maps are resampled one label at a time as a linearly interpolated one-hot mask
(per-voxel argmax, exact ties to the nearest-neighbour label), restricted to each label's bounding box.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> Tuple[int, ...]:
    """Shape after resampling from ``spacing`` to ``new_spacing`` (rounded, at least 1)."""
    return tuple(max(1, int(round(s * sp / nsp))) for s, sp, nsp in zip(shape, spacing, new_spacing))


def _anisotropic(spacing: Sequence[float], threshold: float) -> bool:
    spacing = np.asarray(spacing, dtype=float)
    return bool(spacing.max() / spacing.min() > threshold)


def _single_coarse_axis(spacing: Sequence[float]) -> Optional[int]:
    coarse = np.flatnonzero(np.asarray(spacing) == max(spacing))
    return int(coarse[0]) if coarse.size == 1 else None


def separate_z_axis(old_spacing: Sequence[float], new_spacing: Sequence[float], threshold: float = 3.0,
                    force_separate_z: Optional[bool] = None) -> Optional[int]:
    """The axis to resample separately (None: resample all axes together).

    ``force_separate_z`` False never separates; True uses the coarsest input axis; None (auto) looks at the input
    spacing when it is anisotropic (max/min above ``threshold``), else at the output spacing when that is, and
    separates along its coarsest axis if it is the only one (nnU-Net's rule: an anisotropic input with two coarse
    axes is resampled jointly, whatever the output spacing).
    """
    if force_separate_z is False:
        return None
    if force_separate_z:
        return _single_coarse_axis(old_spacing)
    for spacing in (old_spacing, new_spacing):
        if _anisotropic(spacing, threshold):
            return _single_coarse_axis(spacing)
    return None


def _source_coords(n_in: int, n_out: int) -> np.ndarray:
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    return np.clip(np.floor(_source_coords(n_in, n_out) + 0.5), 0, n_in - 1).astype(np.intp)


def _linear_weights(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.clip(_source_coords(n_in, n_out), 0, n_in - 1)
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (s - i0).astype(np.float32)


def _resize_axis(x: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """Resize one axis with order 0 (nearest) or 1 (linear); float32 output for order 1."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if order == 0:
        return np.take(x, _nearest_indices(n_in, n_out), axis=axis)
    if order != 1:
        raise ValueError(f"per-axis resize supports order 0 or 1, got {order}")
    i0, i1, w = _linear_weights(n_in, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w = w.reshape(shape)
    a = np.take(x, i0, axis=axis).astype(np.float32, copy=False)
    b = np.take(x, i1, axis=axis).astype(np.float32, copy=False)
    a *= 1 - w
    b *= w
    a += b
    return a


def _zoom(x: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    if tuple(x.shape) == tuple(new_shape):
        return x.astype(np.float32, copy=False)
    if order <= 1:
        out = x
        for axis, n in enumerate(new_shape):
            out = _resize_axis(out, axis, n, order)
        return out.astype(np.float32, copy=False)
    factors = [n / s for n, s in zip(new_shape, x.shape)]
    out = ndimage.zoom(x.astype(np.float32, copy=False), factors, order=order, mode="nearest", grid_mode=True,
                       output=np.float32)
    # splines overshoot; keep the input's value range (as skimage's resize does)
    return np.clip(out, x.min(), x.max(), out=out)


def resample_volume(x: np.ndarray, new_shape: Sequence[int], order: int, z_axis: Optional[int] = None,
                    order_z: int = 0) -> np.ndarray:
    """Resample one (z, y, x) float volume; with ``z_axis`` the in-plane and through-plane steps are separate."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(x.shape) == new_shape:
        return x.astype(np.float32, copy=False)
    if z_axis is None:
        return _zoom(x, new_shape, order)
    in_plane_shape = [n for a, n in enumerate(new_shape) if a != z_axis]
    moved = np.moveaxis(x, z_axis, 0)
    if order <= 1:
        tmp = moved
        for axis, n in zip((1, 2), in_plane_shape):
            tmp = _resize_axis(tmp, axis, n, order)
        tmp = tmp.astype(np.float32, copy=False)
    else:
        tmp = np.empty((moved.shape[0], *in_plane_shape), dtype=np.float32)
        for i in range(moved.shape[0]):
            tmp[i] = _zoom(moved[i], in_plane_shape, order)
    tmp = _resize_axis(tmp, 0, new_shape[z_axis], min(order_z, 1)) if order_z <= 1 else \
        ndimage.zoom(tmp, [new_shape[z_axis] / tmp.shape[0], 1, 1], order=order_z, mode="nearest", grid_mode=True)
    return np.ascontiguousarray(np.moveaxis(tmp, 0, z_axis), dtype=np.float32)


def resample_data(data: np.ndarray, new_shape: Sequence[int], order: int, z_axis: Optional[int] = None,
                  order_z: int = 0) -> np.ndarray:
    """Resample a float (c, z, y, x) array channel by channel."""
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        out[c] = resample_volume(data[c], new_shape, order, z_axis, order_z)
    return out


def _box_axis_plan(n_in: int, n_out: int, lo: int, hi: int, order: int) -> Tuple[slice, np.ndarray, np.ndarray, np.ndarray]:
    """Output range touched by input voxels [lo, hi) along one axis, with input indices relative to ``lo``."""
    if order == 0:
        i0 = _nearest_indices(n_in, n_out)
        i1, w = i0, np.zeros(n_out, dtype=np.float32)
    else:
        i0, i1, w = _linear_weights(n_in, n_out)
    touched = np.flatnonzero(((i0 >= lo) & (i0 < hi)) | ((i1 >= lo) & (i1 < hi) & (w > 0)))
    if touched.size == 0:
        return slice(0, 0), i0[:0], i1[:0], w[:0]
    sel = slice(int(touched[0]), int(touched[-1]) + 1)
    return sel, np.clip(i0[sel], lo, hi - 1) - lo, np.clip(i1[sel], lo, hi - 1) - lo, w[sel]


def _resize_box(mask: np.ndarray, plans: Sequence[Tuple[slice, np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    out = mask.astype(np.float32)
    for axis, (_, i0, i1, w) in enumerate(plans):
        shape = [1] * out.ndim
        shape[axis] = len(w)
        wr = w.reshape(shape)
        a = np.take(out, i0, axis=axis)
        if np.any(w > 0):
            a = a * (1 - wr) + np.take(out, i1, axis=axis) * wr
        out = a
    return out


def resample_segmentation(seg: np.ndarray, new_shape: Sequence[int], z_axis: Optional[int] = None,
                          order: int = 1, order_z: int = 0) -> np.ndarray:
    """Resample an integer (z, y, x) label map: each voxel takes the label whose interpolated one-hot indicator is
    largest (order 1 linear, order 0 nearest); an exact tie goes to the nearest-neighbour label when it is one of
    the tied labels, else to the smallest tied label. Each label is interpolated only inside its bounding box."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(seg.shape) == new_shape:
        return seg.copy()
    axis_orders = [order] * 3
    if z_axis is not None:
        axis_orders[z_axis] = min(order_z, 1)
    nearest = seg[np.ix_(*[_nearest_indices(n_in, n_out) for n_in, n_out in zip(seg.shape, new_shape)])]
    if all(o == 0 for o in axis_orders):
        return nearest
    labels = np.unique(seg)
    out = np.zeros(new_shape, dtype=seg.dtype)
    best = np.full(new_shape, -1.0, dtype=np.float32)
    offset = int(labels.min())
    boxes = ndimage.find_objects((seg - offset + 1).astype(np.int32))
    for label in labels:  # ascending, so among tied labels the smallest is kept unless the nearest one wins
        box = boxes[int(label) - offset]
        if box is None:
            continue
        # one voxel of margin so interpolation sees the label's edge fall to zero
        box = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, seg.shape))
        axis_plans = [_box_axis_plan(n_in, n_out, b.start, b.stop, o)
                      for n_in, n_out, b, o in zip(seg.shape, new_shape, box, axis_orders)]
        if any(p[0].stop <= p[0].start for p in axis_plans):
            continue
        score = _resize_box(seg[box] == label, axis_plans)
        target = tuple(p[0] for p in axis_plans)
        best_view, out_view = best[target], out[target]
        wins = (score > best_view) | ((score == best_view) & (nearest[target] == label))
        out_view[wins] = label
        best_view[wins] = score[wins]
    return out

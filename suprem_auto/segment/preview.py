"""A preview PNG: three orthogonal slices (axial, coronal, sagittal) with the labels drawn over the image.

Panels are resampled (nearest) to square pixels of the finest spacing, so anatomy keeps its proportions; every
source voxel stays visible. Labels are drawn opaque in their colour (``label_colour``), over the image shown in the
HU window [-175, 250]. Each panel cuts through the slice holding the most labelled voxels (the middle when none).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from suprem_auto.segment.pipeline import WINDOW_HU

# 20 distinct colours (matplotlib's tab20); label value v gets PALETTE[(v - 1) % 20]
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
    (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148),
    (227, 119, 194), (247, 182, 210), (127, 127, 127), (199, 199, 199), (188, 189, 34), (219, 219, 141),
    (23, 190, 207), (158, 218, 229))


def label_colour(value: int) -> Tuple[int, int, int]:
    """RGB colour of a label value (>= 1) in the preview."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def preview_slices(labels: np.ndarray) -> List[int]:
    """Per axis (z, y, x) the slice index with the most labelled voxels, or the middle slice when there are none."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(labels, axis=other)
        out.append(int(np.argmax(counts)) if counts.any() else labels.shape[axis] // 2)
    return out


def _resample_indices(n: int, spacing: float, pixel: float) -> np.ndarray:
    size = max(1, int(round(n * spacing / pixel)))
    return np.minimum(((np.arange(size) + 0.5) * pixel / spacing).astype(int), n - 1)


def panel_shapes(shape: Sequence[int], spacing: Sequence[float]) -> List[Tuple[int, int]]:
    """(rows, columns) of the axial (y, x), coronal (z, x) and sagittal (z, y) panels."""
    pixel = float(min(spacing))
    sizes = [len(_resample_indices(int(n), float(s), pixel)) for n, s in zip(shape, spacing)]
    return [(sizes[1], sizes[2]), (sizes[0], sizes[2]), (sizes[0], sizes[1])]


def _panel(image: np.ndarray, labels: np.ndarray, rows: Tuple[int, float], cols: Tuple[int, float],
           pixel: float) -> np.ndarray:
    r = _resample_indices(image.shape[0], rows[1], pixel)
    c = _resample_indices(image.shape[1], cols[1], pixel)
    lo, hi = WINDOW_HU
    grey = (np.clip((image[np.ix_(r, c)] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    lab = labels[np.ix_(r, c)]
    for value in np.unique(lab[lab > 0]):
        rgb[lab == value] = label_colour(int(value))
    return rgb


def render_preview(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """RGB uint8 array: the three panels side by side (black below the shorter ones). Axes (z, y, x); the
    through-plane axis z is drawn with its high end at the top."""
    pixel = float(min(spacing))
    z, y, x = preview_slices(labels)
    sz, sy, sx = (float(s) for s in spacing)
    flip = slice(None, None, -1)
    panels = [_panel(image[z], labels[z], (0, sy), (0, sx), pixel),
              _panel(image[flip, y, :], labels[flip, y, :], (0, sz), (0, sx), pixel),
              _panel(image[flip, :, x], labels[flip, :, x], (0, sz), (0, sy), pixel)]
    height = max(p.shape[0] for p in panels)
    canvas = np.zeros((height, sum(p.shape[1] for p in panels), 3), dtype=np.uint8)
    col = 0
    for p in panels:
        canvas[:p.shape[0], col:col + p.shape[1]] = p
        col += p.shape[1]
    return canvas


def write_preview(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], path: Path) -> Path:
    """Render and write the preview PNG atomically."""
    from PIL import Image

    from suprem_auto.utils.atomic import atomic_write

    rgb = render_preview(image, labels, spacing)
    return atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"), suffix=".png")

"""Intensity normalization schemes (one per channel, parameters from the plans)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

SCHEMES = ("ct", "zscore", "window", "none", "rescale_0_1")
EPS = 1e-8


def _zscore(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return (x - x.mean()) / max(float(x.std()), EPS)
    values = x[mask]
    if values.size == 0:
        return np.zeros_like(x)
    out = np.zeros_like(x)
    out[mask] = (values - values.mean()) / max(float(values.std()), EPS)
    return out


def normalize_channel(x: np.ndarray, scheme: Dict[str, Any], mask: np.ndarray | None) -> np.ndarray:
    """Normalize one float32 (z, y, x) channel. ``mask`` (inside the nonzero region) is used when ``use_mask``."""
    name = scheme["scheme"]
    params = scheme.get("params", {})
    if name == "ct":
        x = np.clip(x, params["lower"], params["upper"])
        return (x - params["mean"]) / max(float(params["std"]), EPS)
    if name == "zscore":
        return _zscore(x, mask if scheme.get("use_mask") else None)
    if name == "window":
        lower, upper = float(params["lower"]), float(params["upper"])
        out_min, out_max = float(params.get("out_min", 0.0)), float(params.get("out_max", 1.0))
        x = np.clip(x, lower, upper)
        return (x - lower) / (upper - lower) * (out_max - out_min) + out_min
    if name == "rescale_0_1":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / max(hi - lo, EPS)
    if name == "none":
        return x
    raise ValueError(f"unknown normalization scheme '{name}' (known: {', '.join(SCHEMES)})")


def normalize(images: np.ndarray, seg: np.ndarray, schemes: Sequence[Dict[str, Any]]) -> np.ndarray:
    """Normalize every channel of (c, z, y, x) images in place order; ``seg >= 0`` marks the nonzero region."""
    if len(schemes) != images.shape[0]:
        raise ValueError(f"plans give {len(schemes)} normalization schemes for {images.shape[0]} image channels")
    mask = seg[0] >= 0
    out = np.empty(images.shape, dtype=np.float32)
    for c, scheme in enumerate(schemes):
        out[c] = normalize_channel(images[c].astype(np.float32, copy=False), scheme, mask)
    return out

"""Warn when an image to predict does not look like what the model was trained on (CT vs MR, wrong scale).

The plans know the training modality (the normalisation scheme: ``ct``/``window`` are Hounsfield-unit schemes) and
the training intensities (``foreground_intensity_properties_per_channel``: percentiles 0.5 and 99.5 of the
foreground). Two checks per channel, each giving one warning line naming the file:

* modality: a CT model given an image with no voxel below -200 (no air, no fat: not HU), or a non-CT model given an
  image where at least 1 % of the voxels are at or below -500 (air in HU: a CT);
* scale: the image's 0.5-99.5 percentile range does not even touch the training foreground range widened by its own
  width on both sides.

These are warnings, not errors: an unusual but valid scan still gets predicted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, Path]
CT_SCHEMES = ("ct", "window")
AIR_HU = -500.0          # at or below: air in Hounsfield units
NOT_HU_FLOOR = -200.0    # a CT (air, lung, fat) always has voxels below this
AIR_SHARE = 0.01         # share of air voxels that marks an image as CT
MAX_SAMPLES = 1_000_000  # percentiles are computed on at most this many voxels (a regular subsample)


def _sample(channel: np.ndarray) -> np.ndarray:
    flat = np.asarray(channel).reshape(-1)
    step = max(1, flat.size // MAX_SAMPLES)
    return flat[::step].astype(np.float32, copy=False)


def _training_range(props: Mapping[str, Any]) -> Optional[tuple]:
    lo, hi = props.get("percentile_00_5"), props.get("percentile_99_5")
    if lo is None or hi is None or not np.isfinite([lo, hi]).all():
        return None
    return float(lo), float(hi)


def _scheme(plans: Mapping[str, Any], configuration: Optional[str], channel: int) -> Optional[str]:
    configs = plans.get("configurations", {})
    config = configs.get(configuration) if configuration else next(iter(configs.values()), None)
    norms = (config or {}).get("normalization", [])
    return norms[channel].get("scheme") if channel < len(norms) else None


def intensity_warnings(images: np.ndarray, files: Sequence[PathLike], plans: Mapping[str, Any],
                       configuration: Optional[str] = None) -> List[str]:
    """One line per channel of ``images`` (``(c, z, y, x)`` as read) that looks unlike the training data."""
    fingerprint = plans.get("foreground_intensity_properties_per_channel", {}) or {}
    lines: List[str] = []
    for c in range(images.shape[0]):
        name = files[c] if c < len(files) else f"channel {c}"
        values = _sample(images[c])
        if values.size == 0:
            continue
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        air = float(np.mean(values <= AIR_HU))
        props = fingerprint.get(str(c), {}) or {}
        trained = _training_range(props)
        trained_text = f" (training foreground {trained[0]:.4g} to {trained[1]:.4g})" if trained else ""
        ct_model = _scheme(plans, configuration, c) in CT_SCHEMES or (trained is not None and trained[0] <= AIR_HU)
        if ct_model and float(values.min()) > NOT_HU_FLOOR:
            lines.append(f"{name}: warning: the model was trained on CT in Hounsfield units{trained_text}, but this "
                         f"image has no voxel below {NOT_HU_FLOOR:.0f} (range {lo:.4g} to {hi:.4g}); is it an MR "
                         "or a rescaled image?")
            continue
        if not ct_model and air >= AIR_SHARE:
            lines.append(f"{name}: warning: {100 * air:.0f} % of the voxels are at or below {AIR_HU:.0f} (air in "
                         f"Hounsfield units: a CT?), but the model was not trained on CT{trained_text}")
            continue
        if trained is not None:
            width = max(trained[1] - trained[0], 1e-6)
            if hi < trained[0] - width or lo > trained[1] + width:
                lines.append(f"{name}: warning: intensities {lo:.4g} to {hi:.4g} are far outside the training "
                             f"foreground {trained[0]:.4g} to {trained[1]:.4g}; wrong modality or scaling?")
    return lines

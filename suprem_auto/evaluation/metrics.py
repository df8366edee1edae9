"""Per-class segmentation metrics for one case, in physical units (mm, ml).

A *class* is a label value (``1``) or a region, i.e. a tuple of label values evaluated as one mask (``(1, 2)``).
Arrays are ``(z, y, x)`` label maps; ``spacing`` is ``(z, y, x)`` in mm (anisotropic spacing is supported).

Metrics per class (keys of the dict :func:`compute_class_metrics` returns):

- ``dice`` = 2TP / (2TP + FP + FN), ``iou`` = TP / (TP + FP + FN)
- ``nsd``: normalized surface Dice at ``nsd_tolerance_mm``: the fraction of reference and predicted surface voxels
  lying within the tolerance of the other mask's surface (surface voxels = mask minus its 6-connected binary
  erosion; voxels outside the image count as background; distance = Euclidean distance in mm between voxel
  centres, ``scipy.ndimage.distance_transform_edt(sampling=spacing)``; a voxel within exactly the tolerance counts).
- ``hd95``: robust Hausdorff distance in mm = max of the two directed 95th percentiles (prediction surface to
  reference surface and back; linear interpolation), as MONAI and DeepMind's ``surface-distance`` define it.
- ``tp``, ``fp``, ``fn``, ``tn`` voxel counts, ``n_ref`` / ``n_pred`` (voxels in reference / prediction) and
  ``volume_ref_ml``, ``volume_pred_ml``, ``volume_tp_ml``, ``volume_fp_ml``, ``volume_fn_ml``.
- ``empty_reference`` / ``empty_prediction`` flags.

Ignore label: voxels where the *reference* holds ``ignore_label`` are removed from both masks before anything is
computed (counts, volumes and surfaces), so they are neither TP, FP, FN nor TN.

Empty-mask policy (what a clinician reading the table sees):

============================  =====  =====  =====  =====  ===================================================
reference / prediction        Dice   IoU    NSD    HD95   meaning
============================  =====  =====  =====  =====  ===================================================
both non-empty                value  value  value  value  normal case
both empty                    NaN    NaN    NaN    NaN    correctly absent; nothing to score (as nnU-Net)
reference empty, pred not     0      0      0      NaN    false-positive structure; its volume is ``volume_fp_ml``
reference not, pred empty     0      0      0      NaN    missed structure; its volume is ``volume_fn_ml``
============================  =====  =====  =====  =====  ===================================================

NaN means "undefined" and is excluded from means (``nanmean``); the flags say why a value is missing, and the folder
summary counts these cases per class. HD95 is undefined whenever either surface is missing (there is no finite
distance to report), so a mean HD95 only covers cases where both masks exist: always read it together with the
counts of missed and false-positive cases. In JSON, NaN is written as ``null``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

ClassSpec = Union[int, Tuple[int, ...]]
DEFAULT_NSD_TOLERANCE_MM = 2.0
METRIC_NAMES = ("dice", "iou", "nsd", "hd95", "tp", "fp", "fn", "tn", "n_ref", "n_pred", "volume_ref_ml",
                "volume_pred_ml", "volume_tp_ml", "volume_fp_ml", "volume_fn_ml", "empty_reference",
                "empty_prediction")
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)


def normalize_class(label: Union[int, Sequence[int]]) -> ClassSpec:
    """An int stays an int; a list/tuple becomes a tuple of ints (one-element tuples become the int)."""
    if isinstance(label, (list, tuple)):
        values = tuple(int(v) for v in label)
        return values[0] if len(values) == 1 else values
    return int(label)


def class_key(label: Union[int, Sequence[int]]) -> str:
    """String key of a class for tables and JSON: ``1`` -> ``"1"``, ``(1, 2)`` -> ``"(1, 2)"``."""
    return str(normalize_class(label))


def class_mask(segmentation: np.ndarray, label: Union[int, Sequence[int]]) -> np.ndarray:
    """Boolean mask of a label value or region (tuple of values)."""
    label = normalize_class(label)
    if isinstance(label, tuple):
        return np.isin(segmentation, label)
    return segmentation == label


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that touch the background (6-connectivity; outside the image is background)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_SURFACE_STRUCTURE, border_value=0)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box and pad one background voxel around it.

    Surfaces and distances on the crop equal those on the full image (every surface voxel lies in the box).
    """
    coords = np.argwhere(a | b)
    lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    return np.pad(a[box], 1), np.pad(b[box], 1)


def surface_distances(reference: np.ndarray, prediction: np.ndarray,
                      spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each reference surface voxel to the prediction surface, and back.

    Both masks must be non-empty.
    """
    ref, pred = _crop_to_union(reference.astype(bool), prediction.astype(bool))
    ref_surface, pred_surface = surface_voxels(ref), surface_voxels(pred)
    spacing = [float(s) for s in spacing]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    return to_pred[ref_surface], to_ref[pred_surface]


def hd95_and_nsd(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                 tolerance_mm: float) -> Tuple[float, float]:
    """HD95 (mm) and normalized surface Dice of two non-empty masks."""
    ref_to_pred, pred_to_ref = surface_distances(reference, prediction, spacing)
    hd95 = max(float(np.percentile(ref_to_pred, 95)), float(np.percentile(pred_to_ref, 95)))
    within = np.count_nonzero(ref_to_pred <= tolerance_mm) + np.count_nonzero(pred_to_ref <= tolerance_mm)
    nsd = within / (ref_to_pred.size + pred_to_ref.size)
    return hd95, float(nsd)


def compute_class_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                          valid: Optional[np.ndarray] = None,
                          nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
                          surface_metrics: bool = True) -> Dict[str, Any]:
    """All metrics of one class from its boolean reference and prediction masks.

    ``valid`` (optional boolean mask) marks the voxels that count; the others (ignore label) are dropped.
    ``surface_metrics=False`` skips NSD and HD95 (left NaN) for speed.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} != prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {reference.ndim}D array")
    ref = reference.astype(bool)
    pred = prediction.astype(bool)
    n_valid = ref.size
    if valid is not None:
        ref = ref & valid
        pred = pred & valid
        n_valid = int(np.count_nonzero(valid))
    tp = int(np.count_nonzero(ref & pred))
    n_ref = int(np.count_nonzero(ref))
    n_pred = int(np.count_nonzero(pred))
    fp, fn = n_pred - tp, n_ref - tp
    tn = n_valid - tp - fp - fn
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    metrics: Dict[str, Any] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "n_ref": n_ref, "n_pred": n_pred,
                               "volume_ref_ml": n_ref * voxel_ml, "volume_pred_ml": n_pred * voxel_ml,
                               "volume_tp_ml": tp * voxel_ml, "volume_fp_ml": fp * voxel_ml,
                               "volume_fn_ml": fn * voxel_ml,
                               "empty_reference": n_ref == 0, "empty_prediction": n_pred == 0}
    if n_ref == 0 and n_pred == 0:
        metrics.update(dice=math.nan, iou=math.nan, nsd=math.nan, hd95=math.nan)
    elif n_ref == 0 or n_pred == 0:
        metrics.update(dice=0.0, iou=0.0, nsd=0.0, hd95=math.nan)
    else:
        hd95, nsd = hd95_and_nsd(ref, pred, spacing, nsd_tolerance_mm) if surface_metrics else (math.nan, math.nan)
        metrics.update(dice=2 * tp / (2 * tp + fp + fn), iou=tp / (tp + fp + fn), nsd=nsd, hd95=hd95)
    return {name: metrics[name] for name in METRIC_NAMES}


def dice_from_masks(reference: np.ndarray, prediction: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """Dice alone (cheap; NaN when both masks are empty), following the same policy as :func:`compute_class_metrics`."""
    if valid is not None:
        reference, prediction = reference & valid, prediction & valid
    tp = int(np.count_nonzero(reference & prediction))
    total = int(np.count_nonzero(reference)) + int(np.count_nonzero(prediction))
    return math.nan if total == 0 else 2 * tp / total


def _squeeze_channel(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a (z, y, x) or (1, z, y, x) label map, got shape {array.shape}")
    return array


def evaluate_arrays(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                    labels: Sequence[Union[int, Sequence[int]]], ignore_label: Optional[int] = None,
                    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
                    surface_metrics: bool = True) -> Dict[str, Dict[str, Any]]:
    """Metrics of one case held in memory: ``{class_key: {metric: value}}``.

    ``reference`` and ``prediction`` are ``(z, y, x)`` or ``(1, z, y, x)`` label maps on the same grid, ``spacing``
    is ``(z, y, x)`` in mm, ``labels`` lists label values and/or regions (tuples of values).
    ``surface_metrics=False`` skips NSD and HD95 (NaN) when only overlap metrics are needed (e.g. during training).
    """
    reference = _squeeze_channel(reference, "reference")
    prediction = _squeeze_channel(prediction, "prediction")
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} != prediction shape {prediction.shape}")
    valid = None if ignore_label is None else reference != ignore_label
    return {class_key(label): compute_class_metrics(class_mask(reference, label), class_mask(prediction, label),
                                                    spacing, valid, nsd_tolerance_mm, surface_metrics)
            for label in labels}

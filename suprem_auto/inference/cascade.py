"""The cascade (``3d_cascade_fullres``) at prediction: the previous stage's segmentation, mapped to the full-res
preprocessed grid and one-hot encoded (one channel per foreground label), is appended to the image channels.

nnU-Net's rule: the ``3d_lowres`` model predicts the case first; its label map is resampled to the grid of the
cascade's preprocessed data (same crop, the cascade's spacing) and becomes ``len(foreground_labels)`` extra input
channels. Training uses the same mapping on the low-res model's cross-validation predictions
(``training/cascade.py``), so a case is encoded identically at training and at prediction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from suprem_auto.imageio.cropping import bbox_slices
from suprem_auto.planning import plans_view
from suprem_auto.preprocessing.resampling import resample_segmentation, separate_z_axis


def previous_stage_of(plans: Mapping[str, Any], configuration: str) -> Optional[str]:
    """The configuration whose predictions ``configuration`` takes as inputs (None: not a cascade stage)."""
    return plans_view(plans).configuration(configuration).previous_stage


def previous_stage_channels(plans: Mapping[str, Any], configuration: str, foreground_labels: Sequence[int]) -> int:
    """Extra input channels of ``configuration``: one per foreground label for a cascade stage, else 0."""
    return len(foreground_labels) if previous_stage_of(plans, configuration) else 0


def to_preprocessed_grid(seg: np.ndarray, pprops: Mapping[str, Any], plans: Mapping[str, Any],
                         configuration: str) -> np.ndarray:
    """A label map ``(z, y, x)`` (or ``(1, z, y, x)``) in ``read_images`` array space -> ``(1, z', y', x')`` int16 on
    the preprocessed grid described by ``pprops`` (transposed, cropped to the case's bbox and resampled as
    preprocessing resamples segmentations)."""
    seg = np.asarray(seg)
    seg = seg[0] if seg.ndim == 4 else seg
    transpose = [int(a) for a in pprops["transpose_forward"]]
    seg_t = seg.transpose(transpose)
    expected = [int(s) for s in pprops["shape_before_cropping"]]
    if list(seg_t.shape) != expected:
        raise ValueError(f"previous-stage segmentation has shape {list(seg_t.shape)} after transposition, the case "
                         f"has {expected}: it belongs to another image")
    cropped = seg_t[bbox_slices(pprops["bbox_used_for_cropping"])]
    resampling = plans_view(plans).configuration(configuration).resampling
    z_axis = separate_z_axis(pprops["spacing_transposed"], pprops["target_spacing"],
                             float(resampling.get("anisotropy_threshold", 3.0)), resampling.get("force_separate_z"))
    out = resample_segmentation(cropped.astype(np.int16, copy=False), pprops["shape_after_resampling"], z_axis,
                                int(resampling.get("seg_order", 1)), int(resampling.get("order_z", 0)))
    return out[None].astype(np.int16, copy=False)


def one_hot(seg: np.ndarray, foreground_labels: Sequence[int]) -> np.ndarray:
    """``(1, z, y, x)`` labels -> ``(len(foreground_labels), z, y, x)`` float32 0/1 (other values, e.g. -1: all 0)."""
    seg = np.asarray(seg)
    seg = seg[0] if seg.ndim == 4 else seg
    return np.stack([seg == label for label in foreground_labels]).astype(np.float32) if len(foreground_labels) \
        else np.zeros((0, *seg.shape), dtype=np.float32)


class PreviousStage:
    """Where a cascade's previous-stage segmentation comes from; :meth:`append_to` adds its one-hot channels."""

    def __init__(self, foreground_labels: Sequence[int]) -> None:
        self.foreground_labels = [int(v) for v in foreground_labels]

    @property
    def num_channels(self) -> int:
        return len(self.foreground_labels)

    def segmentation(self, case_id: Optional[str], images: np.ndarray, props: Dict[str, Any],
                     pprops: Dict[str, Any]) -> np.ndarray:
        """``(1, z', y', x')`` labels on the preprocessed grid of ``pprops``."""
        raise NotImplementedError

    def append_to(self, data: np.ndarray, case_id: Optional[str], images: np.ndarray, props: Dict[str, Any],
                  pprops: Dict[str, Any]) -> np.ndarray:
        """``data`` (c, z', y', x') with the one-hot previous-stage channels appended."""
        seg = self.segmentation(case_id, images, props, pprops)
        if tuple(seg.shape[1:]) != tuple(data.shape[1:]):
            raise ValueError(f"case {case_id}: previous-stage segmentation {list(seg.shape[1:])} does not match the "
                             f"preprocessed image {list(data.shape[1:])}")
        return np.concatenate([np.asarray(data, dtype=np.float32), one_hot(seg, self.foreground_labels)])


class PreviousStageModel(PreviousStage):
    """The previous stage's model predicts the case (a :class:`~suprem_auto.inference.predictor.Predictor` of the
    ``3d_lowres`` model folder, without post-processing, as its validation predictions were made for training)."""

    def __init__(self, predictor: Any, plans: Mapping[str, Any], configuration: str,
                 foreground_labels: Sequence[int]) -> None:
        super().__init__(foreground_labels)
        self.predictor = predictor
        self.plans = plans
        self.configuration = configuration

    def segmentation(self, case_id: Optional[str], images: np.ndarray, props: Dict[str, Any],
                     pprops: Dict[str, Any]) -> np.ndarray:
        low, _ = self.predictor.predict_array(images, props)
        return to_preprocessed_grid(low, pprops, self.plans, self.configuration)


class GatheredPreviousStage(PreviousStage):
    """Segmentations already on the preprocessed grid: ``<folder>/<case>.npy`` (1, z', y', x') as gathered from the
    previous stage's cross-validation (``training/cascade.py``); used by a cascade fold's final validation."""

    def __init__(self, folder: Path, foreground_labels: Sequence[int]) -> None:
        super().__init__(foreground_labels)
        self.folder = Path(folder)

    def segmentation(self, case_id: Optional[str], images: np.ndarray, props: Dict[str, Any],
                     pprops: Dict[str, Any]) -> np.ndarray:
        path = self.folder / f"{case_id}.npy"
        if case_id is None or not path.is_file():
            raise FileNotFoundError(f"{path}: previous-stage segmentation missing (gathered by training the cascade)")
        return np.load(path)


def previous_stage_model_folder(model_folder: Path, previous_stage: str) -> Path:
    """``<trainer>__<plans>__<previous_stage>`` beside a ``<trainer>__<plans>__<cascade>`` model folder."""
    folder = Path(model_folder)
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise ValueError(f"{folder}: a cascade model folder must be named <trainer>__<plans>__<configuration> to "
                         f"find its previous stage '{previous_stage}'")
    return folder.parent / f"{parts[0]}__{parts[1]}__{previous_stage}"

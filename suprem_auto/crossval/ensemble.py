"""Ensemble saved probabilities (``<case>.npz``, key ``probabilities``, original array space) of several models."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import SimpleITK as sitk

from suprem_auto.dataset.labels import LabelSpec
from suprem_auto.imageio.sitk_io import file_ending as ending_of
from suprem_auto.imageio.sitk_io import smallest_label_dtype
from suprem_auto.utils.atomic import atomic_path


def channel_label_values(labels: LabelSpec) -> List[int]:
    """Label value of each softmax output channel (background first, ignore label excluded)."""
    return [v for v in sorted(labels.names) if v != labels.ignore_label]


def mean_probabilities(npz_files: Sequence[Path]) -> np.ndarray:
    """Average the ``probabilities`` arrays of several .npz files (float32)."""
    total = None
    for path in npz_files:
        with np.load(path, allow_pickle=False) as data:
            probs = data["probabilities"].astype(np.float32)
        if total is not None and probs.shape != total.shape:
            raise ValueError(f"{path}: probabilities of shape {probs.shape} do not match {total.shape}")
        total = probs if total is None else total + probs
    if total is None:
        raise ValueError("no probability files to ensemble")
    return total / len(npz_files)


def probabilities_to_labels(probs: np.ndarray, labels: LabelSpec) -> np.ndarray:
    """Turn averaged probabilities into a label map (argmax for softmax; regions by class order)."""
    if labels.has_regions:
        seg = np.zeros(probs.shape[1:], dtype=np.int16)
        for channel, value in enumerate(labels.regions_class_order):
            seg[probs[channel] > 0.5] = value
        return seg
    values = np.asarray(channel_label_values(labels))
    return values[np.argmax(probs, axis=0)]


def ensemble_folders(input_folders: Sequence[Path], output_folder: Path, labels: LabelSpec,
                     geometry_folder: Path, file_ending: str) -> Dict[str, Path]:
    """Average the .npz probabilities of the cases present in every input folder and write label maps.

    The geometry of each written map is copied from ``geometry_folder/<case><file_ending>`` (a reference or an
    earlier prediction of the same case), so the output lies on the input grid exactly.
    """
    input_folders = [Path(f) for f in input_folders]
    common = set.intersection(*[{p.stem for p in f.glob("*.npz")} for f in input_folders])
    written: Dict[str, Path] = {}
    for case in sorted(common):
        probs = mean_probabilities([f / f"{case}.npz" for f in input_folders])
        seg = probabilities_to_labels(probs, labels)
        template = sitk.ReadImage(str(Path(geometry_folder) / f"{case}{file_ending}"))
        image = sitk.GetImageFromArray(seg.astype(smallest_label_dtype(int(seg.max()), int(seg.min()))))
        image.CopyInformation(template)
        target = Path(output_folder) / f"{case}{file_ending}"
        with atomic_path(target, suffix=ending_of(target)) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        written[case] = target
    return written

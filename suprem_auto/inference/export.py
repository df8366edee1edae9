"""Write predictions: the label map in the input's exact geometry and, optionally, the probabilities (.npz)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from suprem_auto.imageio import write_segmentation
from suprem_auto.utils.atomic import atomic_path

PathLike = Union[str, Path]


def probabilities_path(output_folder: PathLike, case_id: str) -> Path:
    """Where the probabilities of a case go: ``<output>/<case>.npz``."""
    return Path(output_folder) / f"{case_id}.npz"


def segmentation_path(output_folder: PathLike, case_id: str, file_ending: str) -> Path:
    """Where the label map of a case goes: ``<output>/<case><file_ending>``."""
    return Path(output_folder) / f"{case_id}{file_ending}"


def write_probabilities(probabilities: np.ndarray, path: PathLike) -> Path:
    """Save ``(C, z, y, x)`` probabilities as float16 under key ``probabilities`` (compressed, atomic)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=np.asarray(probabilities, dtype=np.float16))
    return Path(path)


def write_case(segmentation: np.ndarray, props: Dict[str, Any], seg_path: PathLike,
               probabilities: Optional[np.ndarray] = None, prob_path: Optional[PathLike] = None) -> Path:
    """Write the label map (input geometry, reorientation undone) and, when given, the probabilities.

    The probabilities are written first so that an existing label map means the case is complete.
    """
    if probabilities is not None and prob_path is not None:
        write_probabilities(probabilities, prob_path)
    return write_segmentation(segmentation, seg_path, props)

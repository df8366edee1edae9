"""Replaying a connected-component post-processing decision on a predicted label map.

The decision (``postprocessing.json``) is made on validation predictions by
:func:`suprem_auto.evaluation.postprocessing.determine_postprocessing`; prediction only applies it, so the apply
side lives here, below evaluation. Connectivity is full (26 neighbours in 3D).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from suprem_auto.utils.atomic import load_json

PathLike = Union[str, Path]
#: the decision's file name, in a model folder (chosen on the cross-validation) or in fold_all (chosen by that run)
POSTPROCESSING_FILE = "postprocessing.json"


def class_values(label: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """The label values of a class: ``1`` -> ``(1,)``, a region ``[1, 2]`` -> ``(1, 2)``."""
    if isinstance(label, (list, tuple)):
        return tuple(int(v) for v in label)
    return (int(label),)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (full connectivity); an empty mask stays empty."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def keep_largest_component(segmentation: np.ndarray, values: Sequence[int], background: int = 0) -> np.ndarray:
    """Copy of ``segmentation`` where voxels of ``values`` outside their union's largest component become background."""
    mask = np.isin(segmentation, list(values))
    result = segmentation.copy()
    result[mask & ~largest_component(mask)] = background
    return result


def apply_postprocessing(segmentation: np.ndarray, pp: Dict[str, Any]) -> np.ndarray:
    """Replay a post-processing decision (its dict or its ``"apply"`` part) on a label map."""
    steps = pp.get("apply", pp)
    result = np.asarray(segmentation)
    if steps.get("keep_largest_foreground_component"):
        result = keep_largest_component(result, steps["foreground_labels"])
    for label in steps.get("keep_largest_component_of", []):
        result = keep_largest_component(result, class_values(label))
    return result


def load_postprocessing(path: PathLike) -> Dict[str, Any]:
    """Read and check a postprocessing JSON."""
    pp = load_json(path)
    steps = pp.get("apply") if isinstance(pp, dict) else None
    if not isinstance(steps, dict) or "keep_largest_foreground_component" not in steps:
        raise ValueError(f"{path}: not a postprocessing file (missing 'apply.keep_largest_foreground_component')")
    return pp

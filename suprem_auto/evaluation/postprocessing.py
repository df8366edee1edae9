"""Connected-component post-processing chosen on validation predictions (nnU-Net's rule).

1. Keep only the largest connected component of the union of all foreground labels (voxels of other components
   become background). Accepted only if the foreground mean Dice over the validation cases rises and no class's
   mean Dice gets worse.
2. Starting from the result of step 1, for each class (label or region) keep only that class's largest component.
   Accepted for the classes whose mean Dice rises. Each class is tested against the step-1 result alone (for plain
   labels this equals testing them one after the other; overlapping regions are tested independently).

Connectivity is full (26 neighbours in 3D). Dice follows the empty-mask policy of
:mod:`suprem_auto.evaluation.metrics` (NaN when both empty, excluded from means). The decision is saved as JSON;
:func:`suprem_auto.inference.postprocessing.apply_postprocessing` (re-exported here) replays it on a label map.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from suprem_auto.evaluation.evaluate import (EvaluationError, LabelList, case_name, list_label_files,
                                             run_parallel)
from suprem_auto.evaluation.metrics import class_key, class_mask, dice_from_masks, normalize_class
from suprem_auto.imageio import geometry_mismatch, read_segmentation, write_segmentation
from suprem_auto.inference.postprocessing import (apply_postprocessing, class_values,  # noqa: F401 - re-exported
                                                 keep_largest_component, largest_component, load_postprocessing)
from suprem_auto.utils.atomic import atomic_write_json

PathLike = Union[str, Path]
FORMAT_VERSION = 1


def _postprocess_file_job(job: Tuple[Path, Path, Dict[str, Any]]) -> Path:
    source, target, pp = job
    segmentation, props = read_segmentation(source)
    return write_segmentation(apply_postprocessing(segmentation[0], pp), target, props)


def apply_postprocessing_to_folder(input_folder: PathLike, output_folder: PathLike,
                                   pp: Union[Dict[str, Any], PathLike], file_ending: str = ".nii.gz",
                                   num_processes: int = 1) -> List[Path]:
    """Post-process every ``*<file_ending>`` label map of ``input_folder`` into ``output_folder`` (atomic writes)."""
    if not isinstance(pp, dict):
        pp = load_postprocessing(pp)
    files = list_label_files(input_folder, file_ending)
    if not files:
        raise EvaluationError(f"{input_folder}: no files ending in {file_ending}")
    jobs = [(f, Path(output_folder) / f.name, pp) for f in files]
    return list(run_parallel(_postprocess_file_job, jobs, num_processes, "postprocessing"))


def _class_dices(reference: np.ndarray, segmentation: np.ndarray, labels: Sequence[Any],
                 valid: Optional[np.ndarray]) -> Dict[str, float]:
    return {class_key(label): dice_from_masks(class_mask(reference, label), class_mask(segmentation, label), valid)
            for label in labels}


def _case_dices(job: Tuple[Path, Path, List[Any], Optional[int]]) -> Dict[str, Dict[str, float]]:
    """Dice of one case without post-processing, after step 1, and after each class's step on both starting points."""
    reference_file, prediction_file, labels, ignore_label = job
    reference, ref_props = read_segmentation(reference_file)
    prediction, pred_props = read_segmentation(prediction_file)
    diff = geometry_mismatch(ref_props["original_geometry"], pred_props["original_geometry"])
    if diff:
        raise EvaluationError(f"{prediction_file}: geometry differs from reference {reference_file}: {diff}")
    reference, prediction = reference[0], prediction[0]
    valid = None if ignore_label is None else reference != ignore_label
    foreground_values = sorted({v for label in labels for v in class_values(label)})
    starts = {"none": prediction, "foreground": keep_largest_component(prediction, foreground_values)}
    result: Dict[str, Dict[str, float]] = {}
    for name, start in starts.items():
        result[name] = _class_dices(reference, start, labels, valid)
        result[name + "+class"] = {
            class_key(label): dice_from_masks(class_mask(reference, label),
                                              class_mask(keep_largest_component(start, class_values(label)), label), valid)
            for label in labels}
    return result


def _mean_dice(cases: Sequence[Dict[str, Dict[str, float]]], branch: str, keys: Sequence[str]) -> Dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent everywhere gives NaN
        means = {k: float(np.nanmean([c[branch][k] for c in cases])) for k in keys}
        means["foreground_mean"] = float(np.nanmean([means[k] for k in keys])) if keys else math.nan
    return means


def _json_floats(values: Dict[str, float]) -> Dict[str, Optional[float]]:
    return {k: None if math.isnan(v) else v for k, v in values.items()}


def determine_postprocessing(ref_folder: PathLike, pred_folder: PathLike, labels: LabelList,
                             file_ending: str = ".nii.gz", out_json: Optional[PathLike] = None,
                             ignore_label: Optional[int] = None, num_processes: int = 1) -> Dict[str, Any]:
    """Choose the post-processing on validation predictions and save the decision as JSON.

    Returns (and writes to ``out_json``, default ``<pred_folder>/postprocessing.json``) a dict with
    ``apply`` (what :func:`apply_postprocessing` replays), the mean Dice per class before, after step 1 and after
    everything, and each class's decision. Only cases with a prediction are used.
    """
    pred_folder = Path(pred_folder)
    references = list_label_files(ref_folder, file_ending)
    predicted = {p.name for p in list_label_files(pred_folder, file_ending)}
    matched = [r for r in references if r.name in predicted]
    if not matched:
        raise EvaluationError(f"{pred_folder}: no prediction matches a reference in {ref_folder} ({file_ending})")
    labels = [normalize_class(label) for label in labels]
    if not labels:
        raise ValueError("determine_postprocessing needs at least one foreground label")
    keys = [class_key(label) for label in labels]
    jobs = [(r, pred_folder / r.name, labels, ignore_label) for r in matched]
    cases = list(run_parallel(_case_dices, jobs, num_processes, "postprocessing search"))

    before = _mean_dice(cases, "none", keys)
    after_foreground = _mean_dice(cases, "foreground", keys)
    use_foreground = (after_foreground["foreground_mean"] > before["foreground_mean"]
                      and not any(after_foreground[k] < before[k] for k in keys))
    start = "foreground" if use_foreground else "none"
    start_dice = after_foreground if use_foreground else before
    with_class = _mean_dice(cases, start + "+class", keys)
    decisions = {k: {"applied": bool(with_class[k] > start_dice[k]), "dice_before": start_dice[k],
                     "dice_after": with_class[k]} for k in keys}
    chosen = [label for label, k in zip(labels, keys) if decisions[k]["applied"]]
    final = {k: with_class[k] if decisions[k]["applied"] else start_dice[k] for k in keys}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        final["foreground_mean"] = float(np.nanmean([final[k] for k in keys]))
    pp = {
        "format_version": FORMAT_VERSION,
        "apply": {"keep_largest_foreground_component": bool(use_foreground),
                  "foreground_labels": sorted({v for label in labels for v in class_values(label)}),
                  "keep_largest_component_of": [list(c) if isinstance(c, tuple) else c for c in chosen]},
        "connectivity": "full",
        "labels": keys, "file_ending": file_ending, "ignore_label": ignore_label,
        "num_cases": len(cases), "cases": [case_name(r, file_ending) for r in matched],
        "dice_before": _json_floats(before),
        "dice_after_foreground_step": _json_floats(after_foreground),
        "dice_after": _json_floats(final),
        "per_class_decisions": {k: {"applied": v["applied"],
                                    **_json_floats({"dice_before": v["dice_before"], "dice_after": v["dice_after"]})}
                                for k, v in decisions.items()},
    }
    atomic_write_json(out_json if out_json is not None else pred_folder / "postprocessing.json", pp)
    return pp

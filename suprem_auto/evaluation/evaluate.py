"""Evaluate a folder of predicted label maps against a folder of references.

Files are matched by name (``<case><file_ending>``). Writes ``metrics_per_case.csv`` (one row per case and class)
and ``summary.json`` (per-case metrics, per-class means, foreground mean, counts, missing predictions). The empty-mask
policy is documented in :mod:`suprem_auto.evaluation.metrics`; NaN is written as ``null`` in the JSON.
"""
from __future__ import annotations

import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from tqdm import tqdm

from suprem_auto.evaluation.metrics import (DEFAULT_NSD_TOLERANCE_MM, class_key, evaluate_arrays,
                                            normalize_class)
from suprem_auto.imageio import geometry_mismatch, read_segmentation
from suprem_auto.utils.atomic import atomic_path, atomic_write_json

PathLike = Union[str, Path]
LabelList = Sequence[Union[int, Sequence[int]]]
SUMMARY_FILE = "summary.json"
PER_CASE_FILE = "metrics_per_case.csv"
MEAN_METRICS = ("dice", "iou", "nsd", "hd95", "tp", "fp", "fn", "tn", "n_ref", "n_pred", "volume_ref_ml",
                "volume_pred_ml", "volume_tp_ml", "volume_fp_ml", "volume_fn_ml")
POLICY = ("NaN/null = undefined, excluded from means. Both empty: dice/iou/nsd/hd95 NaN. Reference empty, "
          "prediction not (false positive) or prediction empty, reference not (missed): dice/iou/nsd 0, hd95 NaN.")

__all__ = ["evaluate_arrays", "evaluate_case", "evaluate_folder", "labels_in_references", "summarize"]


class EvaluationError(ValueError):
    """Inputs cannot be evaluated; the message names the file and the problem."""


def case_name(path: PathLike, file_ending: str) -> str:
    """File name without its ending."""
    name = Path(path).name
    return name[: -len(file_ending)] if name.endswith(file_ending) else name


def list_label_files(folder: PathLike, file_ending: str) -> List[Path]:
    """Sorted label files of a folder with the given ending (hidden/temporary files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: folder does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(file_ending)
                  and not p.name.startswith("."))


def evaluate_case(reference_file: PathLike, prediction_file: PathLike, labels: LabelList,
                  ignore_label: Optional[int] = None,
                  nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> Dict[str, Dict[str, Any]]:
    """Read one reference/prediction pair and compute its metrics; a geometry mismatch is an error naming the file."""
    reference, ref_props = read_segmentation(reference_file)
    prediction, pred_props = read_segmentation(prediction_file)
    diff = geometry_mismatch(ref_props["original_geometry"], pred_props["original_geometry"])
    if diff:
        raise EvaluationError(f"{prediction_file}: geometry differs from reference {reference_file}: {diff}")
    return evaluate_arrays(reference, prediction, ref_props["spacing"], labels, ignore_label, nsd_tolerance_mm)


def _evaluate_job(job: Tuple[Path, Path, List[Any], Optional[int], float]) -> Dict[str, Dict[str, Any]]:
    return evaluate_case(*job)


def _unique_values(path: Path) -> np.ndarray:
    return np.unique(read_segmentation(path)[0])


def run_parallel(function: Any, jobs: Sequence[Any], num_processes: int, description: str) -> Iterator[Any]:
    """Map ``function`` over ``jobs`` in order, in ``num_processes`` spawned workers, with a progress bar."""
    if num_processes <= 1 or len(jobs) <= 1:
        yield from tqdm(map(function, jobs), total=len(jobs), desc=description)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(num_processes, len(jobs)), mp_context=context) as pool:
        yield from tqdm(pool.map(function, jobs), total=len(jobs), desc=description)


def labels_in_references(reference_files: Sequence[PathLike], ignore_label: Optional[int] = None,
                         num_processes: int = 1) -> List[int]:
    """Foreground label values found in the reference files (background 0 and the ignore label left out)."""
    found: set = set()
    for values in run_parallel(_unique_values, [Path(p) for p in reference_files], num_processes, "scanning labels"):
        found.update(int(v) for v in values)
    return sorted(v for v in found if v != 0 and v != ignore_label)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def per_case_table(cases: Sequence[Dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (case, class) with every metric as a column."""
    rows = [{"case": c["case"], "class": key, **metrics} for c in cases for key, metrics in c["metrics"].items()]
    return pd.DataFrame(rows)


def summarize(cases: Sequence[Dict[str, Any]], class_keys: Sequence[str]) -> Dict[str, Any]:
    """Per-class means (NaN excluded), the foreground mean over classes and per-class counts of special cases."""
    mean: Dict[str, Dict[str, float]] = {}
    counts: Dict[str, Dict[str, int]] = {}
    for key in class_keys:
        values = [c["metrics"][key] for c in cases]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, reported as null
            mean[key] = {m: float(np.nanmean([float(v[m]) for v in values])) if values else math.nan
                         for m in MEAN_METRICS}
        counts[key] = {
            "n_cases": len(values),
            "n_dice_defined": sum(not math.isnan(v["dice"]) for v in values),
            "n_hd95_defined": sum(not math.isnan(v["hd95"]) for v in values),
            "n_both_empty": sum(v["empty_reference"] and v["empty_prediction"] for v in values),
            "n_false_positive_cases": sum(v["empty_reference"] and not v["empty_prediction"] for v in values),
            "n_missed_cases": sum(v["empty_prediction"] and not v["empty_reference"] for v in values),
        }
    foreground = [k for k in class_keys if k != "0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        foreground_mean = {m: float(np.nanmean([mean[k][m] for k in foreground])) if foreground else math.nan
                           for m in MEAN_METRICS}
    return {"mean": mean, "foreground_mean": foreground_mean, "counts": counts}


def evaluate_folder(ref_folder: PathLike, pred_folder: PathLike, labels: Optional[LabelList] = None,
                    file_ending: str = ".nii.gz", ignore_label: Optional[int] = None,
                    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, num_processes: int = 1,
                    out_dir: Optional[PathLike] = None) -> Dict[str, Any]:
    """Evaluate every reference in ``ref_folder`` against the same-named file in ``pred_folder``.

    ``labels``: label values and/or regions (tuples); ``None`` = every foreground value found in the references.
    Writes ``metrics_per_case.csv`` and ``summary.json`` to ``out_dir`` (default: ``pred_folder``) and returns the
    summary dict (NaN as ``None``). References without a prediction are listed under ``missing_predictions``
    (and warned about); a missing prediction folder, no matched case or a geometry mismatch is an error.
    """
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    references = list_label_files(ref_folder, file_ending)
    if not references:
        raise EvaluationError(f"{ref_folder}: no reference files ending in {file_ending}")
    predictions = {p.name for p in list_label_files(pred_folder, file_ending)}
    missing = [case_name(r, file_ending) for r in references if r.name not in predictions]
    matched = [r for r in references if r.name in predictions]
    unmatched = sorted(case_name(p, file_ending) for p in predictions - {r.name for r in references})
    if missing:
        warnings.warn(f"{pred_folder}: {len(missing)} of {len(references)} references have no prediction: "
                      f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}", stacklevel=2)
    if not matched:
        raise EvaluationError(f"{pred_folder}: no prediction matches a reference in {ref_folder} ({file_ending})")
    if labels is None:
        labels = labels_in_references(matched, ignore_label, num_processes)
    labels = [normalize_class(label) for label in labels]
    keys = [class_key(label) for label in labels]
    jobs = [(r, pred_folder / r.name, labels, ignore_label, float(nsd_tolerance_mm)) for r in matched]
    cases = [{"case": case_name(r, file_ending), "reference_file": str(r), "prediction_file": str(pred_folder / r.name),
              "metrics": metrics}
             for r, metrics in zip(matched, run_parallel(_evaluate_job, jobs, num_processes, "evaluating"))]
    summary: Dict[str, Any] = {
        "reference_folder": str(ref_folder), "prediction_folder": str(pred_folder), "file_ending": file_ending,
        "labels": keys, "ignore_label": ignore_label, "nsd_tolerance_mm": float(nsd_tolerance_mm),
        "empty_policy": POLICY, "num_cases": len(cases), "missing_predictions": missing,
        "predictions_without_reference": unmatched, **summarize(cases, keys), "metric_per_case": cases}
    summary = _nan_to_none(summary)
    out_dir = Path(out_dir) if out_dir is not None else pred_folder
    table = per_case_table(cases)
    with atomic_path(out_dir / PER_CASE_FILE, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary

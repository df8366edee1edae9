"""Gather the validation predictions of every finished fold of one trained model and evaluate them together.

A model is one ``<trainer>__<plans>__<configuration>`` folder of the results root. Folds are finished when
``fold_k/validation/summary.json`` exists; the others are reported as missing, and the gathering works on what is
there. Predictions are copied into ``crossval_results_folds_<k...>/`` and evaluated against the preprocessed
folder's ``gt_segmentations`` (the same references the folds were validated against).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from suprem_auto.evaluation.evaluate import evaluate_folder, list_label_files
from suprem_auto.utils.atomic import load_json


@dataclass
class ModelCrossValidation:
    """Cross-validation results of one model folder."""

    model_dir: Path
    finished_folds: List[int]
    missing_folds: List[int]
    crossval_dir: Optional[Path] = None
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model_dir.name

    @property
    def trainer(self) -> str:
        return self.model_dir.name.split("__")[0]

    @property
    def plans_name(self) -> str:
        return self.model_dir.name.split("__")[1]

    @property
    def configuration(self) -> str:
        return self.model_dir.name.split("__")[2]

    @property
    def foreground_dice(self) -> float:
        value = self.summary.get("foreground_mean", {}).get("dice") if self.summary else None
        return float("nan") if value is None else float(value)

    @property
    def has_probabilities(self) -> bool:
        return self.crossval_dir is not None and any(self.crossval_dir.glob("*.npz"))


def fold_is_finished(model_dir: Path, fold: int) -> bool:
    """A fold counts as finished once its final validation wrote summary.json."""
    return (model_dir / f"fold_{fold}" / "validation" / "summary.json").is_file()


def gather_model(model_dir: Path, folds: Sequence[int], gt_folder: Path, labels: Sequence[Any],
                 file_ending: str, ignore_label: Optional[int] = None, num_processes: int = 1) -> ModelCrossValidation:
    """Collect and evaluate the validation predictions of the finished folds of ``model_dir``."""
    model_dir = Path(model_dir)
    finished = [f for f in folds if fold_is_finished(model_dir, f)]
    missing = [f for f in folds if f not in finished]
    result = ModelCrossValidation(model_dir, finished, missing)
    if not finished:
        return result
    out = model_dir / f"crossval_results_folds_{'_'.join(str(f) for f in finished)}"
    out.mkdir(parents=True, exist_ok=True)
    seen: Dict[str, int] = {}
    for fold in finished:
        val_dir = model_dir / f"fold_{fold}" / "validation"
        for pred in list_label_files(val_dir, file_ending):
            if pred.name in seen:
                raise ValueError(f"{pred}: case predicted in folds {seen[pred.name]} and {fold} (overlapping splits)")
            seen[pred.name] = fold
            shutil.copy2(pred, out / pred.name)
            probs = val_dir / (pred.name[: -len(file_ending)] + ".npz")
            if probs.is_file():
                shutil.copy2(probs, out / probs.name)
    # evaluate only the gathered cases: build the reference list from what was predicted
    ref_subset = out / "_references"
    if ref_subset.exists():
        shutil.rmtree(ref_subset)
    ref_subset.mkdir()
    for name in seen:
        src = Path(gt_folder) / name
        if not src.is_file():
            raise FileNotFoundError(f"{src}: reference segmentation missing for a validation prediction")
        (ref_subset / name).symlink_to(src.resolve())
    result.summary = evaluate_folder(ref_subset, out, labels=list(labels), file_ending=file_ending,
                                     ignore_label=ignore_label, num_processes=num_processes, out_dir=out)
    result.crossval_dir = out
    return result


def read_learning_curves(model_dir: Path, folds: Sequence[int]) -> Dict[int, List[Dict[str, Any]]]:
    """Per fold with a ``metrics.jsonl``, its epoch records (complete lines that parse; others are skipped)."""
    from suprem_auto.crossval.fold_runs import read_metrics

    return {fold: read_metrics(Path(model_dir) / f"fold_{fold}" / "metrics.jsonl") for fold in folds
            if (Path(model_dir) / f"fold_{fold}" / "metrics.jsonl").is_file()}


def load_fold_summaries(model_dir: Path, folds: Sequence[int]) -> Dict[int, Dict[str, Any]]:
    """The per-fold ``validation/summary.json`` of finished folds."""
    return {f: load_json(Path(model_dir) / f"fold_{f}" / "validation" / "summary.json")
            for f in folds if fold_is_finished(Path(model_dir), f)}

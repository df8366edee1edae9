"""Final validation of a fold: full sliding-window prediction of its validation cases, then evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from torch import nn


def validation_inputs(raw_dataset: Optional[Path], case_ids: List[str]) -> Dict[str, List[Path]]:
    """``{case: [channel files]}`` of the validation cases in the raw dataset."""
    if raw_dataset is None:
        raise FileNotFoundError("final validation needs the raw dataset (set --raw / SUPREM_RAW) to read the "
                                "validation images")
    from suprem_auto.dataset import load_raw_dataset_folder

    ds = load_raw_dataset_folder(raw_dataset)
    missing = [c for c in case_ids if c not in ds.cases]
    if missing:
        raise FileNotFoundError(f"{raw_dataset}: validation case(s) missing from the raw dataset: {missing[:5]}")
    return {c: list(ds.cases[c].images) for c in case_ids}


def run_final_validation(network: nn.Module, plans: Dict[str, Any], configuration: str, dataset_json: Dict[str, Any],
                         case_ids: List[str], raw_dataset: Optional[Path], gt_folder: Path, output_folder: Path,
                         mirror_axes: Optional[List[int]], save_probabilities: bool = False,
                         progress: bool = True, precision: str = "auto",
                         previous_stage: Optional[Any] = None) -> Dict[str, Any]:
    """Predict ``case_ids`` into ``output_folder`` and write ``summary.json`` there; returns the summary.
    ``precision``: the prediction's autocast (the trainer passes its own: bf16 where the CPU has it natively).
    ``previous_stage``: a cascade's previous-stage inputs (``inference.cascade.PreviousStage``)."""
    from suprem_auto.dataset import parse_labels
    from suprem_auto.evaluation import evaluate_folder
    from suprem_auto.inference.predictor import Predictor

    inputs = validation_inputs(raw_dataset, case_ids)
    predictor = Predictor.from_network(network, plans, configuration, dataset_json, mirror_axes=mirror_axes or (),
                                       use_mirroring=bool(mirror_axes), progress=progress, precision=precision,
                                       previous_stage=previous_stage)
    report = predictor.predict_files(inputs, output_folder, save_probabilities=save_probabilities)
    if report.failed:
        first = next(iter(report.failed.items()))
        raise RuntimeError(f"final validation: {len(report.failed)} case(s) failed, e.g. {first[0]}: {first[1]}")
    labels = parse_labels(dataset_json)
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    gt_subset = _reference_subset(gt_folder, case_ids, file_ending, output_folder)
    return evaluate_folder(gt_subset, output_folder, labels=evaluated_classes(labels), file_ending=file_ending,
                           ignore_label=labels.ignore_label, out_dir=output_folder)


def evaluated_classes(labels: Any) -> List[Any]:
    """What a validation scores: the regions (one mask each) of a region-based dataset, else the foreground labels."""
    return list(labels.regions) if labels.has_regions else list(labels.foreground_labels)


def _reference_subset(gt_folder: Path, case_ids: List[str], file_ending: str, output_folder: Path) -> Path:
    """``validation_references/`` beside the predictions, linking the references of ``case_ids`` only
    (evaluate_folder compares whole folders)."""
    subset = Path(output_folder).parent / "validation_references"
    subset.mkdir(parents=True, exist_ok=True)
    for case in case_ids:
        source = Path(gt_folder) / f"{case}{file_ending}"
        if not source.is_file():
            raise FileNotFoundError(f"{source}: reference segmentation missing (gt_segmentations of the "
                                    f"preprocessed dataset)")
        link = subset / source.name
        if not link.exists():
            link.symlink_to(source.resolve())
    return subset

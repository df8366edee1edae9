"""Cross-validation of several configurations on one dataset: train what is missing, gather, compare, report.

Each requested run (a configuration, trained from scratch or from a pre-trained checkpoint) is trained on every
requested fold through the same code as ``suprem_train`` (finished folds are skipped, interrupted ones resumed).
Then the validation predictions of all finished folds are evaluated together, the best configuration (or pair
ensemble) is chosen, post-processing is decided on it, and the report and the inference instructions are written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from suprem_auto.crossval import report
from suprem_auto.crossval.gather import ModelCrossValidation, fold_is_finished, gather_model
from suprem_auto.crossval.selection import decide_postprocessing, select_best, write_inference_instructions
from suprem_auto.dataset import find_dataset_folder, load_raw_dataset_folder, parse_labels
from suprem_auto.evaluation.metrics import class_key
from suprem_auto.paths import Roots
from suprem_auto.planning import DEFAULT_PLANS_NAME
from suprem_auto.utils.atomic import atomic_write_json, load_json


@dataclass(frozen=True)
class RunSpec:
    """One configuration to cross-validate."""

    configuration: str = "3d_fullres"
    plans_name: str = DEFAULT_PLANS_NAME
    trainer: Optional[str] = None        # None: the default trainer (or the pretrained backbone's trainer)
    pretrained: Optional[str] = None     # zoo name or checkpoint path
    tag: Optional[str] = None            # distinguishes runs of the same trainer (e.g. pretrained vs scratch)


@dataclass
class CrossValidationResult:
    """What a cross-validation produced."""

    models: List[ModelCrossValidation]
    report_html: Path
    report_md: Path
    instructions: Dict[str, Any]  # the inference instructions (inference_recipe.json)
    out_dir: Path

    @property
    def recipe(self) -> Dict[str, Any]:
        """The former name of :attr:`instructions`."""
        return self.instructions


def train_missing_folds(roots: Roots, dataset: str, run: RunSpec, folds: Sequence[int],
                        overrides: Dict[str, Any], weights_dir: Optional[Path], device: str,
                        save_probabilities: bool, recipe: str = "auto") -> Path:
    """Train every fold of ``run`` that has no final validation yet; returns the model folder. A fold with a
    checkpoint of its run is resumed (or only validated when its final checkpoint exists); skipped folds are not
    written to. ``recipe`` is ``suprem_train --recipe`` (auto, short, trainer)."""
    from suprem_auto.training import checkpointing
    from suprem_auto.training.run import build_trainer, train_fold
    from suprem_auto.training.run_folder import run_checkpoint

    model_dir: Optional[Path] = None
    for fold in folds:
        trainer = build_trainer(dataset, run.configuration, fold, roots, trainer_name=run.trainer,
                                plans_name=run.plans_name, pretrained=run.pretrained, weights_dir=weights_dir,
                                device=device, overrides=overrides, run_tag=run.tag, reuse_run_config=True,
                                recipe=recipe)
        model_dir = trainer.fold_dir.parent
        if fold_is_finished(model_dir, fold):
            print(f"[crossval] {model_dir.name} fold {fold}: already finished, skipped")
            continue
        fold_dir = trainer.fold_dir
        resume = fold_dir.is_dir() and run_checkpoint(fold_dir) is not None
        validation_only = resume and run_checkpoint(fold_dir, (checkpointing.FINAL,)) is not None
        train_fold(trainer, pretrained=None if resume else run.pretrained, weights_dir=weights_dir,
                   continue_training=resume and not validation_only, validation_only=validation_only,
                   save_probabilities=save_probabilities)
    assert model_dir is not None
    return model_dir


def _is_pretrained(model_dir: Path, folds: Sequence[int]) -> bool:
    for fold in folds:
        hp = model_dir / f"fold_{fold}" / "hyperparameters.json"
        if hp.is_file():
            return bool(load_json(hp).get("pretrained"))
    return False


def _pairs(models: Sequence[ModelCrossValidation], folds: Sequence[int]):
    """(pretrained, scratch) pairs of the same plans and configuration."""
    scratch = [m for m in models if not _is_pretrained(m.model_dir, folds)]
    pretrained = [m for m in models if _is_pretrained(m.model_dir, folds)]
    return [(p, s) for p in pretrained for s in scratch
            if p.plans_name == s.plans_name and p.configuration == s.configuration]


def cross_validate(roots: Roots, dataset: str, runs: Sequence[RunSpec], folds: Sequence[int] = (0, 1, 2, 3, 4),
                   overrides: Optional[Dict[str, Any]] = None, weights_dir: Optional[Path] = None,
                   device: str = "auto", train: bool = True, num_processes: int = 1,
                   recipe: str = "auto") -> CrossValidationResult:
    """Train (unless ``train=False``), gather, compare, decide post-processing, write the inference instructions
    and report.
    ``recipe`` reaches every training as ``suprem_train --recipe`` does."""
    pre_dataset = find_dataset_folder(roots.preprocessed, dataset)
    dataset_json = load_json(pre_dataset / "dataset.json")
    labels = parse_labels(dataset_json, pre_dataset / "dataset.json")
    file_ending = dataset_json["file_ending"]
    gt_folder = pre_dataset / "gt_segmentations"
    out_dir = Path(roots.results) / pre_dataset.name / "crossval"
    out_dir.mkdir(parents=True, exist_ok=True)

    model_dirs = []
    for run in runs:
        if train:
            model_dirs.append(train_missing_folds(roots, dataset, run, folds, overrides or {}, weights_dir, device,
                                                  save_probabilities=True, recipe=recipe))
        else:
            from suprem_auto.training.run import output_folder, default_trainer_name

            model_dirs.append(output_folder(roots.results, pre_dataset.name,
                                            default_trainer_name(run.trainer, run.pretrained, weights_dir, run.tag),
                                            run.plans_name, run.configuration))
    fg_labels = labels.foreground_labels if not labels.has_regions else list(labels.regions)
    models = [gather_model(d, folds, gt_folder, fg_labels, file_ending, labels.ignore_label, num_processes)
              for d in model_dirs]
    for m in models:
        if m.missing_folds:
            print(f"[crossval] {m.name}: folds missing: {' '.join(map(str, m.missing_folds))}")
    best, ranked = select_best(models, labels, gt_folder, file_ending, out_dir, num_processes)
    pp = decide_postprocessing(best, labels, gt_folder, file_ending, num_processes)
    finished_folds = sorted(set.intersection(*[set(m.finished_folds) for m in best.members]))
    instructions = write_inference_instructions(out_dir, best, ranked, pp, pre_dataset.name, finished_folds)
    atomic_write_json(out_dir / "crossval_summary.json", {
        "dataset": pre_dataset.name, "folds": list(folds),
        "models": [{"name": m.name, "finished_folds": m.finished_folds, "missing_folds": m.missing_folds,
                    "foreground_dice": None if math.isnan(m.foreground_dice) else m.foreground_dice,
                    "mean": m.summary.get("mean"), "crossval_dir": str(m.crossval_dir)} for m in models],
        "ranking": instructions["ranking"], "best": instructions["best"], "postprocessing": pp})

    class_names = {str(v): labels.names[v] for v in labels.foreground_labels} if not labels.has_regions else \
        {class_key(r): n for r, n in zip(labels.regions, labels.region_names)}  # summary keys: "(1, 2)", "2"
    sections = []
    fingerprint_file = pre_dataset / "dataset_fingerprint.json"
    if fingerprint_file.is_file():
        sections.append(report.fingerprint_section(load_json(fingerprint_file)))
    sections.append(report.plans_section(models))
    sections.append(report.results_section([m for m in models if m.summary], class_names))
    ranking = report.Section("Best configuration")
    ranking.paragraphs.append(f"Best: {best.name} (foreground mean Dice {best.foreground_dice:.4f}). "
                              f"Post-processing: {pp.get('apply')}.")
    ranking.tables.append((["candidate", "foreground mean Dice"],
                           [[c.name, report._fmt(c.foreground_dice)] for c in ranked]))
    ranking.paragraphs.append("Predict new scans with: " + " && ".join(instructions["commands"]))
    sections.append(ranking)
    sections.append(report.learning_curves_section([m for m in models if m.summary]))
    sections.append(report.comparison_section(_pairs([m for m in models if m.summary], folds), class_names))
    sections.append(report.examples_section(best.members[0],
                                            _image_lookup(roots, pre_dataset.name), file_ending))
    html_path, md_path = report.write_report(out_dir, f"Cross-validation report: {pre_dataset.name}", sections)
    return CrossValidationResult(models, html_path, md_path, instructions, out_dir)


def _image_lookup(roots: Roots, dataset_name: str):
    """A function case_id -> first channel image array (or None when the raw data is not available)."""
    raw_folder = Path(roots.raw) / dataset_name
    ds = load_raw_dataset_folder(raw_folder) if (raw_folder / "dataset.json").is_file() else None

    def lookup(case_id: str):
        from suprem_auto.imageio import read_images

        if ds is None or case_id not in ds.cases:
            return None
        return read_images(ds.cases[case_id].images[:1])[0][0]
    return lookup

"""Pick the best configuration (or pair ensemble) by cross-validation Dice and write the inference instructions
(``inference_recipe.json``, a file name kept for compatibility, and ``inference_instructions.txt``)."""
from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from suprem_auto.crossval.ensemble import ensemble_folders
from suprem_auto.crossval.gather import ModelCrossValidation
from suprem_auto.dataset.labels import LabelSpec
from suprem_auto.evaluation.evaluate import evaluate_folder
from suprem_auto.evaluation.postprocessing import determine_postprocessing
from suprem_auto.utils.atomic import atomic_write, atomic_write_json


@dataclass
class Candidate:
    """A single model or an ensemble of two, with its cross-validation summary."""

    members: List[ModelCrossValidation]
    summary: Dict[str, Any]
    prediction_dir: Path

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.members)

    @property
    def foreground_dice(self) -> float:
        value = self.summary.get("foreground_mean", {}).get("dice")
        return float("nan") if value is None else float(value)


def _ensemble_candidates(models: Sequence[ModelCrossValidation], labels: LabelSpec, gt_folder: Path,
                         file_ending: str, out_root: Path, num_processes: int) -> List[Candidate]:
    """Evaluate every pair of models that saved probabilities for the same cases."""
    candidates = []
    with_probs = [m for m in models if m.has_probabilities]
    for a, b in itertools.combinations(with_probs, 2):
        out = out_root / f"ensemble__{a.name}__{b.name}"
        written = ensemble_folders([a.crossval_dir, b.crossval_dir], out, labels, a.crossval_dir, file_ending)
        if not written:
            continue
        refs = out / "_references"
        refs.mkdir(exist_ok=True)
        for case in written:
            link = refs / f"{case}{file_ending}"
            if not link.exists():
                link.symlink_to((gt_folder / f"{case}{file_ending}").resolve())
        summary = evaluate_folder(refs, out, labels=labels.foreground_labels if not labels.has_regions
                                  else list(labels.regions), file_ending=file_ending,
                                  ignore_label=labels.ignore_label, num_processes=num_processes, out_dir=out)
        candidates.append(Candidate([a, b], summary, out))
    return candidates


def select_best(models: Sequence[ModelCrossValidation], labels: LabelSpec, gt_folder: Path, file_ending: str,
                out_root: Path, num_processes: int = 1) -> tuple[Candidate, List[Candidate]]:
    """Rank single models and pair ensembles by foreground mean Dice; ties go to the simpler (single) model."""
    candidates = [Candidate([m], m.summary, m.crossval_dir) for m in models if m.summary]
    candidates += _ensemble_candidates([m for m in models if m.summary], labels, gt_folder, file_ending,
                                       out_root, num_processes)
    if not candidates:
        raise RuntimeError("no configuration has a finished fold: nothing to compare")
    ranked = sorted(candidates, key=lambda c: (-(c.foreground_dice if not math.isnan(c.foreground_dice) else -1),
                                               len(c.members)))
    return ranked[0], ranked


def decide_postprocessing(best: Candidate, labels: LabelSpec, gt_folder: Path, file_ending: str,
                          num_processes: int = 1) -> Dict[str, Any]:
    """Run the connected-component search on the best candidate's predictions; copy the decision to its models."""
    refs = best.prediction_dir / "_references"
    fg = labels.foreground_labels if not labels.has_regions else list(labels.regions)
    pp = determine_postprocessing(refs if refs.is_dir() else gt_folder, best.prediction_dir, fg, file_ending,
                                  out_json=best.prediction_dir / "postprocessing.json",
                                  ignore_label=labels.ignore_label, num_processes=num_processes)
    if len(best.members) == 1:
        shutil.copy2(best.prediction_dir / "postprocessing.json", best.members[0].model_dir / "postprocessing.json")
    return pp


def inference_commands(best: Candidate, dataset_name: str, folds: Sequence[int]) -> List[str]:
    """The exact shell commands that predict new scans with the chosen configuration."""
    fold_args = " ".join(str(f) for f in folds)
    if len(best.members) == 1:
        m = best.members[0]
        return [f"suprem_predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {dataset_name} -c {m.configuration} "
                f"-tr {m.trainer} -p {m.plans_name} -f {fold_args}"]
    commands = []
    outs = []
    for i, m in enumerate(best.members):
        out = f"OUTPUT_FOLDER_MODEL{i + 1}"
        outs.append(out)
        commands.append(f"suprem_predict -i INPUT_FOLDER -o {out} -d {dataset_name} -c {m.configuration} "
                        f"-tr {m.trainer} -p {m.plans_name} -f {fold_args} --save_probabilities")
    commands.append(f"suprem_ensemble -i {' '.join(outs)} -o OUTPUT_FOLDER -d {dataset_name} "
                    f"--postprocessing {best.prediction_dir / 'postprocessing.json'}")
    return commands


def write_inference_instructions(out_dir: Path, best: Candidate, ranked: Sequence[Candidate],
                                 pp: Optional[Dict[str, Any]], dataset_name: str,
                                 folds: Sequence[int]) -> Dict[str, Any]:
    """Write the inference instructions into ``out_dir``: ``inference_recipe.json`` (the file keeps its old name for
    compatibility; "recipe" otherwise means a training recipe, ``--recipe``) and ``inference_instructions.txt``."""
    commands = inference_commands(best, dataset_name, folds)
    instructions = {
        "dataset": dataset_name,
        "best": best.name,
        "best_foreground_dice": best.foreground_dice,
        "folds": list(folds),
        "models": [{"trainer": m.trainer, "plans": m.plans_name, "configuration": m.configuration,
                    "model_dir": str(m.model_dir)} for m in best.members],
        "postprocessing": pp.get("apply") if pp else None,
        "commands": commands,
        "ranking": [{"name": c.name, "foreground_dice": c.foreground_dice} for c in ranked],
    }
    atomic_write_json(out_dir / "inference_recipe.json", instructions)
    text = ["# Predict new scans with the configuration that won cross-validation", f"# {best.name}: "
            f"foreground mean Dice {best.foreground_dice:.4f} over folds {list(folds)}", *commands, ""]
    atomic_write(out_dir / "inference_instructions.txt", lambda p: p.write_text("\n".join(text)))
    return instructions


write_recipe = write_inference_instructions  # the former name

"""A budget on a held-out split, as a user runs it: nnU-Net v2's default trainer and ``suprem_train --budget`` for
the same wall time on the same training cases (fold ``all``), both scored on the same held-out cases.

    python benchmarks/heldout_budget.py prepare --work benchmarks/work/acdc
    python benchmarks/heldout_budget.py ours    --work benchmarks/work/acdc --budget 10m [-c 2d]
    python benchmarks/heldout_budget.py nnunet  --work benchmarks/work/acdc --budget 10m --venv /tmp/nnunet_venv
    python benchmarks/heldout_budget.py ours    --dataset hippocampus --work benchmarks/work/hippo_all --budget 40m
    python benchmarks/heldout_budget.py ensemble --dataset hippocampus --work benchmarks/work/hippo_all \
        --runs 3d_fullres_40m 3d_fullres_40m_network_width_0.5    # average earlier runs' softmax outputs

Datasets of ../shared/data: ``acdc`` (Dataset027_ACDC, 70 patients with both frames each; every 5th patient in
sorted order is held out: 14 patients, 28 volumes, both frames of a patient on one side; the other 56 patients, 112
volumes, train) and ``hippocampus`` (Dataset004_Hippocampus; every 5th case in sorted order held out: 44 of 220,
the other 176 train). Neither side ever sees a held-out case.
Ours runs the whole pipeline as a user would (our planner and preprocessing, ``suprem_train ... all --budget``,
``suprem_predict``); nnU-Net runs its planner and preprocessing, then its default trainer with only the iteration
count cut to the budget (``benchmarks/nnunet_training.py``), and predicts with its own predictor (mirroring on).
One function (``budget.dice_per_class``) scores both. Results are JSON under --work, named by side and budget.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from budget import _cpu_name, _load, dice_per_class  # benchmarks/ is sys.path[0] when run as a script
from nnunet_training import NNUNET_BUDGET_TRAINING

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HELD_OUT_EVERY = 5


@dataclass(frozen=True)
class HeldOutTask:
    """A shared dataset, its labels, and how its cases group into subjects (held out together: the package's
    ``subject_pattern`` rule, :class:`suprem_auto.training.splits.SubjectRule`; None: every case its own subject)."""

    folder: str
    dataset_id: int
    short_name: str
    class_names: Dict[str, str]
    subject_pattern: Optional[str]

    @property
    def source(self) -> Path:
        return SHARED / self.folder

    @property
    def labels(self) -> List[int]:
        return [int(k) for k in self.class_names]


TASKS = {
    "acdc": HeldOutTask("Dataset027_ACDC", 27, "ACDC", {"1": "RV", "2": "MYO", "3": "LV"},
                        r"^(patient\d+)_frame"),
    "hippocampus": HeldOutTask("Dataset004_Hippocampus", 4, "Hippocampus", {"1": "anterior", "2": "posterior"}, None),
}


def split_cases(task: HeldOutTask) -> Tuple[List[str], List[str]]:
    """(training cases, held-out cases): every 5th subject in sorted order held out, all cases of a subject on one
    side."""
    images = task.source / "imagesTr"
    if not images.is_dir():
        raise SystemExit(f"{task.source}: not found; this benchmark needs ../shared/data/{task.folder}")
    from suprem_auto.training.splits import SubjectRule

    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    subject = (SubjectRule(source=task.folder, pattern=task.subject_pattern).subjects(cases) if task.subject_pattern
               else {c: c for c in cases})
    subjects = sorted(set(subject.values()))
    held_subjects = {s for i, s in enumerate(subjects) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1}
    return [c for c in cases if subject[c] not in held_subjects], [c for c in cases if subject[c] in held_subjects]


def prepare(task: HeldOutTask, work: Path) -> List[str]:
    """Raw training set and held-out images under --work (copies; ../shared is never written); returns the held-out
    cases."""
    from suprem_auto.conversion import make_subset

    train, held = split_cases(task)
    raw = work / "raw"
    if not (raw / task.folder / "dataset.json").is_file():
        make_subset(task.source, raw, task.dataset_id, task.short_name, len(train), case_ids=train, overwrite=True)
    images = work / "heldout_images"
    images.mkdir(parents=True, exist_ok=True)
    for case in held:
        if not (images / f"{case}_0000.nii.gz").is_file():
            shutil.copy(task.source / "imagesTr" / f"{case}_0000.nii.gz", images)
    print(f"{len(train)} training cases, {len(held)} held-out cases under {work}")
    return held


def _score(task: HeldOutTask, pred: Path, held: Sequence[str]) -> Dict[str, Any]:
    scores = dice_per_class(pred, task.source / "labelsTr", held, task.labels)
    scores["per_class"] = {task.class_names[k]: round(v, 4) for k, v in scores["per_class"].items()}
    scores["foreground_mean"] = round(scores["foreground_mean"], 4)
    return scores


def _predict(work: Path, model: Path, out: Path, *flags: str) -> None:
    """``suprem_predict`` of a fold-``all`` model on the held-out images."""
    subprocess.run([sys.executable, "-m", "suprem_auto.cli.predict", "-i", str(work / "heldout_images"), "-o",
                    str(out), "-m", str(model), "-f", "all", "-device", "cpu", "--disable_progress_bar", *flags],
                   check=True, stdout=subprocess.DEVNULL)


def run_ours(task: HeldOutTask, work: Path, budget: str, configuration: str, extra: Sequence[str]) -> Dict[str, Any]:
    """Plan and preprocess (once per configuration), train fold all on the budget, predict the held-out images."""
    held = prepare(task, work)
    roots = ["--raw", str(work / "raw"), "--preprocessed", str(work / "preprocessed")]
    tag = f"{configuration}_{budget}{'_' + '_'.join(a.lstrip('-') for a in extra) if extra else ''}"
    results = work / "results" / tag  # a variant (--flags) keeps the default run's model folder
    shutil.rmtree(results, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "suprem_auto.cli.plan_and_preprocess", "-d", str(task.dataset_id), "-c",
                    configuration, "-np", "2", *roots], check=True, stdout=subprocess.DEVNULL)
    prep_s = time.monotonic() - start
    load_before = _load()
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "suprem_auto.cli.train", str(task.dataset_id), configuration, "all",
                    "--budget", budget, "-device", "cpu", *extra, *roots, "--results", str(results)],
                   check=True, stdout=subprocess.DEVNULL)
    train_wall = time.monotonic() - start
    model = next((results / task.folder).glob(f"*__{configuration}"))
    pred = results / "heldout_pred"

    start = time.monotonic()
    _predict(work, model, pred)
    predict_s = time.monotonic() - start
    pp_file = model / "fold_all" / "postprocessing.json"
    postprocessing = None
    if pp_file.is_file():  # what the run chose on its training cases; the Dice without it, for comparison
        _predict(work, model, results / "heldout_pred_no_pp", "--disable_postprocessing")
        postprocessing = {"apply": json.loads(pp_file.read_text())["apply"],
                          "held_out_without": _score(task, results / "heldout_pred_no_pp", held)}
    plan = json.loads((model / "fold_all" / "budget_plan.json").read_text())
    hyper = json.loads((model / "fold_all" / "hyperparameters.json").read_text())
    out = {"side": "suprem_auto", "configuration": configuration, "budget": budget, "flags": list(extra),
           "cpu": _cpu_name(), "plan_and_preprocess_s": round(prep_s, 1), "train_wall_s": round(train_wall, 1),
           "predict_s": round(predict_s, 1), "iterations": plan.get("iteration"),
           "sec_per_iteration": round(plan.get("sec_per_iteration") or 0.0, 3),
           "patch_size": hyper.get("patch_size"), "batch_size": hyper.get("global_batch_size"),
           "network_width": hyper.get("config", {}).get("network_width"), "precision": hyper.get("precision"),
           "load_before": load_before, "load_after": _load(), "held_out": _score(task, pred, held),
           "postprocessing": postprocessing}
    (work / f"ours_{tag}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def run_ensemble(task: HeldOutTask, work: Path, tags: Sequence[str]) -> Dict[str, Any]:
    """The softmax outputs of several ``ours`` runs (``results/<tag>``, possibly of different widths or recipes)
    averaged per held-out case, argmax, scored: how far more training time spent on more models gets."""
    import numpy as np
    import SimpleITK as sitk

    held = prepare(task, work)
    prob_dirs = []
    for tag in tags:
        model = next((work / "results" / tag / task.folder).glob("*__*"))
        probs = work / "results" / tag / "heldout_prob"
        if not probs.is_dir():
            _predict(work, model, probs, "--save_probabilities")
        prob_dirs.append(probs)
    out_dir = work / "results" / ("ensemble_" + "+".join(tags))
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in held:
        summed = sum(np.load(d / f"{case}.npz")["probabilities"].astype(np.float32) for d in prob_dirs)
        reference = sitk.ReadImage(str(prob_dirs[0] / f"{case}.nii.gz"))
        image = sitk.GetImageFromArray(np.argmax(summed, axis=0).astype(np.uint8))
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(out_dir / f"{case}.nii.gz"))
    out = {"side": "suprem_auto", "ensemble_of": list(tags), "cpu": _cpu_name(),
           "held_out": _score(task, out_dir, held)}
    (work / f"ensemble_{'+'.join(tags)}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


NNUNET_PREDICT = r'''
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
budget, pre, held_images, out_dir, configuration = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
tr, iters, train_s = train_on_budget(budget, pre, "all", configuration)
pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=torch.device("cpu"),
                       verbose=False, allow_tqdm=False)
pred.manual_initialization(tr.network, tr.plans_manager, tr.configuration_manager, [tr.network.state_dict()],
                           tr.dataset_json, tr.__class__.__name__, tr.inference_allowed_mirroring_axes)
t = time.monotonic()
pred.predict_from_files_sequential(held_images, out_dir, save_probabilities=False, overwrite=True)
print(json.dumps({"iterations": iters, "epochs": tr.current_epoch, "train_wall_s": train_s,
                  "sec_per_iteration": train_s / max(1, iters), "predict_s": time.monotonic() - t,
                  "patch_size": tr.configuration_manager.patch_size, "batch_size": tr.batch_size}))
'''


def run_nnunet(task: HeldOutTask, work: Path, budget: str, venv: Path,
               configuration: str = "3d_fullres") -> Dict[str, Any]:
    """nnU-Net's planning/preprocessing of the configuration, its default trainer on fold all cut to the budget, its
    predictor on the held-out images."""
    from suprem_auto.training.budget import parse_duration

    held = prepare(task, work)
    nn = work / "nnunet"
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(nn / "pre"),
               nnUNet_results=str(nn / "results"), nnUNet_n_proc_DA="1")
    plans = nn / "pre" / task.folder / "nnUNetPlans.json"
    data_identifier = f"nnUNetPlans_{configuration}"
    if not plans.is_file() or not (nn / "pre" / task.folder / data_identifier).is_dir():
        subprocess.run([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(task.dataset_id), "-c",
                        configuration, "-np", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
    script = work / "nnunet_budget_train.py"
    script.write_text(NNUNET_BUDGET_TRAINING + NNUNET_PREDICT)
    tag = budget if configuration == "3d_fullres" else f"{configuration}_{budget}"
    pred = nn / f"pred_{tag}"
    shutil.rmtree(pred, ignore_errors=True)
    pred.mkdir(parents=True)  # nnU-Net's predictor writes its arguments there before anything else
    load_before = _load()
    with open(nn / f"train_{tag}.log", "w") as log:
        stdout = subprocess.run([str(venv / "bin" / "python"), str(script), str(parse_duration(budget)),
                                 str(nn / "pre" / task.folder), str(work / "heldout_images"), str(pred),
                                 configuration], env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True, check=True).stdout
    stats = json.loads(stdout.strip().splitlines()[-1])
    out = dict({"side": "nnunet_v2", "configuration": configuration, "budget": budget, "cpu": _cpu_name(),
                "load_before": load_before, "load_after": _load()}, **stats, held_out=_score(task, pred, held))
    (work / f"nnunet_{tag}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["prepare", "ours", "nnunet", "ensemble"])
    parser.add_argument("--dataset", choices=sorted(TASKS), default="acdc")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/acdc"))
    parser.add_argument("--budget", default="10m")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="configuration to train (both sides)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_venv"), help="nnU-Net v2 venv")
    parser.add_argument("--flags", default="", help="ours: extra suprem_train flags, space separated")
    parser.add_argument("--runs", nargs="+", default=[],
                        help="ensemble: result folders of earlier 'ours' runs (e.g. 3d_fullres_40m) to average")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    task = TASKS[args.dataset]
    if args.mode == "prepare":
        prepare(task, args.work)
    elif args.mode == "ensemble":
        run_ensemble(task, args.work, args.runs)
    elif args.mode == "ours":
        run_ours(task, args.work, args.budget, args.configuration, args.flags.split())
    else:
        run_nnunet(task, args.work, args.budget, args.venv, args.configuration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

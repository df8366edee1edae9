"""The 2d configuration end to end on real hippocampus cases: ``suprem_plan_and_preprocess -c 2d`` keeps (c, z, y, x)
arrays, training samples slices (forced samples hold foreground), in-plane mirroring is the 2D default, the
final-validation reserve counts slices, a short 2d training predicts held-out cases with ``suprem_predict`` in
their exact geometry and clearly above chance, and a 2d ``--budget`` run ends within its budget. With ACDC
(anisotropic, where 2d matters) one short 2d training on 4 volumes."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import ACDC, copy_hippocampus, hippo_cases, hippo_image, hippo_label, requires_acdc

from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess as plan_main
from suprem_auto.cli.predict import main as predict_main
from suprem_auto.cli.train import main as train_main
from suprem_auto.inference.predictor import Predictor
from suprem_auto.paths import Roots
from suprem_auto.training.data.cases import PreprocessedCases
from suprem_auto.training.data.slices import SliceSampler
from suprem_auto.training.run import build_trainer

pytestmark = pytest.mark.usefixtures("single_torch_thread")
DATASET = "Dataset004_Hippocampus"
MODEL = "SupremTrainer__suprem_plans__2d"
FAST = ["--num_workers", "1", "--num_threads", "1", "-device", "cpu", "--val_iters", "1"]
N_TRAIN, N_HELD_OUT = 8, 2


def _flags(roots: Roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Roots:
    """8 real cases planned and preprocessed for 2d with the command-line tool."""
    tmp = tmp_path_factory.mktemp("two_d")
    roots = Roots(tmp / "raw", tmp / "preprocessed", tmp / "results")
    copy_hippocampus(roots.raw, N_TRAIN)
    assert plan_main(["-d", "4", "-c", "2d", "-np", "1", *_flags(roots)]) == 0
    return roots


@pytest.fixture(scope="module")
def trained(planned) -> Path:
    """Fold 0 of 2d trained for 300 iterations (short-budget recipe, quarter width): the model folder."""
    assert train_main(["4", "2d", "0", "--iterations", "300", "--network_width", "0.25", "--batch_size", "8",
                       *FAST, *_flags(planned)]) == 0
    return planned.results / DATASET / MODEL


def _plans(roots: Roots) -> dict:
    return json.loads((roots.preprocessed / DATASET / "suprem_plans.json").read_text())


def test_2d_preprocessing_keeps_volumes_and_slices_hold_the_forced_foreground(planned):
    config = _plans(planned)["configurations"]["2d"]
    assert len(config["patch_size"]) == 2 and len(config["spacing"]) == 2
    folder = planned.preprocessed / DATASET / config["data_identifier"]
    cases = PreprocessedCases(folder, sorted(p.name[:-5] for p in folder.glob("*.json")
                                             if not p.name.startswith("preprocessing")))
    assert len(cases) == N_TRAIN
    volume = cases.load(cases.case_ids[0])
    assert volume.data.ndim == 4 and volume.data.shape[1] > 1  # (c, z, y, x): slices are taken at training time

    patch = config["patch_size"]
    sampler = SliceSampler(cases, patch, batch_size=6, num_forced=3, seed=3)
    for _ in range(4):
        batch = sampler.sample_batch()
        assert batch["data"].shape == (6, 1, *patch) and batch["seg"].shape == (6, 1, *patch)
        for forced in batch["seg"][3:]:
            assert (forced > 0).any(), "a forced sample holds foreground"
    # random slices come from all over the volume, not only its foreground slices
    seen = set()
    for _ in range(200):
        index, _ = sampler._pick_slice(volume, force_foreground=False)
        seen.add(index)
    assert len(seen) == volume.data.shape[1]


def test_2d_trainer_mirrors_in_plane_and_reserves_time_for_every_slice(planned):
    trainer = build_trainer(4, "2d", 1, planned, device="cpu", echo=False, overrides={"num_workers": 0})
    assert trainer.config.mirror_axes == [0, 1]  # nnU-Net's 2D mirror axes, the in-plane axes of the patch
    workload = trainer.final_validation_workload()
    _, val_cases = trainer.split()
    folder = trainer.data_folder
    tile_batch, patch = workload.tile_batch_size, workload.patch_size
    assert patch == _plans(planned)["configurations"]["2d"]["patch_size"]
    expected = 0
    for case in val_cases:
        z, y, x = np.load(folder / f"{case}.npy", mmap_mode="r").shape[1:]
        in_plane = math.prod(1 if s <= p else math.ceil((s - p) / (p / 2)) + 1 for s, p in zip((y, x), patch))
        expected += math.ceil(z * in_plane / tile_batch)
    assert workload.network_calls == expected * 4  # identity + 3 in-plane mirror passes
    assert tile_batch > 8  # 2D tiles are single slices: many per call


def test_2d_training_predicts_held_out_cases_in_their_geometry(trained, tmp_path):
    checkpoint = torch.load(trained / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["configuration"] == "2d"
    assert checkpoint["network_weights"]["encoder.stages.0.0.conv.weight"].ndim == 4  # a 2D network
    assert (trained / "fold_0" / "validation" / "summary.json").is_file()  # the final validation ran in 2D

    held_out = hippo_cases(N_HELD_OUT, start=N_TRAIN)
    (tmp_path / "in").mkdir()
    for case in held_out:
        shutil.copy(hippo_image(case), tmp_path / "in")
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(trained), "-f", "0",
                         "-device", "cpu", "--disable_progress_bar"]) == 0
    predictor = Predictor.from_model_folder(trained, folds=[0], device="cpu", progress=False, mirror_axes=(0, 1))
    mirrored = predictor.predict_files(tmp_path / "in", tmp_path / "out_mirrored")
    assert mirrored.ok, mirrored.failed
    for case in held_out:
        image, reference = sitk.ReadImage(str(hippo_image(case))), sitk.ReadImage(str(hippo_label(case)))
        truth = sitk.GetArrayFromImage(reference) > 0
        for folder in ("out", "out_mirrored"):
            seg = sitk.ReadImage(str(tmp_path / folder / f"{case}.nii.gz"))
            assert seg.GetSize() == image.GetSize() and seg.GetSpacing() == image.GetSpacing()
            assert seg.GetOrigin() == image.GetOrigin() and seg.GetDirection() == image.GetDirection()
            pred = sitk.GetArrayFromImage(seg)
            assert set(np.unique(pred).tolist()) <= {0, 1, 2}
            dice = 2 * (truth & (pred > 0)).sum() / (truth.sum() + (pred > 0).sum())
            chance = 2 * truth.mean() / (1 + truth.mean())  # Dice of labelling everything foreground
            print(f"{case} ({folder}): foreground Dice {dice:.3f}, chance {chance:.3f}")
            if folder == "out":  # trained without mirroring (short-budget recipe): mirrored passes only run
                assert dice > max(0.4, 2 * chance), f"{case}: foreground Dice {dice:.3f} (chance {chance:.3f})"


def test_2d_budget_run_ends_within_its_budget(planned, tmp_path):
    roots = Roots(planned.raw, planned.preprocessed, tmp_path / "results")
    planned_patch = _plans(planned)["configurations"]["2d"]["patch_size"]
    assert build_trainer(4, "2d", 2, roots, overrides={"budget_s": 600.0}, device="cpu",
                         echo=False).patch_size == planned_patch, "small slices keep their patch under a budget"
    budget = 20
    start = time.monotonic()
    assert train_main(["4", "2d", "2", "--budget", f"{budget}s", *FAST, *_flags(roots)]) == 0
    elapsed = time.monotonic() - start
    assert elapsed <= budget + 5, f"{elapsed:.1f}s for a {budget}s budget"
    fold = roots.results / DATASET / MODEL / "fold_2"
    plan = json.loads((fold / "budget_plan.json").read_text())
    assert plan["kind"] == "clock" and plan["iteration"] > 0
    assert plan["final_validation"]["num_cases"] >= 1 and plan["final_validation_measured_s"] > 0
    assert len(plan["final_validation"]["patch_size"]) == 2
    assert json.loads((fold / "validation" / "summary.json").read_text())["metric_per_case"]


@requires_acdc
def test_2d_trains_on_anisotropic_acdc(tmp_path):
    """4 ACDC volumes (10 mm slices): 2d plans in-plane patches, trains a few iterations and validates."""
    roots = Roots(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results")
    dst = roots.raw / "Dataset027_ACDC"
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    labels = sorted((ACDC / "labelsTr").glob("*.nii.gz"))[:4]
    for label in labels:
        case = label.name[: -len(".nii.gz")]
        shutil.copy(ACDC / "imagesTr" / f"{case}_0000.nii.gz", dst / "imagesTr")
        shutil.copy(label, dst / "labelsTr")
    dataset_json = json.loads((ACDC / "dataset.json").read_text())
    (dst / "dataset.json").write_text(json.dumps(dict(dataset_json, numTraining=len(labels))))
    assert plan_main(["-d", "27", "-c", "2d", "-np", "1", *_flags(roots)]) == 0
    plans = json.loads((roots.preprocessed / "Dataset027_ACDC" / "suprem_plans.json").read_text())
    assert plans["configurations"]["2d"]["spacing"] == pytest.approx([1.5625, 1.5625])
    # a CPU budget trains on a smaller crop of the whole-slice plan (more iterations per minute); a flag wins
    planned_patch = plans["configurations"]["2d"]["patch_size"]
    budgeted = build_trainer(27, "2d", 0, roots, overrides={"budget_s": 600.0, "num_folds": 2}, device="cpu",
                             echo=False)
    assert budgeted.patch_size == [160, 160] and planned_patch == [256, 224]
    assert budgeted.effective_plans()["configurations"]["2d"]["patch_size"] == [160, 160], "prediction's plans"
    flagged = build_trainer(27, "2d", 0, roots, overrides={"budget_s": 600.0, "num_folds": 2,
                                                           "patch_size": [192, 192]}, device="cpu", echo=False)
    assert flagged.patch_size == [192, 192]
    assert build_trainer(27, "2d", 0, roots, overrides={"iterations": 10, "num_folds": 2}, device="cpu",
                         echo=False).patch_size == planned_patch, "a fixed iteration count keeps the plan's patch"
    assert train_main(["27", "2d", "0", "--iterations", "6", "--network_width", "0.125",
                       "--patch_size", "128x128", "--num_folds", "2", *FAST, *_flags(roots)]) == 0
    summary = json.loads((roots.results / "Dataset027_ACDC" / MODEL / "fold_0" / "validation" / "summary.json")
                         .read_text())
    assert summary["metric_per_case"]
    seg = sitk.ReadImage(summary["metric_per_case"][0]["prediction_file"])
    reference = sitk.ReadImage(summary["metric_per_case"][0]["reference_file"])
    assert seg.GetSize() == reference.GetSize() and seg.GetSpacing() == reference.GetSpacing()

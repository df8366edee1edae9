"""The cascade (3d_lowres -> 3d_cascade_fullres) on real hippocampus cases with hand-written plans.

The hippocampus images are too small for the default planner to want a low-res stage, so the plans add one by hand
(2 mm, twice the 1 mm full-res spacing) and the cascade block the planner writes (``cascade_configuration``).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from conftest import hippo_cases, hippo_image, hippo_label
from training_data import make_training_roots, tiny_plans

from suprem_auto.dataset import load_raw_dataset
from suprem_auto.planning import load_plans
from suprem_auto.planning.default_planner import cascade_configuration
from suprem_auto.preprocessing import preprocess_dataset
from suprem_auto.training import augmentation, cascade
from suprem_auto.training.data.cases import PreprocessedCases
from suprem_auto.training.data.sampler import PatchSampler
from suprem_auto.training.run import build_trainer, train_fold

pytestmark = pytest.mark.usefixtures("single_torch_thread")
DATASET = "Dataset004_Hippocampus"
TRAINER = "SupremTrainer_NoMirroring"
# 40 iterations in 4 epochs (few epoch ends) with the short-budget recipe's optimiser, which learns in few steps
FAST = dict(num_epochs=4, iters_per_epoch=10, val_iters_per_epoch=1, num_workers=0, optimizer="adamw", lr=0.01,
            weight_decay=1e-4, lr_schedule="warmup_cosine")


def cascade_plans() -> Dict[str, Any]:
    """Hand plans: 3d_fullres at 1 mm, 3d_lowres at 2 mm, 3d_cascade_fullres = 3d_fullres + previous_stage."""
    plans = tiny_plans(patch_size=(24, 32, 24), features=(8, 16, 32))
    fullres = plans["configurations"]["3d_fullres"]
    low = copy.deepcopy(fullres)
    low.update({"data_identifier": "suprem_plans_3d_lowres", "spacing": [2.0, 2.0, 2.0], "patch_size": [16, 24, 16],
                "median_image_size_in_voxels": [18, 25, 18], "next_stage": "3d_cascade_fullres"})
    low["architecture"]["kwargs"].update({"n_stages": 2, "features_per_stage": [8, 16], "kernel_sizes": [[3, 3, 3]] * 2,
                                          "strides": [[1, 1, 1], [2, 2, 2]]})
    plans["configurations"]["3d_lowres"] = low
    plans["configurations"]["3d_cascade_fullres"] = cascade_configuration(fullres, "3d_fullres", "3d_lowres")
    return plans


def _preprocess_lowres(roots) -> None:
    ds = load_raw_dataset(roots.raw, 4)
    out = roots.preprocessed / ds.name
    preprocess_dataset(ds, load_plans(out / "suprem_plans.json"), "3d_lowres", out, num_processes=1, progress=False)


def _gathered_like_labels(roots, folder: Path) -> Path:
    """A previous-stage folder holding each case's own (cleaned) label map: the crop must keep the two aligned."""
    data = roots.preprocessed / DATASET / "suprem_plans_3d_fullres"
    folder.mkdir(parents=True)
    for seg_file in data.glob("*_seg.npy"):
        np.save(folder / f"{seg_file.name[:-len('_seg.npy')]}.npy", np.maximum(np.load(seg_file), 0).astype(np.int16))
    return folder


def test_previous_stage_channels_enter_the_network_aligned_with_the_image(tmp_path):
    roots = make_training_roots(tmp_path, 3, cascade_plans())
    # the cascade shares the full-res data: preprocessing it changes nothing
    ds = load_raw_dataset(roots.raw, 4)
    out = roots.preprocessed / ds.name
    assert preprocess_dataset(ds, cascade_plans(), "3d_cascade_fullres", out, num_processes=1, progress=False) == []

    trainer = build_trainer(4, "3d_cascade_fullres", 0, roots, trainer_name=TRAINER, device="cpu", echo=False)
    assert trainer.num_input_channels == 1 + 2 and trainer.previous_stage_labels == [1, 2]
    trainer.initialize()
    first_conv = next(m for m in trainer.network.modules() if hasattr(m, "in_channels"))
    assert first_conv.in_channels == 3

    previous = _gathered_like_labels(roots, tmp_path / "previous")
    cases = PreprocessedCases(out / "suprem_plans_3d_fullres", sorted(p.stem for p in previous.glob("*.npy")), previous)
    sampler = PatchSampler(cases, [48, 64, 48], 2, 1, seed=3)  # larger than the images: padded on every side
    raw = sampler.sample_batch()
    assert raw["seg"].shape[1] == 2
    label, prev = raw["seg"][:, 0], raw["seg"][:, 1]
    assert np.array_equal(np.maximum(label, 0), np.maximum(prev, 0)) and (label > 0).any()

    batch = trainer.validation_transforms()(**copy.deepcopy(raw))
    assert batch["data"].shape[1] == 3 and batch["seg"].shape[1] == 1
    assert np.array_equal(batch["data"][:, 0], raw["data"][:, 0])
    for c, value in enumerate((1, 2), start=1):
        assert np.array_equal(batch["data"][:, c], (batch["seg"][:, 0] == value).astype(np.float32))

    # augmented: rotation/scaling/mirroring move the previous stage exactly like the label, intensities never touch it
    crop = augmentation.initial_patch_size([24, 32, 24])
    aug_sampler = PatchSampler(cases, crop, 2, 1, seed=5)
    transforms = trainer.training_transforms()
    for _ in range(6):
        batch = transforms(**aug_sampler.sample_batch())
        assert batch["data"].shape[1:] == (3, 24, 32, 24)
        assert set(np.unique(batch["data"][:, 1:])) <= {0.0, 1.0}
        for c, value in enumerate((1, 2), start=1):
            assert np.array_equal(batch["data"][:, c], (batch["seg"][:, 0] == value).astype(np.float32))


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return 2 * float((x & y).sum()) / max(1, int(x.sum() + y.sum()))


def test_cascade_end_to_end_two_fold_lowres_then_cascade(tmp_path, capsys):
    import SimpleITK as sitk

    from suprem_auto.cli.predict import main as predict_main

    roots = make_training_roots(tmp_path, 8, cascade_plans(), merge_labels=True)  # one class: learnt in few steps
    _preprocess_lowres(roots)
    raw = roots.raw / DATASET
    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    (raw / "splits_final.json").write_text(json.dumps([{"train": cases[4:], "val": cases[:4]},
                                                       {"train": cases[:4], "val": cases[4:]}]))

    # the cascade before its previous stage's cross-validation: one clear error naming the folds and the command
    early = build_trainer(4, "3d_cascade_fullres", 0, roots, trainer_name=TRAINER, device="cpu", echo=False)
    with pytest.raises(FileNotFoundError, match=r"fold 0 \(4 case.*fold 1 \(4 case.*suprem_train Dataset004"):
        cascade.prepare_previous_stage(early)

    for fold in (0, 1):
        low = build_trainer(4, "3d_lowres", fold, roots, trainer_name=TRAINER, device="cpu", echo=False,
                            overrides=FAST)
        train_fold(low)
    trainer = build_trainer(4, "3d_cascade_fullres", 0, roots, trainer_name=TRAINER, device="cpu", echo=False,
                            overrides=FAST)
    summary = train_fold(trainer)
    gathered = roots.results / DATASET / f"{TRAINER}__suprem_plans__3d_lowres" / "predicted_next_stage" / \
        "3d_cascade_fullres"
    manifest = json.loads((gathered / "gathered.json").read_text())
    assert sorted(manifest["cases"]) == cases and {v["fold"] for v in manifest["cases"].values()} == {0, 1}
    for case in cases:  # on the full-res grid
        data = np.load(roots.preprocessed / DATASET / "suprem_plans_3d_fullres" / f"{case}.npy", mmap_mode="r")
        assert np.load(gathered / f"{case}.npy").shape == (1, *data.shape[1:])
    # measured (2 shared cores, ~40 s for the whole test): low-res folds 0.81 / 0.73, cascade fold 0 0.68-0.76,
    # held-out cases 0.79 / 0.65 (a label drawn at random at its frequency scores ~0.06)
    assert summary["foreground_mean"]["dice"] > 0.4

    held_out = hippo_cases(2, start=8)
    images = tmp_path / "imagesTs"
    images.mkdir()
    for case in held_out:
        shutil.copy(hippo_image(case), images)
    model = roots.results / DATASET / f"{TRAINER}__suprem_plans__3d_cascade_fullres"
    flags = ["-i", str(images), "-m", str(model), "-device", "cpu", "--disable_tta", "--disable_progress_bar"]
    assert predict_main([*flags, "-o", str(tmp_path / "pred")]) == 0
    dice, chance = [], []
    for case in held_out:
        pred_img = sitk.ReadImage(str(tmp_path / "pred" / f"{case}.nii.gz"))
        ref_img = sitk.ReadImage(str(hippo_label(case)))
        for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(pred_img, getter)() == pytest.approx(getattr(ref_img, getter)()), getter
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        ref = (ref > 0).astype(ref.dtype)  # the model learnt the merged hippocampus label
        for label in (1,):
            dice.append(_dice(pred, ref, label))
            chance.append(float((ref == label).mean()))  # expected Dice of labels drawn at the label's frequency
    assert np.mean(dice) > max(0.4, 3 * np.mean(chance)), (dice, chance)

    # without the low-res model the cascade cannot predict: one clear line
    shutil.move(str(model.parent / f"{TRAINER}__suprem_plans__3d_lowres"), str(tmp_path / "moved_lowres"))
    capsys.readouterr()
    assert predict_main([*flags, "-o", str(tmp_path / "pred2")]) == 2
    err = capsys.readouterr().err
    assert "previous stage '3d_lowres'" in err and "suprem_train" in err

"""Multi-channel input on real data: each ACDC patient's end-diastolic frame as channel 0 and its end-systolic frame
as channel 1 (the same slices at two moments of the heartbeat: different information on one grid), labels of the
end-diastolic frame. Planned with the default planner, preprocessed (z-score per channel), trained a few dozen
iterations and predicted on held-out patients: output on the input grid, Dice far above chance. Inputs that do not
fit the model's two channels (missing, extra, another grid, a one-channel folder) fail alone with one clear line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ACDC, requires_acdc

from suprem_auto.cli.predict import main as predict_main
from suprem_auto.dataset import load_raw_dataset
from suprem_auto.fingerprint import load_or_extract_fingerprint
from suprem_auto.imageio.sitk_io import geometry_mismatch, geometry_of
from suprem_auto.inference.predictor import Predictor
from suprem_auto.paths import resolve_roots
from suprem_auto.planning import apply_overrides, plan_experiments, save_plans
from suprem_auto.preprocessing import preprocess_dataset
from suprem_auto.training.run import build_trainer, train_fold

pytestmark = [requires_acdc, pytest.mark.usefixtures("single_torch_thread")]

# small patients (6-10 slices), several pathology groups; the last two are never trained on
TRAIN = ["patient022", "patient041", "patient065", "patient070", "patient080", "patient090"]
TEST = ["patient068", "patient094"]
CHANNELS = {"0": "cineMRI_ED", "1": "cineMRI_ES"}
DATASET_ID = 127
# a short run on 1 thread: a patch of the planned depth, a quarter-width network, no augmentation
TRAINING = dict(iterations=30, val_iters_per_epoch=1, num_workers=0, augmentation=False, precision="fp32")


def _frame(patient: str, frame: int) -> Path:
    return ACDC / "imagesTr" / f"{patient}_frame0{frame}_0000.nii.gz"


def _label(patient: str) -> Path:
    return ACDC / "labelsTr" / f"{patient}_frame01.nii.gz"


def _pair_dataset(raw_root: Path) -> Path:
    """Dataset127_ACDCPair: ``<patient>_0000`` = end-diastole, ``_0001`` = end-systole, label = end-diastole."""
    folder = raw_root / f"Dataset{DATASET_ID}_ACDCPair"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for patient in TRAIN:
        shutil.copy(_frame(patient, 1), folder / "imagesTr" / f"{patient}_0000.nii.gz")
        shutil.copy(_frame(patient, 2), folder / "imagesTr" / f"{patient}_0001.nii.gz")
        shutil.copy(_label(patient), folder / "labelsTr" / f"{patient}.nii.gz")
    dataset_json = json.loads((ACDC / "dataset.json").read_text())
    dataset_json.update(channel_names=CHANNELS, numTraining=len(TRAIN), name="ACDCPair")
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def _link(folder: Path, name: str, target: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(target)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Dict[str, object]:
    """Plan, preprocess and train the two-channel model (fold all): roots, plans, model folder."""
    for patient in TRAIN + TEST:
        if not _frame(patient, 2).is_file():
            pytest.skip(f"{_frame(patient, 2)} is missing from the shared ACDC copy")
    tmp = tmp_path_factory.mktemp("acdc_pair")
    roots = resolve_roots(str(tmp / "raw"), str(tmp / "preprocessed"), str(tmp / "results"))
    _pair_dataset(roots.raw)
    ds = load_raw_dataset(roots.raw, DATASET_ID)
    out = roots.preprocessed / ds.name
    out.mkdir(parents=True)
    shutil.copy(ds.folder / "dataset.json", out / "dataset.json")
    fingerprint = load_or_extract_fingerprint(ds, out, num_processes=1)
    planned = plan_experiments(ds, fingerprint, out)["suprem_plans"]
    depth = planned["configurations"]["3d_fullres"]["patch_size"][0]
    plans = apply_overrides(planned, "3d_fullres", {"patch_size": [depth, 96, 96], "batch_size": 2,
                                                    "network_width": 0.25})
    save_plans(plans, out / "suprem_plans.json")
    preprocess_dataset(ds, plans, "3d_fullres", out, num_processes=1, progress=False)
    trainer = build_trainer(DATASET_ID, "3d_fullres", "all", roots, device="cpu", echo=False, overrides=TRAINING)
    train_fold(trainer)
    return {"roots": roots, "planned": planned, "preprocessed": out / "suprem_plans_3d_fullres",
            "model": trainer.fold_dir.parent}


def _dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    p, r = prediction == label, reference == label
    return float(2 * np.count_nonzero(p & r) / max(1, np.count_nonzero(p) + np.count_nonzero(r)))


def test_both_frames_share_one_grid():
    """The pairing is sound: end-diastole and end-systole of every patient used here lie on the same grid."""
    for patient in TRAIN + TEST:
        ed, es = (sitk.ReadImage(str(_frame(patient, f))) for f in (1, 2))
        assert geometry_mismatch(geometry_of(ed), geometry_of(es)) is None, patient
        assert not np.array_equal(sitk.GetArrayViewFromImage(ed), sitk.GetArrayViewFromImage(es)), patient


def test_two_channels_are_planned_normalised_trained_and_predicted(trained, tmp_path):
    planned = trained["planned"]
    for name in ("2d", "3d_fullres"):
        schemes = [n["scheme"] for n in planned["configurations"][name]["normalization"]]
        assert schemes == ["zscore", "zscore"], name  # one entry per channel, from channel_names
    data = np.load(trained["preprocessed"] / f"{TRAIN[0]}.npy")
    assert data.shape[0] == 2
    # each channel normalised on its own: mean 0, std 1 per channel (no mask: the frames fill their grid)
    np.testing.assert_allclose(data.reshape(2, -1).mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(data.reshape(2, -1).std(axis=1), 1, atol=1e-3)
    assert np.mean(np.abs(data[0] - data[1])) > 0.1  # and they still differ

    for patient in TEST:
        _link(tmp_path / "in", f"{patient}_0000.nii.gz", _frame(patient, 1))
        _link(tmp_path / "in", f"{patient}_0001.nii.gz", _frame(patient, 2))
    predictor = Predictor.from_model_folder(trained["model"], device="cpu", progress=False, precision="fp32")
    report = predictor.predict_files(tmp_path / "in", tmp_path / "out")
    assert report.ok and sorted(report.written) == TEST, report.failed
    dice: List[float] = []
    chance: List[float] = []
    for patient in TEST:
        prediction = sitk.ReadImage(str(tmp_path / "out" / f"{patient}.nii.gz"))
        image = sitk.ReadImage(str(_frame(patient, 1)))
        assert geometry_mismatch(geometry_of(prediction), geometry_of(image), tol=0) is None
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(_label(patient))))
        predicted = sitk.GetArrayFromImage(prediction)
        dice += [_dice(predicted, reference, label) for label in (1, 2, 3)]
        # a labelling drawn at random with the true class frequencies scores each class's frequency
        chance += [float(np.mean(reference == label)) for label in (1, 2, 3)]
    assert np.mean(dice) > max(0.1, 5 * np.mean(chance)), (dice, chance)


def test_cases_that_do_not_fit_the_channels_fail_alone(trained, tmp_path):
    good, other = TEST[1], TEST[0]  # patient094 (10 slices) and patient068 (7 slices): different grids
    folder = tmp_path / "in"
    _link(folder, f"{good}_0000.nii.gz", _frame(good, 1))
    _link(folder, f"{good}_0001.nii.gz", _frame(good, 2))
    _link(folder, "missing_0000.nii.gz", _frame(good, 1))
    for c in range(3):
        _link(folder, f"extra_{c:04d}.nii.gz", _frame(good, 1 + c % 2))
    _link(folder, "mixed_0000.nii.gz", _frame(good, 1))
    _link(folder, "mixed_0001.nii.gz", _frame(other, 2))
    predictor = Predictor.from_model_folder(trained["model"], device="cpu", progress=False, precision="fp32")
    report = predictor.predict_files(folder, tmp_path / "out")
    assert report.written == [good]
    assert sorted(report.failed) == ["extra", "missing", "mixed"]
    assert all("\n" not in message for message in report.failed.values())
    expected = "the model takes 2 channels: {0}_0000 (cineMRI_ED), {0}_0001 (cineMRI_ES)"
    assert "case missing: missing channel file(s) missing_0001" in report.failed["missing"]
    assert expected.format("missing") in report.failed["missing"]
    assert "case extra: unexpected channel file(s) extra_0002.nii.gz" in report.failed["extra"]
    assert expected.format("extra") in report.failed["extra"]
    message = report.failed["mixed"]
    assert message.startswith(str(folder / "mixed_0001.nii.gz")) and "mixed_0000.nii.gz" in message
    assert "differs from channel 0" in message and "size" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{good}.nii.gz"]  # nothing for the others


def test_a_one_channel_folder_for_a_two_channel_model_is_refused_per_case(trained, tmp_path, capsys):
    for patient in TEST:
        _link(tmp_path / "in", f"{patient}_0000.nii.gz", _frame(patient, 1))
    code = predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(trained["model"]),
                         "-device", "cpu", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 1
    for patient in TEST:
        assert (f"case {patient}: missing channel file(s) {patient}_0001 (the model takes 2 channels: "
                f"{patient}_0000 (cineMRI_ED), {patient}_0001 (cineMRI_ES))") in err
    assert not list((tmp_path / "out").glob("*.nii.gz"))

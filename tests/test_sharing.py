"""Models people can share: export a tiny model trained on real hippocampus cases, install it elsewhere, predict with
it, and refuse tampered, pickled or too-new zips without writing anything."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.export_model import main as export_main
from suprem_auto.cli.install_model import main as install_main
from suprem_auto.cli.predict import main as predict_main
from suprem_auto.cli.train import main as train_main

FAST = ["--iters_per_epoch", "2", "--val_iters", "1", "--num_workers", "1", "-device", "cpu"]
MODEL = "SupremTrainer__suprem_plans__3d_fullres"


class Payload:
    """Stands for code an attacker pickles into a checkpoint; the installer must never unpickle it."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder with fold 0 trained for one tiny epoch on 6 real cases (final validation included)."""
    tmp = tmp_path_factory.mktemp("sharing")
    roots = make_training_roots(tmp, 6, tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))
    flags = ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]
    assert train_main(["4", "3d_fullres", "0", "--epochs", "1", *FAST, *flags]) == 0
    folder = roots.results / DATASET / MODEL
    (folder / "fold_0" / ".lock").write_text("held")  # run-time files must never travel
    images = tmp / "images"
    images.mkdir()
    cases = sorted(p.name for p in (roots.raw / DATASET / "imagesTr").glob("*_0000.nii.gz"))[:2]
    for name in cases:
        shutil.copy(roots.raw / DATASET / "imagesTr" / name, images / name)
    exported = tmp / "model.zip"
    assert export_main(["-m", str(folder), "-o", str(exported)]) == 0
    return folder, exported, images


def _tree(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _predict(model: str, images: Path, out: Path) -> Dict[str, np.ndarray]:
    assert predict_main(["-i", str(images), "-o", str(out), "-m", model, "--disable_tta", "-device", "cpu",
                         "--disable_progress_bar"]) == 0
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(out.glob("*.nii.gz"))}


def _rewrite(src: Path, dst: Path, change: Dict[str, bytes], recompute_checksums: bool = False) -> Path:
    """Copy a zip, replacing members; optionally recompute the card's checksums as a careful attacker would."""
    with zipfile.ZipFile(src) as zin:
        contents = {n: zin.read(n) for n in zin.namelist()}
    contents.update(change)
    if recompute_checksums:
        card = json.loads(contents["model_card.json"])
        card["files"] = {n: hashlib.sha256(contents[n]).hexdigest() for n in card["files"]}
        contents["model_card.json"] = json.dumps(card).encode()
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in contents.items():
            zout.writestr(name, data)
    return dst


def test_export_install_predict_identical_to_source(trained, tmp_path):
    folder, exported, images = trained
    with zipfile.ZipFile(exported) as zf:
        names = set(zf.namelist())
        card = json.loads(zf.read("model_card.json"))
        markdown = zf.read("MODEL_CARD.md").decode()
    prefix = f"{DATASET}/{MODEL}/"
    assert {"model_card.json", "MODEL_CARD.md", prefix + "plans.json", prefix + "dataset.json",
            prefix + "fold_0/checkpoint_final.pth"} <= names
    assert not any(n.endswith((".lock", "checkpoint_latest.pth", "training_log.txt")) for n in names)
    assert set(card["files"]) == names - {"model_card.json", "MODEL_CARD.md"}
    with zipfile.ZipFile(exported) as zf:
        for name, digest in card["files"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert card["labels"] == dataset_json["labels"] and card["channels"] == dataset_json["channel_names"]
    assert card["task"]["folds"] == ["0"] and card["training_cases"] == 6
    assert card["versions"]["torch"] == torch.__version__ and card["pretrained"] is None
    dice = card["cross_validation"]["dice_per_class"]
    foreground = {name for name, value in dataset_json["labels"].items() if value != 0}
    assert set(dice) == foreground and all(0 <= d <= 1 for d in dice.values())
    assert all(name in markdown for name in foreground) and card["files"][prefix + "plans.json"] in markdown

    results = tmp_path / "clean_results"
    assert install_main([str(exported), "--results", str(results)]) == 0
    installed = results / DATASET / MODEL
    assert (installed / "fold_0" / "checkpoint_final.pth").read_bytes() == \
        (folder / "fold_0" / "checkpoint_final.pth").read_bytes()
    assert not [p for p in _tree(results) if ".tmp" in p]
    source = _predict(str(folder), images, tmp_path / "from_source")
    assert len(source) == 2
    for model, out in ((str(installed), "from_installed"), (str(exported), "from_zip")):
        got = _predict(model, images, tmp_path / out)
        assert got.keys() == source.keys()
        for name in source:
            np.testing.assert_array_equal(got[name], source[name])
    assert install_main([str(exported), "--results", str(results)]) == 2  # already installed


def _assert_refused(zip_path: Path, results: Path, capsys, *expected: str) -> None:
    before = _tree(results)
    assert install_main([str(zip_path), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(zip_path) in err
    for text in expected:
        assert text in err, err
    assert _tree(results) == before


def test_tampered_pickled_and_newer_zips_are_refused_and_nothing_installed(trained, tmp_path, capsys):
    folder, exported, images = trained
    results = tmp_path / "results"
    (results / "Dataset001_Other").mkdir(parents=True)
    prefix = f"{DATASET}/{MODEL}/"
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = [8, 8, 8]
    tampered = _rewrite(exported, tmp_path / "tampered.zip", {prefix + "plans.json": json.dumps(plans).encode()})
    _assert_refused(tampered, results, capsys, prefix + "plans.json", "SHA-256")

    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    checkpoint["logging"] = Payload()
    torch.save(checkpoint, tmp_path / "evil.pth")
    evil = _rewrite(exported, tmp_path / "evil.zip",
                    {prefix + "fold_0/checkpoint_final.pth": (tmp_path / "evil.pth").read_bytes()},
                    recompute_checksums=True)
    _assert_refused(evil, results, capsys, prefix + "fold_0/checkpoint_final.pth", "refused for safety")
    out = capsys.readouterr().out
    assert "pickled code ran" not in out
    assert predict_main(["-i", str(images), "-o", str(tmp_path / "pred"), "-m", str(evil), "-device", "cpu"]) == 2
    assert "refused for safety" in capsys.readouterr().err and not (tmp_path / "pred").exists()

    with zipfile.ZipFile(exported) as zf:
        card = json.loads(zf.read("model_card.json"))
    card["format_version"] = 99
    newer = _rewrite(exported, tmp_path / "newer.zip", {"model_card.json": json.dumps(card).encode()})
    _assert_refused(newer, results, capsys, "model_card.json", "format_version 99", "upgrade")

    extra = _rewrite(exported, tmp_path / "extra.zip", {prefix + "fold_0/notes.txt": b"hello"})
    _assert_refused(extra, results, capsys, prefix + "fold_0/notes.txt", "not listed")


def test_export_refuses_a_folder_without_checkpoints(tmp_path, capsys):
    folder = tmp_path / DATASET / MODEL
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(tiny_plans()))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0}}))
    assert export_main(["-m", str(folder), "-o", str(tmp_path / "m.zip")]) == 2
    assert "no fold_*/checkpoint_final.pth" in capsys.readouterr().err and not (tmp_path / "m.zip").exists()

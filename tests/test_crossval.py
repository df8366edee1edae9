"""suprem_cross_validate end to end on real hippocampus cases with a tiny budget, plus the report in a browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import HIPPO
from training_data import make_training_roots
from suprem_auto.crossval.driver import RunSpec, cross_validate
from suprem_auto.utils.atomic import load_json

FOLDS = (0, 1)
TRAINING = {"num_epochs": 2, "iters_per_epoch": 25, "val_iters_per_epoch": 2, "optimizer": "adamw", "lr": 3e-3,
            "lr_schedule": "warmup_cosine", "warmup_epochs": 0, "num_workers": 0}


def _held_out_cases(target: Path, n: int = 3) -> Path:
    """Copy n real cases the training never saw into imagesTs/labelsTs of the raw dataset."""
    (target / "imagesTs").mkdir()
    (target / "labelsTs").mkdir()
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (HIPPO / "imagesTr").glob("*_0000.nii.gz"))[-n:]
    for c in cases:
        shutil.copy(HIPPO / "imagesTr" / f"{c}_0000.nii.gz", target / "imagesTs")
        shutil.copy(HIPPO / "labelsTr" / f"{c}.nii.gz", target / "labelsTs")
    return target


@pytest.fixture(scope="module")
def crossval(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crossval")
    roots = make_training_roots(tmp, n_cases=10)
    raw = _held_out_cases(roots.raw / "Dataset004_Hippocampus")
    from suprem_auto.dataset import load_raw_dataset
    from suprem_auto.fingerprint import extract_fingerprint
    from suprem_auto.utils.atomic import atomic_write_json

    fingerprint = extract_fingerprint(load_raw_dataset(roots.raw, 4), num_processes=1, progress=False)
    atomic_write_json(roots.preprocessed / "Dataset004_Hippocampus" / "dataset_fingerprint.json", fingerprint)
    result = cross_validate(roots, "4", [RunSpec()], folds=FOLDS, overrides=TRAINING, device="cpu")
    return roots, raw, result


@pytest.mark.slow
def test_report_tables_and_recipe_agree_with_per_fold_summaries(crossval):
    roots, _, result = crossval
    out = result.out_dir
    for name in ("report.html", "report.md", "inference_recipe.json", "inference_instructions.txt",
                 "crossval_summary.json"):
        assert (out / name).is_file(), name
    (model,) = result.models
    assert model.finished_folds == list(FOLDS)
    fold_summaries = [load_json(model.model_dir / f"fold_{f}" / "validation" / "summary.json") for f in FOLDS]
    # pooled CV Dice per class = mean over all validation cases of all folds (recomputed from the fold files)
    for label in ("1", "2"):
        values = [c["metrics"][label]["dice"] for s in fold_summaries for c in s["metric_per_case"]]
        values = [v for v in values if v is not None]
        assert model.summary["mean"][label]["dice"] == pytest.approx(np.mean(values), abs=1e-6)
        fold_means = [s["mean"][label]["dice"] for s in fold_summaries]
        row = next(line for line in (out / "report.md").read_text().splitlines()
                   if line.startswith(f"| {model.name} | {'Anterior' if label == '1' else 'Posterior'} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(np.mean(values), abs=1e-4)
        assert float(cells[3]) == pytest.approx(np.mean(fold_means), abs=1e-4)
        assert float(cells[4]) == pytest.approx(np.std(fold_means, ddof=1), abs=1e-4)
    recipe = result.recipe
    assert recipe["best"] == model.name and recipe["folds"] == list(FOLDS)
    assert recipe["best_foreground_dice"] == pytest.approx(model.summary["foreground_mean"]["dice"])
    assert "suprem_predict" in recipe["commands"][0] and "-f 0 1" in recipe["commands"][0]
    # the folds that were not trained are reported as missing
    summary = load_json(out / "crossval_summary.json")
    assert summary["models"][0]["missing_folds"] == []


@pytest.mark.slow
def test_recipe_on_held_out_cases_matches_reported_dice(crossval, tmp_path):
    roots, raw, result = crossval
    from suprem_auto.cli.predict import main as predict_main
    from suprem_auto.evaluation import evaluate_folder

    command = result.recipe["commands"][0].replace("INPUT_FOLDER", str(raw / "imagesTs")) \
        .replace("OUTPUT_FOLDER", str(tmp_path / "pred"))
    argv = command.split()[1:] + ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed),
                                  "--results", str(roots.results), "--disable_tta"]
    assert predict_main(argv) == 0
    summary = evaluate_folder(raw / "labelsTs", tmp_path / "pred", labels=[1, 2])
    held_out = summary["foreground_mean"]["dice"]
    reported = result.recipe["best_foreground_dice"]
    assert held_out > 0.05, "the model should have learned something in its tiny budget"
    assert abs(held_out - reported) < 0.3, (held_out, reported)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(crossval, tmp_path):
    _, _, result = crossval
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = result.report_html.resolve().as_uri()
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<table", dom.stdout)) >= 4
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)) >= 3
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,3000", url],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.std() > 0.05, "the rendered page is blank"
    # the box plots and curves put coloured pixels on the page (not only black text on white)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 0.3).mean() > 0.001

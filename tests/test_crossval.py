"""suprem_cross_validate end to end on real hippocampus cases with a tiny budget, plus the report in a browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import HIPPO_CASES, hippo_image, hippo_label
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
    for c in HIPPO_CASES[-n:]:
        shutil.copy(hippo_image(c), target / "imagesTs")
        shutil.copy(hippo_label(c), target / "labelsTs")
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


def _report_table(markdown: str, first_header: str, second_header: str) -> list:
    """Rows (lists of cells) of the Markdown table whose header starts with the two given columns."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} | {second_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_report_shows_what_each_fold_did(crossval):
    import torch

    _, _, result = crossval
    (model,) = result.models
    rows = {int(r[1]): r for r in _report_table((result.out_dir / "report.md").read_text(), "model", "fold")}
    assert sorted(rows) == list(FOLDS)
    for fold, row in rows.items():
        fold_dir = model.model_dir / f"fold_{fold}"
        hyper = load_json(fold_dir / "hyperparameters.json")
        _, _, network, width, params, precision, iterations, seconds, per_iteration, ratio, _ = row
        assert network.startswith(hyper["architecture"]["name"]) and "8-16-32" in network
        assert float(width) == hyper["config"]["network_width"]
        weights = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=True)["network_weights"]
        assert int(params.replace(",", "")) == sum(t.numel() for t in weights.values())
        assert precision == hyper["precision"]
        done = TRAINING["num_epochs"] * TRAINING["iters_per_epoch"]
        assert iterations.split()[0] == str(done)
        records = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
        trained_s = records[-1].get("elapsed_s", sum(r["epoch_time_s"] for r in records))
        assert float(seconds.split()[0]) == pytest.approx(trained_s, abs=0.51)
        assert float(per_iteration) == pytest.approx(trained_s / done, rel=0.05, abs=2e-3)
        assert float(ratio) >= 1.0
    html = result.report_html.read_text()
    assert "Training runs and learning curves" in html and "curves_0.png" in html


def _write_fold(fold_dir: Path, records: list, tail: str = "") -> None:
    fold_dir.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    (fold_dir / "metrics.jsonl").write_text(text + "not json at all\n" + tail)


def test_fold_runs_use_new_fields_skip_bad_lines_and_flag_a_busy_machine(tmp_path):
    from suprem_auto.crossval import figures
    from suprem_auto.crossval.fold_runs import read_fold_run
    from suprem_auto.crossval.gather import ModelCrossValidation
    from suprem_auto.crossval.report import fold_run_rows, speed_warnings

    model_dir = tmp_path / "SupremTrainer__suprem_plans__3d_fullres"
    # epochs with the fields the budget code may add; the third epoch ran 4x slower (a busy machine)
    new_style = [{"epoch": e, "train_loss": 1.0 - 0.1 * e, "val_loss": 1.0, "ema_pseudo_dice": 0.1 * e,
                  "epoch_time_s": 10.0 * s, "iteration": 50 * (e + 1), "elapsed_s": 10.0 * (e + 1) + 30 * (e >= 2),
                  "sec_per_iteration": 0.2 * s, "precision": "bf16"} for e, s in enumerate((1, 1, 4, 1))]
    _write_fold(model_dir / "fold_0", new_style, tail='{"epoch": 4, "train_lo')  # a half-written last line
    run = read_fold_run(model_dir / "fold_0", 0)
    assert [p.epoch for p in run.epochs] == [0, 1, 2, 3]
    assert run.iterations == 200 and not run.iterations_estimated and run.precision == "bf16"
    assert run.wall_time_s == 70.0 and run.sec_per_iteration == pytest.approx(0.35)
    assert run.speed_ratio == pytest.approx(4.0) and run.speed_varied
    model = ModelCrossValidation(model_dir, [0], [])
    (row,) = fold_run_rows(model, [run])
    assert row[2] == row[3] == row[4] == "not recorded"  # no hyperparameters.json, no checkpoint
    assert row[6] == "200" and row[9] == "4.00" and "busy" in row[10]
    (warning,) = speed_warnings(model, [run])
    assert "fold 0" in warning and "4.0x" in warning
    assert figures.learning_curves([run], model.name)[:4] == b"\x89PNG"

    # today's records (no iteration, no elapsed time): estimated from iters_per_epoch, cut by the plan's final count
    old_style = [{k: v for k, v in r.items() if k not in ("iteration", "elapsed_s", "sec_per_iteration",
                                                          "precision")} for r in new_style]
    _write_fold(model_dir / "fold_1", old_style)
    (model_dir / "fold_1" / "hyperparameters.json").write_text(json.dumps(
        {"architecture": {"name": "plain_unet", "kwargs": {"features_per_stage": [8, 16]}}, "precision": "fp32",
         "config": {"iters_per_epoch": 50, "network_width": 0.25}}))
    (model_dir / "fold_1" / "budget_plan.json").write_text(json.dumps({"iters_per_epoch": 50, "iteration": 170}))
    run = read_fold_run(model_dir / "fold_1", 1)
    assert [p.iteration for p in run.epochs] == [50, 100, 150, 170] and run.iterations == 170
    assert run.wall_time_s == pytest.approx(70.0) and run.wall_time_source == "sum of epoch times"
    (row,) = fold_run_rows(model, [run])
    assert row[2] == "plain_unet (8-16)" and row[3] == "0.25" and row[5] == "fp32" and row[6] == "170"
    # the short last epoch (20 iterations, mostly validation) does not count towards the speed ratio
    assert run.speed_ratio == pytest.approx(4.0)


def test_example_slice_gives_each_class_its_own_colour():
    import io

    import matplotlib.image as mpimg

    from suprem_auto.crossval import figures
    from suprem_auto.imageio import read_images, read_segmentation

    case = HIPPO_CASES[0]
    image = read_images([hippo_image(case)])[0][0]
    label = read_segmentation(hippo_label(case))[0][0]
    png = figures.overlay_slice(image, label, label, f"best case {case}", {1: "Anterior", 2: "Posterior"})
    pixels = mpimg.imread(io.BytesIO(png))[..., :3]
    for colour in figures.CLASS_COLOURS[:2]:
        rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(axis=2) < 0.08).sum() > 30, colour

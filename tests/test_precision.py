"""bf16 inference where the CPU has it natively (the training's detection), forced either way with --precision:
bf16 and fp32 predictions of a briefly trained model agree on real hippocampus cases."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.inference.predictor import Predictor
from suprem_auto.inference.sliding_window import resolve_precision
from suprem_auto.training.precision import choose_precision, inference_precision

FAST = ["--num_workers", "1", "-device", "cpu"]
#: a forced bf16 prediction on a CPU without native bf16 (emulated, ~100x slower) is skipped above this estimate
MAX_EMULATED_S = 60.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net trained briefly (fold 0 of 6 real cases) and the raw folder of the cases."""
    roots = make_training_roots(tmp_path_factory.mktemp("precision"), 6,
                                tiny_plans(patch_size=(16, 24, 16), features=(8, 16, 32)))
    flags = ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]
    assert train_main(["4", "3d_fullres", "0", "--epochs", "2", "--iters_per_epoch", "40", "--val_iters", "1",
                       "--optimizer", "adamw", "--lr", "0.01", "--lr_schedule", "warmup_cosine", "--no_mirroring",
                       "--no_final_validation", *FAST, *flags]) == 0
    return roots.results / DATASET / "SupremTrainer__suprem_plans__3d_fullres", roots.raw / DATASET


def test_inference_precision_follows_the_training_detection():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native, avx2 = {"avx2", "avx512_bf16"}, {"avx2", "fma"}
    assert inference_precision("auto", cpu, native, torch_supported=True) == "bf16"
    assert inference_precision("auto", cpu, avx2, torch_supported=True) == "fp32"
    assert inference_precision("auto", cuda, set(), torch_supported=False) == "fp16"
    assert inference_precision("bf16", cpu, avx2, torch_supported=False) == "bf16"
    assert inference_precision("fp32", cpu, native, torch_supported=True) == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        inference_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_precision("int8", cpu)
    # this machine: what training picks, prediction picks; --cpu_bf16 stays an alias of bf16
    assert resolve_precision("auto", cpu) == choose_precision("auto", cpu)
    assert resolve_precision("auto", cpu, cpu_bf16=True) == "bf16"
    assert resolve_precision(None, cpu) == "fp32"


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(x, y).sum() / total


def test_bf16_and_fp32_predictions_agree(trained, tmp_path):
    model, raw = trained
    fp32 = Predictor.from_model_folder(model, folds=[0], device="cpu", progress=False, precision="fp32")
    assert fp32.precision == "fp32"
    auto = Predictor.from_model_folder(model, folds=[0], device="cpu", progress=False)
    assert auto.precision == choose_precision("auto", torch.device("cpu"))
    bf16 = Predictor.from_model_folder(model, folds=[0], device="cpu", progress=False, precision="bf16")
    cases = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[:3]
    if auto.precision != "bf16":  # no native bf16 here: one emulated case only, if it is not far too slow
        cases = cases[:1]
        tile = torch.zeros((1, 1, *bf16.patch_size))
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf16.network.eval()(tile)
        estimate = (time.perf_counter() - start) * 8 * len(fp32.mirror_axes or [0])
        if estimate > MAX_EMULATED_S:
            pytest.skip(f"this CPU has no native bf16: an emulated bf16 prediction would take ~{estimate:.0f}s")
    from suprem_auto.imageio import read_images

    labels = fp32.labels.foreground_labels
    checked = 0
    for path in cases:
        images, props = read_images([path])
        seg32, _ = fp32.predict_array(images, props)
        seg16, _ = bf16.predict_array(images, props)
        for label in labels:
            if (seg32 == label).sum() > 50:
                dice = _dice(seg32, seg16, label)
                print(f"{path.name} label {label}: {(seg32 == label).sum()} voxels, bf16/fp32 Dice {dice:.4f}")
                assert dice >= 0.99, (path.name, label)
                checked += 1
    assert checked >= len(cases), "the model predicts foreground: the agreement is measured on it"


def test_predict_cli_precision_flag(trained, tmp_path, capsys):
    from suprem_auto.cli.predict import main as predict_main

    model, raw = trained
    case = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[0]
    common = ["-i", str(case), "-m", str(model), "-f", "0", "-device", "cpu", "--disable_progress_bar"]
    assert predict_main([*common, "-o", str(tmp_path / "fp16"), "--precision", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "fp16").exists(), "nothing written"
    assert predict_main([*common, "-o", str(tmp_path / "fp32"), "--precision", "fp32"]) == 0
    assert predict_main([*common, "-o", str(tmp_path / "alias"), "--cpu_bf16"]) == 0
    assert len(list((tmp_path / "alias").glob("*.nii.gz"))) == 1

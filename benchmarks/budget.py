"""Training on a budget: recipe experiments, side-by-side with nnU-Net v2 at equal wall time, step-time comparison.

    python benchmarks/budget.py recipe  --work benchmarks/work/budget --budget 150s
    python benchmarks/budget.py steps   --work benchmarks/work/budget --venv /path/to/nnunet/venv
    python benchmarks/budget.py compare --work benchmarks/work/budget --venv V --budget 10m
    python benchmarks/budget.py flops   --work benchmarks/work/budget --threads 2
    python benchmarks/budget.py load    --work benchmarks/work/budget --budget 10m --seed 0

Hippocampus cases (sorted) from ../shared/data: 40 training, 20 selection (validation of fold 0), 40 held-out
(validation of fold 1, same training cases) that the recipe choice never sees. Results are JSON under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from nnunet_training import NNUNET_BUDGET_TRAINING  # benchmarks/ is sys.path[0] when run as a script
from suprem_auto.planning import DEFAULT_PLANS_NAME

HIPPO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Dataset004_Hippocampus"
DATASET = "Dataset004_Hippocampus"
N_TRAIN, N_SELECT, N_HELDOUT = 40, 20, 40
#: nnU-Net v2's plan for this dataset: 4 stages 32-256, patch 40x56x40, batch 8
NNUNET_FEATURES = (32, 64, 128, 256)
NNUNET_PATCH = (40, 56, 40)
MODEL = f"SupremTrainer__{DEFAULT_PLANS_NAME}__3d_fullres"


def plans(features: Sequence[int], patch: Sequence[int], batch: int) -> Dict[str, Any]:
    """A plan for 1 mm hippocampus MRI (no resampling, z-score) with a plain U-Net of the given widths (the
    package's hand plan, the one the tests train with, with nnU-Net's 2 decoder convolutions per stage)."""
    from suprem_auto.planning.hand_plans import plain_unet_plans

    return plain_unet_plans(DATASET, patch_size=patch, batch_size=batch, features=features, decoder_convs=2)


def case_ids() -> List[str]:
    if not (HIPPO / "imagesTr").is_dir():
        raise SystemExit(f"{HIPPO}: not found; this benchmark needs the full shared hippocampus set (../shared/data)")
    return sorted(p.name[: -len("_0000.nii.gz")] for p in (HIPPO / "imagesTr").glob("*_0000.nii.gz"))


def prepare(work: Path, features: Sequence[int], patch: Sequence[int], batch: int) -> Path:
    """Raw copy of the 100 cases, our preprocessing with the given plan, and the two splits; returns the roots
    folder (raw/, preprocessed/, results/ inside)."""
    from suprem_auto.conversion import make_subset
    from suprem_auto.dataset import load_raw_dataset
    from suprem_auto.preprocessing import preprocess_dataset
    from suprem_auto.utils.atomic import atomic_write_json

    root = work / f"data_{'-'.join(map(str, features))}_{'x'.join(map(str, patch))}"
    pre = root / "preprocessed" / DATASET
    if (pre / "splits_final.json").is_file():
        return root
    ids = case_ids()[: N_TRAIN + N_SELECT + N_HELDOUT]
    raw = make_subset(HIPPO, root / "raw", 4, "Hippocampus", len(ids), case_ids=ids, overwrite=True)
    ds = load_raw_dataset(root / "raw", 4)
    pre.mkdir(parents=True, exist_ok=True)
    atomic_write_json(pre / f"{DEFAULT_PLANS_NAME}.json", plans(features, patch, batch))
    shutil.copy(raw / "dataset.json", pre / "dataset.json")
    preprocess_dataset(ds, plans(features, patch, batch), "3d_fullres", pre, num_processes=2, progress=True)
    train, select, held = ids[:N_TRAIN], ids[N_TRAIN:N_TRAIN + N_SELECT], ids[N_TRAIN + N_SELECT:]
    atomic_write_json(pre / "splits_final.json", [{"train": train, "val": select}, {"train": train, "val": held}])
    return root


def _roots(root: Path, results: Path) -> List[str]:
    return ["--raw", str(root / "raw"), "--preprocessed", str(root / "preprocessed"), "--results", str(results)]


def _summary_dice(fold_dir: Path) -> Dict[str, Any]:
    s = json.loads((fold_dir / "validation" / "summary.json").read_text())
    return {"foreground_mean": s["foreground_mean"]["dice"],
            "per_class": {k: v["dice"] for k, v in s["mean"].items()}}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def train_ours(root: Path, results: Path, budget: str, flags: Sequence[str]) -> Dict[str, Any]:
    """suprem_train --budget on fold 0 (selection cases validated), then the same weights on the held-out cases
    (fold 1 --val, which shares the training cases)."""
    load_before = _load()
    start = time.monotonic()
    cmd = [sys.executable, "-m", "suprem_auto.cli.train", "4", "3d_fullres", "0", "--budget", budget,
           "-device", "cpu", *flags, *_roots(root, results)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    fold0 = results / DATASET / MODEL / "fold_0"
    fold1 = fold0.parent / "fold_1"
    fold1.mkdir(exist_ok=True)
    shutil.copy(fold0 / "checkpoint_final.pth", fold1 / "checkpoint_final.pth")
    subprocess.run([sys.executable, "-m", "suprem_auto.cli.train", "4", "3d_fullres", "1", "--val", "-device", "cpu",
                    *flags, *_roots(root, results)], check=True, stdout=subprocess.DEVNULL)
    plan = json.loads((fold0 / "budget_plan.json").read_text())
    return {"flags": list(flags), "budget": budget, "wall_s": round(wall, 1), "iterations": plan["iteration"],
            "sec_per_iteration": round(plan["sec_per_iteration"], 3), "load_before": load_before,
            "load_after": _load(), "selection": _summary_dice(fold0), "held_out": _summary_dice(fold1)}


RECIPE_VARIANTS = {
    # 150 s experiments (hand plan with 8-16-32-64 features, --features)
    "adamw1e-3_cosine_bs2": [],
    "sgd1e-2_poly_bs2": ["--optimizer", "sgd", "--lr", "0.01", "--lr_schedule", "poly", "--weight_decay", "3e-5"],
    "adamw3e-3_cosine_bs2": ["--lr", "3e-3"],
    "adamw1e-3_cosine_bs2_noaug": ["--no_augmentation"],
    "adamw1e-3_cosine_bs2_nods": ["--no_deep_supervision"],
    "adamw1e-3_cosine_bs4": ["--batch_size", "4"],
    # width experiments: nnU-Net's plan (32-64-128-256) scaled by --network_width (use --features 32,64,128,256)
    "w0.25_adamw1e-3": ["--network_width", "0.25"],
    "w0.25_adamw3e-3": ["--network_width", "0.25", "--lr", "3e-3"],
    "w0.5_adamw1e-3": ["--network_width", "0.5"],
    "w0.5_adamw3e-3": ["--network_width", "0.5", "--lr", "3e-3"],
    "w0.25_adamw3e-3_noaug": ["--network_width", "0.25", "--lr", "3e-3", "--no_augmentation"],
    "w0.25_adamw3e-3_bs4": ["--network_width", "0.25", "--lr", "3e-3", "--batch_size", "4"],
    "w1_adamw1e-3": ["--network_width", "1"],
    "w0.25_adamw3e-3_nomirror": ["--network_width", "0.25", "--lr", "3e-3", "--no_mirroring"],
    "w0.25_adamw1e-2_nomirror": ["--network_width", "0.25", "--lr", "1e-2", "--no_mirroring"],
    "w0.5_adamw3e-3_nomirror": ["--network_width", "0.5", "--lr", "3e-3", "--no_mirroring"],
}


def run_recipe(work: Path, budget: str, variants: Sequence[str], features: Sequence[int]) -> Dict[str, Any]:
    root = prepare(work, features, NNUNET_PATCH, 2)
    out_path = work / f"recipe_{budget}{'' if list(features) == [8, 16, 32, 64] else '_' + '-'.join(map(str, features))}.json"
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for name in variants:
        if name in out:
            continue
        results = work / "recipe_results" / budget / name
        shutil.rmtree(results, ignore_errors=True)
        out[name] = train_ours(root, results, budget, [*RECIPE_VARIANTS[name]])
        out[name]["network_features"] = list(features)
        out_path.write_text(json.dumps(out, indent=2))
        print(name, json.dumps(out[name]), flush=True)
    return out


NNUNET_STEP_SCRIPT = r'''
import sys, time, json, torch, numpy as np
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
torch.set_num_threads(int(sys.argv[2]))
n = int(sys.argv[1])
net = PlainConvUNet(1, 4, (32, 64, 128, 256), torch.nn.Conv3d, 3, (1, 2, 2, 2), (2, 2, 2, 2), 3, (2, 2, 2), True,
                    torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                    {"inplace": True}, deep_supervision=True)
loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                             {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                             dice_class=MemoryEfficientSoftDiceLoss), [1, 0.5, 0.25])
opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
x = torch.randn(n, 1, 40, 56, 40)
ys = [torch.randint(0, 3, (n, 1, 40 // s, 56 // s, 40 // s)).float() for s in (1, 2, 4)]
times = []
for i in range(3):
    t = time.monotonic(); opt.zero_grad(); l = loss(net(x), ys); l.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12); opt.step(); times.append(time.monotonic() - t)
print(json.dumps({"params": sum(p.numel() for p in net.parameters()), "step_s": times}))
'''


NNUNET_TRAIN_SCRIPT = NNUNET_BUDGET_TRAINING + r'''
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
# trains on the budget, then predicts the held-out images
budget, pre, held_images, out_dir = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
tr, iters, train_s = train_on_budget(budget, pre, "all")
net = tr.network._orig_mod if hasattr(tr.network, "_orig_mod") else tr.network
net.decoder.deep_supervision = False
pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, perform_everything_on_device=False,
                       device=torch.device("cpu"), verbose=False, verbose_preprocessing=False)
pred.manual_initialization(net, tr.plans_manager, tr.configuration_manager, [net.state_dict()], tr.dataset_json,
                           "nnUNetTrainer", tr.inference_allowed_mirroring_axes)
os.makedirs(out_dir, exist_ok=True)
pred.predict_from_files_sequential(held_images, out_dir, save_probabilities=False, overwrite=True)
print(json.dumps({"iterations": iters, "epochs": tr.current_epoch, "train_wall_s": train_s,
                  "sec_per_iteration": train_s / max(1, iters)}))
'''


def dice_per_class(pred_dir: Path, label_dir: Path, cases: Sequence[str], labels: Sequence[int]) -> Dict[str, Any]:
    """Mean over cases of the per-case Dice of each label (a case where both are empty counts as 1)."""
    import numpy as np
    import SimpleITK as sitk

    per = {str(k): [] for k in labels}
    for c in cases:
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{c}.nii.gz")))
        g = sitk.GetArrayFromImage(sitk.ReadImage(str(label_dir / f"{c}.nii.gz")))
        for k in labels:
            a, b = p == k, g == k
            denom = a.sum() + b.sum()
            per[str(k)].append(1.0 if denom == 0 else 2.0 * (a & b).sum() / denom)
    means = {k: float(np.mean(v)) for k, v in per.items()}
    return {"per_class": means, "foreground_mean": float(np.mean(list(means.values())))}


def run_compare(work: Path, venv: Path, budget: str, concurrent: bool = False,
                ours_only: bool = False) -> Dict[str, Any]:
    """nnU-Net v2 and suprem_auto --budget trained on the same 40 training cases for the same wall time, one after
    the other on the whole machine (``concurrent``: both at once, sharing it); both predict the same 40 held-out
    cases with mirroring, and one function computes the Dice of both."""
    from suprem_auto.training.budget import parse_duration

    seconds = parse_duration(budget)
    root = prepare(work, NNUNET_FEATURES, NNUNET_PATCH, 2)
    ids = case_ids()
    train, held = ids[:N_TRAIN], ids[N_TRAIN + N_SELECT:N_TRAIN + N_SELECT + N_HELDOUT]
    nn = work / "nnunet"
    held_images = nn / "heldout_images"
    if not (nn / "pre" / DATASET / "nnUNetPlans.json").is_file():
        from suprem_auto.conversion import make_subset

        make_subset(HIPPO, nn / "raw", 4, "Hippocampus", len(train), case_ids=train, overwrite=True)
        held_images.mkdir(parents=True, exist_ok=True)
        for c in held:
            shutil.copy(HIPPO / "imagesTr" / f"{c}_0000.nii.gz", held_images)
    env = dict(os.environ, nnUNet_raw=str(nn / "raw"), nnUNet_preprocessed=str(nn / "pre"),
               nnUNet_results=str(nn / "results"), nnUNet_n_proc_DA="1")
    if not (nn / "pre" / DATASET / "nnUNetPlans.json").is_file():
        subprocess.run([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres", "-np", "2"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    script = work / "nnunet_budget_train.py"
    script.write_text(NNUNET_TRAIN_SCRIPT)
    nn_pred = nn / f"pred_{budget}"
    results = work / "compare_results" / budget
    nn_cmd = [str(venv / "bin" / "python"), str(script), str(seconds), str(nn / "pre" / DATASET), str(held_images),
              str(nn_pred)]
    nn_log = open(nn / f"train_{budget}.log", "w")
    load_before = _load()
    shutil.rmtree(results, ignore_errors=True)
    nn_out, nn_wall, nn_proc = None, 0.0, None
    if concurrent and not ours_only:  # both at once, each with about half the machine
        nn_proc = subprocess.Popen(nn_cmd, env=env, stdout=subprocess.PIPE, stderr=nn_log, text=True)
    elif not ours_only:  # one after the other, each with the whole machine
        nn_start = time.monotonic()
        nn_out = subprocess.run(nn_cmd, env=env, stdout=subprocess.PIPE, stderr=nn_log, text=True,
                                check=True).stdout
        nn_wall = time.monotonic() - nn_start
    ours = train_ours(root, results, budget, [])
    if nn_proc is not None:
        nn_out, _ = nn_proc.communicate()
    nn_stats = json.loads(nn_out.strip().splitlines()[-1]) if nn_out else None
    if nn_stats is not None and not concurrent:
        nn_stats["wall_incl_prediction_s"] = round(nn_wall, 1)
    labels = [1, 2]
    fold1 = results / DATASET / MODEL / "fold_1" / "validation"
    out = {"budget": budget, "held_out_cases": len(held), "train_cases": len(train), "load_before": load_before,
           "load_after": _load(),
           "run": "both at the same time, sharing the machine" if concurrent else "one after the other",
           "nnunet": (dict(nn_stats, dice=dice_per_class(nn_pred, HIPPO / "labelsTr", held, labels))
                      if nn_stats is not None else "not run (--ours_only)"),
           "suprem_auto": dict({k: ours[k] for k in ("iterations", "sec_per_iteration", "wall_s")},
                               dice=dice_per_class(fold1, HIPPO / "labelsTr", held, labels))}
    (work / f"compare_{budget}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


HOG_SCRIPT = r'''
import random, sys, time
rng, end = random.Random(int(sys.argv[1])), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:  # one core: busy for a random stretch, then idle for one
    busy_until = time.monotonic() + rng.uniform(5, 40)
    while time.monotonic() < min(busy_until, end):
        sum(i * i for i in range(10000))
    time.sleep(max(0.0, min(rng.uniform(5, 30), end - time.monotonic())))
'''


def _train_and_score(root: Path, results: Path, budget: str, held: Sequence[str], hog_seed: int | None) -> Dict[str, Any]:
    """One ``suprem_train --budget`` on fold 0 (optionally beside the CPU hog), then the model predicts the held-out
    cases with ``suprem_predict``; wall time, iterations, last learning rate and held-out Dice."""
    from suprem_auto.training.budget import parse_duration

    seconds = parse_duration(budget)
    hog = None
    if hog_seed is not None:
        hog = subprocess.Popen([sys.executable, "-c", HOG_SCRIPT, str(hog_seed), str(seconds + 60)])
    load_before = _load()
    start = time.monotonic()
    cmd = [sys.executable, "-m", "suprem_auto.cli.train", "4", "3d_fullres", "0", "--budget", budget,
           "-device", "cpu", *_roots(root, results)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    if hog is not None:
        hog.kill()
        hog.wait()
    model = results / DATASET / MODEL
    fold = model / "fold_0"
    plan = json.loads((fold / "budget_plan.json").read_text())
    epochs = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines() if line.strip()]
    held_images = results / "heldout_images"
    held_images.mkdir(parents=True, exist_ok=True)
    for c in held:
        shutil.copy(root / "raw" / DATASET / "imagesTr" / f"{c}_0000.nii.gz", held_images)
    pred = results / "heldout_pred"
    subprocess.run([sys.executable, "-m", "suprem_auto.cli.predict", "-i", str(held_images), "-o", str(pred),
                    "-m", str(model), "-f", "0", "-device", "cpu", "--disable_progress_bar"], check=True,
                   stdout=subprocess.DEVNULL)
    return {"budget_s": seconds, "wall_s": round(wall, 1), "over_budget_s": round(wall - seconds, 1),
            "run_elapsed_s": round(plan.get("elapsed_s", 0.0), 1), "iterations": plan.get("iteration"),
            "sec_per_iteration": round(plan.get("sec_per_iteration", 0.0), 3),
            "progress": plan.get("progress"), "last_lr": epochs[-1].get("lr") if epochs else None,
            "peak_lr": plan.get("lr"), "final_validation_estimated_s": plan.get("final_validation_s"),
            "final_validation_measured_s": plan.get("final_validation_measured_s"),
            "epoch_sec_per_iteration": [e.get("sec_per_iteration") for e in epochs],
            "load_before": load_before, "load_after": _load(),
            "held_out": dice_per_class(pred, root / "raw" / DATASET / "labelsTr", held, [1, 2])}


def run_load(work: Path, budget: str, seed: int) -> Dict[str, Any]:
    """The same --budget run on the quiet machine and beside a CPU hog that takes one core for random stretches
    (seeded), one after the other; both scored on the 40 held-out cases."""
    root = prepare(work, NNUNET_FEATURES, NNUNET_PATCH, 2)
    held = case_ids()[N_TRAIN + N_SELECT:N_TRAIN + N_SELECT + N_HELDOUT]
    out: Dict[str, Any] = {"budget": budget, "hog_seed": seed, "cpu": _cpu_name()}
    for name, hog_seed in (("quiet", None), ("hog", seed)):
        results = work / "load_results" / budget / name
        shutil.rmtree(results, ignore_errors=True)
        out[name] = _train_and_score(root, results, budget, held, hog_seed)
        print(name, json.dumps(out[name]), flush=True)
    q, h = out["quiet"]["held_out"]["foreground_mean"], out["hog"]["held_out"]["foreground_mean"]
    out["hog_over_quiet"] = round(h / q, 3) if q else None
    (work / f"load_{budget}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def _cpu_name() -> str:
    """CPU model and the flags that decide our precision (named beside every figure)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX2'}"


def our_step_times(batch: int, threads: int, channels_last: bool) -> Dict[str, Any]:
    """Our training step (network, deep-supervision Dice+CE, clipping, optimiser) at nnU-Net's network and patch."""
    import torch

    from suprem_auto.networks import build_network
    from suprem_auto.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
    from suprem_auto.training.precision import to_memory_format

    torch.set_num_threads(threads)
    arch = plans(NNUNET_FEATURES, NNUNET_PATCH, batch)["configurations"]["3d_fullres"]["architecture"]
    net = build_network(arch, 1, 3, deep_supervision=True)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    x = to_memory_format(torch.randn(batch, 1, *NNUNET_PATCH), channels_last)
    y = torch.randint(0, 3, (batch, 1, *NNUNET_PATCH))
    with torch.no_grad():
        n_out = len(net(x))
    loss = DeepSupervisionLoss(DiceCELoss(batch_dice=False), deep_supervision_weights(n_out, 0.0))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for _ in range(3):
        t = time.monotonic()
        opt.zero_grad(set_to_none=True)
        out = loss(net(x), y)
        out.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        times.append(time.monotonic() - t)
    return {"params": sum(p.numel() for p in net.parameters()), "step_s": times}


def run_steps(work: Path, venv: Path, batch: int, threads: int, ours: bool = True) -> Dict[str, Any]:
    """Step times at nnU-Net's network and patch, nnU-Net v2's own step (its venv) and ours, in one run."""
    import statistics

    res: Dict[str, Any] = {"batch": batch, "threads": threads, "patch": list(NNUNET_PATCH), "load_before": _load()}
    script = work / "nnunet_step.py"
    script.write_text(NNUNET_STEP_SCRIPT)
    if (venv / "bin" / "python").exists():
        proc = subprocess.run([str(venv / "bin" / "python"), str(script), str(batch), str(threads)],
                              capture_output=True, text=True)
        res["nnunet"] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 \
            else {"error": proc.stderr.strip().splitlines()[-1]}
    for cl in ((False, True) if ours else ()):
        res[f"ours_channels_last_{cl}"] = our_step_times(batch, threads, cl)
    for key, val in res.items():
        if isinstance(val, dict) and "step_s" in val:
            val["median_after_first_s"] = statistics.median(val["step_s"][1:])
    res["load_after"] = _load()
    (work / f"steps_bs{batch}_t{threads}{'' if ours else '_nnunet_only'}.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def run_flops(work: Path, threads: int) -> Dict[str, Any]:
    """FLOPs of one training step (forward + backward, torch's FlopCounterMode) for nnU-Net's network at batch 8
    and the short-budget network at batch 2, the CPU's measured fp32 peak (a large matrix product), and each step's
    measured time against the time the FLOPs alone would take at that peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from suprem_auto.networks import build_network, scale_width
    from suprem_auto.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights

    torch.set_num_threads(threads)
    a = torch.randn(4096, 4096)
    a @ a
    start = time.monotonic()
    for _ in range(5):
        a @ a
    peak = 5 * 2 * 4096 ** 3 / (time.monotonic() - start)
    res: Dict[str, Any] = {"threads": threads, "fp32_matmul_peak_gflops": round(peak / 1e9, 1), "load_before": _load()}
    for name, width, batch in (("nnunet_network_bs8", 1.0, 8), ("short_budget_network_bs2", 0.25, 2)):
        arch = scale_width(plans(NNUNET_FEATURES, NNUNET_PATCH, batch)["configurations"]["3d_fullres"]["architecture"],
                           width)
        net = build_network(arch, 1, 3, deep_supervision=True)
        x = torch.randn(batch, 1, *NNUNET_PATCH)
        y = torch.randint(0, 3, (batch, 1, *NNUNET_PATCH))
        loss = DeepSupervisionLoss(DiceCELoss(batch_dice=False), deep_supervision_weights(len(net(x)), 0.0))
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        with FlopCounterMode(display=False) as counter:
            loss(net(x), y).backward()
        flops = counter.get_total_flops()
        times = []
        for _ in range(4):
            t = time.monotonic()
            opt.zero_grad(set_to_none=True)
            loss(net(x), y).backward()
            opt.step()
            times.append(time.monotonic() - t)
        step = sorted(times[1:])[1]
        res[name] = {"params": sum(p.numel() for p in net.parameters()), "batch": batch,
                     "gflop_per_step": round(flops / 1e9, 1), "step_s": round(step, 3),
                     "bound_at_peak_s": round(flops / peak, 3), "fraction_of_peak": round(flops / peak / step, 3)}
    res["load_after"] = _load()
    (work / f"flops_t{threads}.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["recipe", "steps", "compare", "flops", "load"])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/budget"))
    parser.add_argument("--budget", default="150s")
    parser.add_argument("--variants", default=",".join(RECIPE_VARIANTS))
    parser.add_argument("--features", default="8,16,32,64", help="plain U-Net widths of the recipe experiments")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_bench/V"), help="nnU-Net v2 venv")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ours_only", action="store_true", help="compare: train only suprem_auto")
    parser.add_argument("--concurrent", action="store_true", help="compare: train both at the same time")
    parser.add_argument("--skip_ours", action="store_true", help="steps: only nnU-Net's step")
    parser.add_argument("--seed", type=int, default=0, help="load: seed of the CPU hog's busy/idle stretches")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.mode == "recipe":
        run_recipe(args.work, args.budget, args.variants.split(","), [int(v) for v in args.features.split(",")])
    elif args.mode == "flops":
        run_flops(args.work, args.threads)
    elif args.mode == "load":
        run_load(args.work, args.budget, args.seed)
    elif args.mode == "compare":
        run_compare(args.work, args.venv, args.budget, args.concurrent, args.ours_only)
    else:
        run_steps(args.work, args.venv, args.batch, args.threads, ours=not args.skip_ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())

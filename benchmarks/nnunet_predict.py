"""nnU-Net v2 model folder predicted by ``nnUNetv2_predict`` and by ``suprem_predict -m``, same settings, same CPU.

    python benchmarks/nnunet_predict.py [--work benchmarks/work/nnunet_predict] [--venv /tmp/nnunet_venv]
                                        [--train_seconds 300]

Steps (each skipped when its output already exists in --work):
1. copies the first 40 (sorted) hippocampus cases of ../shared/data as nnU-Net raw data and the next 10 images as
   held-out cases;
2. ``nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres`` in the nnU-Net venv;
3. trains nnU-Net's default trainer (nnUNetTrainer, all its settings) on fold 0 for about --train_seconds: epochs
   of 5 iterations (1 validation iteration), the number of epochs and the poly schedule refitted to the time left;
   ``on_train_end`` writes ``checkpoint_final.pth`` into the normal results folder, so the folder is a real nnU-Net
   model folder;
4. predicts the held-out images with ``nnUNetv2_predict -d 4 -c 3d_fullres -f 0 -device cpu -npp 1 -nps 1`` and with
   ``suprem_predict -m <folder> -f 0 -device cpu`` (``--precision fp32``, and ``auto`` = bf16 on a CPU with native
   bf16), each with and without ``--disable_tta``, one command after the other, timing each command's wall time
   (start-up included); then once more without mirroring with ``--save_probabilities`` on both (not timed for the
   table) to compare the probabilities themselves;
5. voxel agreement per case (fraction of equal voxels) against nnU-Net's output and Dice against the reference labels.
Writes ``results.json`` in --work and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from nnunet_training import NNUNET_BUDGET_TRAINING  # benchmarks/ is sys.path[0] when run as a script

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HIPPO = DATA / "Dataset004_Hippocampus"
DATASET = "Dataset004_Hippocampus"
N_TRAIN, N_HELDOUT = 40, 10
MODEL_SUBFOLDER = Path(DATASET) / "nnUNetTrainer__nnUNetPlans__3d_fullres"
LABELS = (1, 2)

TRAIN_SCRIPT = NNUNET_BUDGET_TRAINING + r'''
tr, iters, train_s = train_on_budget(float(sys.argv[1]), sys.argv[2], 0)
print(json.dumps({"iterations": iters, "epochs": tr.current_epoch, "train_wall_s": round(train_s, 1),
                  "sec_per_iteration": round(train_s / max(1, iters), 2), "output_folder": tr.output_folder}))
'''


def _load() -> List[float]:
    return [round(v, 2) for v in os.getloadavg()]


def case_ids() -> List[str]:
    """Sorted hippocampus case ids; exits with a message when the shared data is missing."""
    if not (HIPPO / "imagesTr").is_dir() or not (HIPPO / "dataset.json").is_file():
        raise SystemExit(f"{HIPPO}: not found; this benchmark needs the shared hippocampus set (../shared/data)")
    ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (HIPPO / "imagesTr").glob("*_0000.nii.gz"))
    if len(ids) < N_TRAIN + N_HELDOUT:
        raise SystemExit(f"{HIPPO / 'imagesTr'}: {len(ids)} cases, need {N_TRAIN + N_HELDOUT}")
    return ids


def copy_data(work: Path, train: Sequence[str], held: Sequence[str]) -> None:
    """nnU-Net raw dataset of the training cases and a folder of the held-out images."""
    raw = work / "raw" / DATASET
    if (raw / "dataset.json").is_file():
        return
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    (work / "heldout_images").mkdir(parents=True, exist_ok=True)
    for c in train:
        shutil.copy(HIPPO / "imagesTr" / f"{c}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(HIPPO / "labelsTr" / f"{c}.nii.gz", raw / "labelsTr")
    for c in held:
        shutil.copy(HIPPO / "imagesTr" / f"{c}_0000.nii.gz", work / "heldout_images")
    dataset_json = json.loads((HIPPO / "dataset.json").read_text())
    dataset_json["numTraining"] = len(train)
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))


def nnunet_env(work: Path) -> Dict[str, str]:
    return dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "pre"),
                nnUNet_results=str(work / "results"), nnUNet_n_proc_DA="1")


def plan_and_train(work: Path, venv: Path, seconds: float) -> Dict[str, Any]:
    """Plan, preprocess and train with nnU-Net itself (skipped when the model folder already has its checkpoint)."""
    env = nnunet_env(work)
    info_path = work / "training.json"
    if (work / "results" / MODEL_SUBFOLDER / "fold_0" / "checkpoint_final.pth").is_file() and info_path.is_file():
        return json.loads(info_path.read_text())
    if not (work / "pre" / DATASET / "nnUNetPlans.json").is_file():
        start = time.monotonic()
        subprocess.run([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres",
                        "-np", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"plan_and_preprocess: {time.monotonic() - start:.0f} s", flush=True)
    script = work / "nnunet_train.py"
    script.write_text(TRAIN_SCRIPT)
    with open(work / "train.log", "w") as log:
        out = subprocess.run([str(venv / "bin" / "python"), str(script), str(seconds), str(work / "pre" / DATASET)],
                             env=env, stdout=subprocess.PIPE, stderr=log, text=True, check=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
    info_path.write_text(json.dumps(info, indent=2))
    print("training:", json.dumps(info), flush=True)
    return info


def timed(cmd: Sequence[str], env: Dict[str, str], log: Path) -> Dict[str, Any]:
    """Runs one command (output to ``log``); wall time and load average before/after."""
    before = _load()
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(list(cmd), env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}; see {log}")
    return {"command": " ".join(cmd), "wall_s": round(wall, 2), "load_before": before, "load_after": _load()}


def read_labels(path: Path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice(pred_dir: Path, cases: Sequence[str]) -> Dict[str, Any]:
    """Mean over cases of each label's Dice against the reference (both empty counts as 1)."""
    import numpy as np

    per = {str(k): [] for k in LABELS}
    for c in cases:
        p, g = read_labels(pred_dir / f"{c}.nii.gz"), read_labels(HIPPO / "labelsTr" / f"{c}.nii.gz")
        for k in LABELS:
            a, b = p == k, g == k
            denom = int(a.sum() + b.sum())
            per[str(k)].append(1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom)
    means = {k: round(float(np.mean(v)), 4) for k, v in per.items()}
    return {"per_class": means, "foreground_mean": round(float(np.mean(list(means.values()))), 4)}


def agreement(ref_dir: Path, other_dir: Path, cases: Sequence[str]) -> Dict[str, Any]:
    """Fraction of equal voxels per case, and how many foreground voxels each predicted."""
    import numpy as np

    per, fg_ref, fg_other = {}, 0, 0
    for c in cases:
        a, b = read_labels(ref_dir / f"{c}.nii.gz"), read_labels(other_dir / f"{c}.nii.gz")
        if a.shape != b.shape:
            per[c] = 0.0
            continue
        per[c] = float((a == b).mean())
        fg_ref += int((a > 0).sum())
        fg_other += int((b > 0).sum())
    vals = list(per.values())
    return {"per_case": {k: round(v, 6) for k, v in per.items()}, "min": round(min(vals), 6),
            "mean": round(float(np.mean(vals)), 6), "foreground_voxels_reference": fg_ref,
            "foreground_voxels_other": fg_other}


def probability_difference(ref_dir: Path, other_dir: Path, cases: Sequence[str]) -> Dict[str, Any]:
    """Largest absolute difference of the saved softmax probabilities (both npz 'probabilities', (C, z, y, x))."""
    import numpy as np

    worst, mean_abs = 0.0, []
    for c in cases:
        a = np.load(ref_dir / f"{c}.npz")["probabilities"].astype(np.float32)
        b = np.load(other_dir / f"{c}.npz")["probabilities"].astype(np.float32)
        if a.shape != b.shape:
            return {"error": f"{c}: shapes differ {a.shape} vs {b.shape}"}
        d = np.abs(a - b)
        worst = max(worst, float(d.max()))
        mean_abs.append(float(d.mean()))
    return {"max_abs": round(worst, 5), "mean_abs": float(f"{np.mean(mean_abs):.3g}")}


def cpu_info() -> Dict[str, Any]:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("Flags")), [])
    return {"model_name": model, "cores": os.cpu_count(),
            "flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]}


def versions(venv: Path) -> Dict[str, str]:
    import torch

    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import importlib.metadata as m, torch; print(m.version('nnunetv2'), torch.__version__)"],
                         capture_output=True, text=True).stdout.split()
    return {"torch_ours": torch.__version__, "nnunetv2": out[0] if out else "?",
            "torch_nnunet_venv": out[1] if len(out) > 1 else "?", "python": platform.python_version()}


def run(work: Path, venv: Path, seconds: float, bf16: bool) -> Dict[str, Any]:
    if not (venv / "bin" / "nnUNetv2_predict").is_file():
        raise SystemExit(f"{venv}: no nnUNetv2_predict in this venv (give --venv)")
    ids = case_ids()
    train, held = ids[:N_TRAIN], ids[N_TRAIN:N_TRAIN + N_HELDOUT]
    work.mkdir(parents=True, exist_ok=True)
    copy_data(work, train, held)
    res: Dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu": cpu_info(),
                           "versions": versions(venv), "train_cases": len(train), "held_out_cases": held,
                           "load_start": _load()}
    res["training"] = plan_and_train(work, venv, seconds)
    model = work / "results" / MODEL_SUBFOLDER
    env = nnunet_env(work)
    images = work / "heldout_images"
    runs: Dict[str, Any] = {}
    for tta in (False, True):
        tag = "mirroring" if tta else "no_mirroring"
        extra = [] if tta else ["--disable_tta"]
        variants = [("nnunet", [str(venv / "bin" / "nnUNetv2_predict"), "-d", "4", "-c", "3d_fullres", "-f", "0",
                                "-device", "cpu", "-npp", "1", "-nps", "1"]),
                    ("suprem_fp32", [sys.executable, "-m", "suprem_auto.cli.predict", "-m", str(model), "-f", "0",
                                     "-device", "cpu", "--precision", "fp32", "--disable_progress_bar"])]
        if bf16:
            variants.append(("suprem_auto", [sys.executable, "-m", "suprem_auto.cli.predict", "-m", str(model),
                                             "-f", "0", "-device", "cpu", "--precision", "auto",
                                             "--disable_progress_bar"]))
        for name, cmd in variants:
            out = work / "pred" / f"{name}_{tag}"
            shutil.rmtree(out, ignore_errors=True)
            r = timed([*cmd, "-i", str(images), "-o", str(out), *extra], env, work / f"{name}_{tag}.log")
            r["sec_per_case"] = round(r["wall_s"] / len(held), 3)
            r["dice"] = dice(out, held)
            runs[f"{name}_{tag}"] = r
            print(f"{name}_{tag}: {r['wall_s']} s, Dice {r['dice']['foreground_mean']}", flush=True)
        ref = work / "pred" / f"nnunet_{tag}"
        for name, _ in variants[1:]:
            runs[f"{name}_{tag}"]["agreement_with_nnunet"] = agreement(ref, work / "pred" / f"{name}_{tag}", held)
            runs[f"{name}_{tag}"]["speedup_vs_nnunet"] = round(
                runs[f"nnunet_{tag}"]["wall_s"] / runs[f"{name}_{tag}"]["wall_s"], 2)
    res["runs"] = runs
    probs = {}
    for name, cmd in (("nnunet", [str(venv / "bin" / "nnUNetv2_predict"), "-d", "4", "-c", "3d_fullres", "-f", "0",
                                  "-device", "cpu", "-npp", "1", "-nps", "1"]),
                      ("suprem_fp32", [sys.executable, "-m", "suprem_auto.cli.predict", "-m", str(model), "-f", "0",
                                       "-device", "cpu", "--precision", "fp32", "--disable_progress_bar"])):
        out = work / "pred" / f"{name}_probabilities"
        shutil.rmtree(out, ignore_errors=True)
        timed([*cmd, "-i", str(images), "-o", str(out), "--disable_tta", "--save_probabilities"], env,
              work / f"{name}_probabilities.log")
        probs[name] = out
    res["probabilities_no_mirroring_fp32"] = probability_difference(probs["nnunet"], probs["suprem_fp32"], held)
    res["settings"] = ("same held-out images, fold 0, checkpoint_final.pth, tile step 0.5, gaussian weighting, "
                       "device cpu; nnUNetv2_predict -npp 1 -nps 1; suprem_predict --precision fp32 (and auto); "
                       "s/case = command wall time / cases, start-up included")
    res["load_end"] = _load()
    (work / "results.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/nnunet_predict"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_venv"), help="nnU-Net v2 venv")
    parser.add_argument("--train_seconds", type=float, default=300.0, help="nnU-Net training wall-time budget")
    parser.add_argument("--no_bf16", action="store_true", help="skip the --precision auto runs (skipped anyway on a CPU without native bf16)")
    args = parser.parse_args(argv)
    native_bf16 = any(f in cpu_info()["flags"] for f in ("avx512_bf16", "amx_bf16"))
    run(args.work.resolve(), args.venv, args.train_seconds, bf16=native_bf16 and not args.no_bf16)
    return 0


if __name__ == "__main__":
    sys.exit(main())

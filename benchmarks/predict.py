"""Benchmark: ``suprem_predict`` against nnU-Net v2's ``nnUNetv2_predict`` on hippocampus cases (CPU).

Both tools plan the same raw subset of Dataset004_Hippocampus (3d_fullres), get a model folder holding one fold with
random weights of the network their plans describe (same patch and network size: the parameter counts are reported),
and predict the same cases with and without test-time mirroring. Reported: wall time per run and per case, peak
memory (largest single process from /usr/bin/time, and the sampled sum over the process tree).

nnU-Net runs from the venv created by ``benchmarks/plan_preprocess.py`` (default ``/tmp/nnunet_bench/V``); when that
venv is missing only suprem_auto is measured.

Usage: python benchmarks/predict.py [--cases 10] [--plan_cases 20] [--venv /tmp/nnunet_bench/V]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from suprem_auto.planning import DEFAULT_PLANS_NAME

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from plan_preprocess import run_measured  # noqa: E402  (helper-2's measurement: /usr/bin/time + RSS sampling)

NNUNET_CHECKPOINT = """
import json, sys, torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
folder = sys.argv[1]
plans = json.load(open(folder + '/plans.json')); ds = json.load(open(folder + '/dataset.json'))
pm = PlansManager(plans); cm = pm.get_configuration('3d_fullres'); lm = pm.get_label_manager(ds)
torch.manual_seed(0)
net = nnUNetTrainer.build_network_architecture(pm, cm, len(ds['channel_names']), lm.num_segmentation_heads, False)
torch.save({'network_weights': net.state_dict(), 'trainer_name': 'nnUNetTrainer', 'current_epoch': 0,
            'init_args': {'plans': plans, 'configuration': '3d_fullres', 'fold': 0, 'dataset_json': ds},
            'inference_allowed_mirroring_axes': (0, 1, 2)}, folder + '/fold_0/checkpoint_final.pth')
print(json.dumps({'parameters': sum(p.numel() for p in net.parameters()), 'patch': cm.patch_size}))
"""


def copy_raw_subset(src: Path, dst: Path, n: int) -> List[str]:
    """Copy the first ``n`` cases of the raw dataset ``src`` into ``dst`` (a DatasetXXX_Name folder) with
    :func:`suprem_auto.conversion.make_subset`; returns the copied case ids."""
    from suprem_auto.conversion import make_subset
    from suprem_auto.dataset.raw import load_raw_dataset_folder

    match = re.fullmatch(r"Dataset(\d{3})_(.+)", dst.name)
    if match is None:
        raise SystemExit(f"{dst}: not a DatasetXXX_Name folder")
    folder = make_subset(src, dst.parent, int(match.group(1)), match.group(2), n)
    return sorted(load_raw_dataset_folder(folder).cases)


def make_inputs(src: Path, dst: Path, skip: int, n: int) -> List[str]:
    """Test inputs: ``n`` hippocampus images not used for planning."""
    dst.mkdir(parents=True)
    cases = sorted(p.name for p in (src / "imagesTr").glob("*_0000.nii.gz"))[skip:skip + n]
    for c in cases:
        shutil.copy(src / "imagesTr" / c, dst / c)
    return cases


def build_our_model(work: Path, dataset: str) -> Dict:
    """Plan with suprem_auto and write a results folder with one random-weight fold."""
    import torch

    from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess
    from suprem_auto.dataset import parse_labels
    from suprem_auto.networks import build_network
    from suprem_auto.utils.atomic import atomic_torch_save

    code = main_plan_and_preprocess(["-d", dataset, "-c", "3d_fullres", "-np", "2", "--raw", str(work / "raw"),
                                     "--preprocessed", str(work / "ours_pre")])
    if code != 0:
        raise RuntimeError("suprem_plan_and_preprocess failed")
    pre = next((work / "ours_pre").iterdir())
    folder = work / "ours_results" / pre.name / f"SupremTrainer__{DEFAULT_PLANS_NAME}__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(pre / f"{DEFAULT_PLANS_NAME}.json", folder / "plans.json")
    shutil.copy(pre / "dataset.json", folder / "dataset.json")
    plans = json.loads((folder / "plans.json").read_text())
    ds = json.loads((folder / "dataset.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    torch.manual_seed(0)
    net = build_network(config["architecture"], len(ds["channel_names"]), parse_labels(ds).num_segmentation_heads,
                        deep_supervision=False)
    atomic_torch_save({"network_weights": net.state_dict(), "epoch": 0, "trainer_name": "SupremTrainer",
                       "configuration": "3d_fullres", "plans_name": DEFAULT_PLANS_NAME,
                       "inference_allowed_mirroring_axes": [0, 1, 2]}, folder / "fold_0" / "checkpoint_final.pth")
    return {"folder": folder, "parameters": sum(p.numel() for p in net.parameters()), "patch": config["patch_size"]}


def build_nnunet_model(work: Path, dataset: str, bin_dir: Path) -> Dict:
    """Plan with nnU-Net v2 (no preprocessing) and write a results folder with one random-weight fold."""
    env = nnunet_env(work)
    dataset_id = str(int(dataset[7:10]))
    subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", "3d_fullres", "--no_pp",
                    "-np", "2", "-npfp", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
    pre = work / "nn_pre" / dataset
    folder = work / "nn_results" / dataset / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(pre / "nnUNetPlans.json", folder / "plans.json")
    shutil.copy(pre / "dataset.json", folder / "dataset.json")
    out = subprocess.run([str(bin_dir / "python"), "-c", NNUNET_CHECKPOINT, str(folder)], env=env, check=True,
                         capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return {"folder": folder, **info}


def nnunet_env(work: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "nn_pre"),
                "nnUNet_results": str(work / "nn_results")})
    return env


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding the dataset")
    parser.add_argument("--dataset", default="Dataset004_Hippocampus")
    parser.add_argument("--cases", type=int, default=10, help="cases to predict")
    parser.add_argument("--plan_cases", type=int, default=20, help="cases both planners see")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_bench/V"), help="nnU-Net v2 venv")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="predict_bench_"))
    src = args.raw / args.dataset
    copy_raw_subset(src, work / "raw" / args.dataset, args.plan_cases)
    cases = make_inputs(src, work / "in", args.plan_cases, args.cases)
    ours = build_our_model(work, args.dataset)
    bin_dir = args.venv / "bin"
    nn = build_nnunet_model(work, args.dataset, bin_dir) if (bin_dir / "nnUNetv2_predict").exists() else None
    results: Dict = {"cases": len(cases), "ours_model": {k: v for k, v in ours.items() if k != "folder"},
                     "nnunet_model": {k: v for k, v in nn.items() if k != "folder"} if nn else None, "runs": {}}
    for tta in (True, False):
        flag = [] if tta else ["--disable_tta"]
        label = "tta" if tta else "no_tta"
        cmd = [sys.executable, "-m", "suprem_auto.cli.predict", "-i", str(work / "in"), "-o",
               str(work / f"ours_out_{label}"), "-m", str(ours["folder"]), "-f", "0", "-device", "cpu",
               "--disable_progress_bar", *flag]
        results["runs"][f"suprem_auto_{label}"] = run_measured(cmd, dict(os.environ), work / f"ours_{label}.log")
        if nn:
            cmd = [str(bin_dir / "nnUNetv2_predict"), "-i", str(work / "in"), "-o", str(work / f"nn_out_{label}"),
                   "-d", str(int(args.dataset[7:10])), "-c", "3d_fullres", "-f", "0", "-device", "cpu",
                   "--disable_progress_bar", *flag]
            results["runs"][f"nnunetv2_{label}"] = run_measured(cmd, nnunet_env(work), work / f"nn_{label}.log")
    for run in results["runs"].values():
        run["per_case_s"] = run["wall_s"] / len(cases)
    print(json.dumps(results, indent=2, default=str))
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

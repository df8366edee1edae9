"""Benchmark: our plans for ACDC (anisotropic cine-MR, 1.5625 x 1.5625 x 10 mm) beside nnU-Net v2's own.

Copies Dataset027_ACDC into a temp dir, runs nnU-Net v2's fingerprint + experiment planning there
(``nnUNetv2_plan_and_preprocess -d 27 -npfp 1 --no_pp``, in its own venv) and ours (fingerprint + default planner,
one process), and prints a Markdown table per configuration: spacing, patch, batch, pooling per axis, strides,
kernel sizes, features per stage, normalisation, resampling settings and the separate-z decision.

A second table resamples one real case to a finer, still anisotropic spacing with both libraries' functions (data
order 3, segmentation order 1, order 0 along z, automatic separate-z): the decision and how far the arrays differ.

The nnU-Net venv is created on first use (``benchmarks/plan_preprocess.py:ensure_venv``):

    python3 -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install torch==2.13.0 nnunetv2

Usage: python benchmarks/acdc_plans.py [--acdc ../shared/data/Dataset027_ACDC] [--venv /tmp/nnunet_venv]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from suprem_auto.dataset import load_raw_dataset
from suprem_auto.fingerprint import extract_fingerprint
from suprem_auto.imageio import read_images, read_segmentation
from suprem_auto.planning import plan_default
from suprem_auto.preprocessing.resampling import (compute_new_shape, resample_data, resample_segmentation,
                                                  separate_z_axis)

REPO = Path(__file__).resolve().parents[1]
NNUNET_NORMALIZATION = {"ZScoreNormalization": "zscore", "CTNormalization": "ct", "NoNormalization": "none",
                        "RescaleTo01Normalization": "rescale_0_1", "RGBTo01Normalization": "rescale_0_1"}
# the resampling check: one real case to a finer spacing that stays anisotropic (z, y, x in mm)
CHECK_CASE = "patient001_frame01"
CHECK_SPACING = (5.0, 1.25, 1.25)

# runs inside nnU-Net's venv: its own resampling function on the arrays we hand it, and its separate-z helpers
NNUNET_RESAMPLE = r"""
import json, sys
import numpy as np
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.preprocessing.resampling.default_resampling import (get_do_separate_z, get_lowres_axis,
                                                                  resample_data_or_seg_to_shape)
folder = sys.argv[1]
job = json.load(open(f"{folder}/job.json"))
old, new, shape = job["old_spacing"], job["new_spacing"], job["new_shape"]
data = np.load(f"{folder}/data.npy")
seg = np.load(f"{folder}/seg.npy")
out_data = resample_data_or_seg_to_shape(data, shape, old, new, is_seg=False, order=3, order_z=0,
                                         force_separate_z=None)
out_seg = resample_data_or_seg_to_shape(seg, shape, old, new, is_seg=True, order=1, order_z=0, force_separate_z=None)
np.save(f"{folder}/nnunet_data.npy", out_data.astype(np.float32))
np.save(f"{folder}/nnunet_seg.npy", out_seg)


def decide(old, new):
    # the decision resample_data_or_seg_to_shape takes with force_separate_z=None (its helpers, in its order)
    if get_do_separate_z(old, ANISO_THRESHOLD):
        axes = get_lowres_axis(old)
    elif get_do_separate_z(new, ANISO_THRESHOLD):
        axes = get_lowres_axis(new)
    else:
        axes = []
    return int(axes[0]) if len(axes) == 1 else None


json.dump({"separate_z_axis": decide(old, new), "decisions": [decide(o, n) for o, n in job["decide"]],
           "anisotropy_threshold": float(ANISO_THRESHOLD)}, open(f"{folder}/nnunet_decision.json", "w"))
"""


def _venv_bin(venv: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from plan_preprocess import ensure_venv  # the one place the nnU-Net venv is created

    return ensure_venv(venv)


def nnunet_plans(venv: Path, raw: Path, work: Path, dataset_id: int) -> Tuple[Dict[str, Any], float]:
    """nnU-Net v2's fingerprint + plans for the dataset under ``raw`` (no preprocessing) and the seconds it took."""
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(work / "nnunet_preprocessed"),
               nnUNet_results=str(work / "nnunet_results"))
    start = time.perf_counter()
    result = subprocess.run([str(_venv_bin(venv) / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id),
                             "-npfp", "1", "--no_pp"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"nnUNetv2_plan_and_preprocess failed ({result.returncode}): {result.stderr[-2000:]}")
    plans_file = next((work / "nnunet_preprocessed").glob("Dataset*/nnUNetPlans.json"))
    return json.loads(plans_file.read_text()), seconds


def our_plans(raw: Path, dataset_id: int) -> Tuple[Dict[str, Any], float]:
    """Our fingerprint (one process) + default plans and the seconds they took."""
    start = time.perf_counter()
    ds = load_raw_dataset(raw, dataset_id)
    fingerprint = extract_fingerprint(ds, 1, progress=False)
    plans = plan_default(fingerprint, ds.channel_names, ds.labels.num_segmentation_heads, ds.name)
    return plans, time.perf_counter() - start


def _pools(strides: Sequence[Sequence[int]]) -> List[int]:
    return [sum(1 for s in strides if s[a] == 2) for a in range(len(strides[0]))]


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return " ".join("x".join(str(int(v)) for v in row) for row in value)
    if isinstance(value, (list, tuple)):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _our_row(plans: Dict[str, Any], name: str, case_spacing: Sequence[float]) -> Dict[str, str]:
    config = plans["configurations"][name]
    kwargs = config["architecture"]["kwargs"]
    norm = config["normalization"]
    res = config["resampling"]
    target = _three_d(config["spacing"], case_spacing)
    return {"spacing": _fmt([float(s) for s in config["spacing"]]), "patch": _fmt(config["patch_size"]),
            "batch": str(config["batch_size"]), "pools per axis": _fmt(_pools(kwargs["strides"])),
            "strides": _fmt(kwargs["strides"]), "kernel sizes": _fmt(kwargs["kernel_sizes"]),
            "features per stage": _fmt(kwargs["features_per_stage"]),
            "convs per stage enc/dec": f"{kwargs['n_conv_per_stage']}/{kwargs['n_conv_per_stage_decoder']}",
            "normalisation (mask)": ", ".join(f"{n['scheme']} ({n['use_mask']})" for n in norm),
            "resampling data/seg/prob order, order_z": f"{res['data_order']}/{res['seg_order']}/"
                                                       f"{res['probabilities_order']}, {res['order_z']}",
            "force_separate_z, threshold": f"{res['force_separate_z']}, {res['anisotropy_threshold']:g}",
            "separate-z axis for a case": _decision(separate_z_axis(case_spacing, target,
                                                                   res["anisotropy_threshold"],
                                                                   res["force_separate_z"])),
            "batch_dice": str(config["batch_dice"])}


def _nnunet_row(plans: Dict[str, Any], name: str, threshold: float, decision: Optional[int]) -> Dict[str, str]:
    config = plans["configurations"][name]
    kwargs = config["architecture"]["arch_kwargs"]
    data_kw, seg_kw, prob_kw = (config[f"resampling_fn_{k}_kwargs"] for k in ("data", "seg", "probabilities"))
    n_conv = kwargs["n_conv_per_stage"]
    n_dec = kwargs["n_conv_per_stage_decoder"]
    force = data_kw["force_separate_z"]
    return {"spacing": _fmt([float(s) for s in config["spacing"]]), "patch": _fmt(config["patch_size"]),
            "batch": str(config["batch_size"]), "pools per axis": _fmt(_pools(kwargs["strides"])),
            "strides": _fmt(kwargs["strides"]), "kernel sizes": _fmt(kwargs["kernel_sizes"]),
            "features per stage": _fmt(kwargs["features_per_stage"]),
            "convs per stage enc/dec": f"{_single(n_conv)}/{_single(n_dec)}",
            "normalisation (mask)": ", ".join(f"{NNUNET_NORMALIZATION.get(n, n)} ({m})" for n, m in
                                              zip(config["normalization_schemes"], config["use_mask_for_norm"])),
            "resampling data/seg/prob order, order_z": f"{data_kw['order']}/{seg_kw['order']}/{prob_kw['order']}, "
                                                       f"{data_kw['order_z']}",
            "force_separate_z, threshold": f"{force}, {threshold:g}",
            "separate-z axis for a case": _decision(decision) if force is None else f"forced {force}",
            "batch_dice": str(config["batch_dice"])}


def _single(values: Any) -> Any:
    """nnU-Net stores convs per stage as a list; ours as one number when they are all equal."""
    return values[0] if isinstance(values, (list, tuple)) and len(set(values)) == 1 else values


def _three_d(config_spacing: Sequence[float], case_spacing: Sequence[float]) -> List[float]:
    """The target spacing of a case (transposed axes): a 2d configuration keeps the case's through-plane spacing."""
    if len(config_spacing) == 3:
        return [float(s) for s in config_spacing]
    return [float(case_spacing[0])] + [float(s) for s in config_spacing]


def _decision(axis: Optional[int]) -> str:
    return "none (joint)" if axis is None else f"axis {axis} (z)"


def plans_table(ours: Dict[str, Any], nnunet: Dict[str, Any], case_spacing: Sequence[float],
                threshold: float, nnunet_decisions: Dict[str, Optional[int]]) -> str:
    """Markdown: per configuration, every compared field with nnU-Net's value, ours and whether they agree."""
    lines: List[str] = []
    top = [("transpose_forward", ours["transpose_forward"], nnunet["transpose_forward"]),
           ("median spacing (transposed)", ours["original_median_spacing_after_transp"],
            nnunet["original_median_spacing_after_transp"]),
           ("median shape (transposed)", ours["original_median_shape_after_transp"],
            nnunet["original_median_shape_after_transp"]),
           ("configurations", sorted(ours["configurations"]), sorted(nnunet["configurations"]))]
    lines += ["| dataset | nnU-Net v2 | ours | same |", "|---|---|---|---|"]
    for name, a, b in top:
        a_s, b_s = (", ".join(v) if name == "configurations" else _fmt([float(x) for x in v]) for v in (a, b))
        lines.append(f"| {name} | {b_s} | {a_s} | {'yes' if a_s == b_s else '**no**'} |")
    for name in sorted(set(ours["configurations"]) | set(nnunet["configurations"])):
        lines += ["", f"| {name} | nnU-Net v2 | ours | same |", "|---|---|---|---|"]
        if name not in ours["configurations"] or name not in nnunet["configurations"]:
            planned = [name in plans["configurations"] for plans in (nnunet, ours)]
            lines.append(f"| planned | {planned[0]} | {planned[1]} | **no** |")
            continue
        mine = _our_row(ours, name, case_spacing)
        theirs = _nnunet_row(nnunet, name, threshold, nnunet_decisions[name])
        for key in mine:
            lines.append(f"| {key} | {theirs[key]} | {mine[key]} | {'yes' if theirs[key] == mine[key] else '**no**'} |")
    return "\n".join(lines)


def resampling_check(venv: Path, acdc: Path, work: Path,
                     decide: Sequence[Tuple[Sequence[float], Sequence[float]]]) -> Tuple[str, float, List[Any]]:
    """Resample CHECK_CASE to CHECK_SPACING with nnU-Net's function and ours: a Markdown table of the outcome,
    nnU-Net's anisotropy threshold, and nnU-Net's separate-z decision for each (old, new) spacing pair of
    ``decide``."""
    images, props = read_images([acdc / "imagesTr" / f"{CHECK_CASE}_0000.nii.gz"])
    seg, _ = read_segmentation(acdc / "labelsTr" / f"{CHECK_CASE}.nii.gz")
    old = [float(s) for s in props["spacing"]]
    new_shape = list(compute_new_shape(images.shape[1:], old, CHECK_SPACING))
    folder = work / "resampling"
    folder.mkdir()
    np.save(folder / "data.npy", images)
    np.save(folder / "seg.npy", seg)
    job = {"old_spacing": old, "new_spacing": list(CHECK_SPACING), "new_shape": new_shape,
           "decide": [[list(old_new[0]), list(old_new[1])] for old_new in decide]}
    (folder / "job.json").write_text(json.dumps(job))
    subprocess.run([str(_venv_bin(venv) / "python"), "-c", NNUNET_RESAMPLE, str(folder)], check=True)
    decision = json.loads((folder / "nnunet_decision.json").read_text())
    axis = separate_z_axis(old, CHECK_SPACING, decision["anisotropy_threshold"], None)
    data = resample_data(images, new_shape, 3, axis, 0)
    ours_seg = resample_segmentation(seg[0], new_shape, axis, 1, 0)
    theirs_data = np.load(folder / "nnunet_data.npy")
    theirs_seg = np.load(folder / "nnunet_seg.npy")[0]
    diff = np.abs(data - theirs_data)
    agree = float(np.mean(ours_seg == theirs_seg))
    per_label = {int(v): float(np.mean((ours_seg == v) == (theirs_seg == v))) for v in np.unique(theirs_seg)}
    rows = [("case, spacing -> target (z, y, x mm)", f"{CHECK_CASE}, {_fmt(old)} -> {_fmt(list(CHECK_SPACING))}"),
            ("shape -> new shape", f"{_fmt(list(images.shape[1:]))} -> {_fmt(new_shape)}"),
            ("separate-z axis: nnU-Net / ours", f"{_decision(decision['separate_z_axis'])} / {_decision(axis)}"),
            ("data (order 3 in-plane, 0 along z): max / mean abs difference",
             f"{diff.max():.2e} / {diff.mean():.2e} (intensities 0..1)"),
            ("segmentation (order 1 in-plane, 0 along z): voxels with the same label", f"{agree:.4%}"),
            ("per label: voxels where both agree on membership",
             ", ".join(f"{k}: {v:.4%}" for k, v in per_label.items()))]
    table = "\n".join(["| resampling check | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])
    return table, decision["anisotropy_threshold"], decision["decisions"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acdc", type=Path, default=REPO.parent / "shared" / "data" / "Dataset027_ACDC",
                        help="the raw Dataset027_ACDC folder (read only; copied)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_venv"), help="nnU-Net v2 venv")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if not (args.acdc / "dataset.json").is_file():
        print(f"error: {args.acdc}: no dataset.json (point --acdc at Dataset027_ACDC)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="acdc_plans_")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        raw = work / "raw"
        name = args.acdc.name
        dataset_id = int(name[len("Dataset"):len("Dataset") + 3])
        shutil.copytree(args.acdc, raw / name)
        nnunet, nnunet_s = nnunet_plans(args.venv, raw, work, dataset_id)
        ours, ours_s = our_plans(raw, dataset_id)
        ds = load_raw_dataset(raw, dataset_id)
        first = next(iter(ds.cases.values()))
        case_spacing = [float(s) for s in np.asarray(read_images([first.images[0]])[1]["spacing"])[
            nnunet["transpose_forward"]]]
        names = sorted(nnunet["configurations"])
        pairs = [(case_spacing, _three_d(nnunet["configurations"][n]["spacing"], case_spacing)) for n in names]
        check, threshold, decisions = resampling_check(args.venv, raw / name, work, pairs)
        print(f"## {name}: plans of nnU-Net v2 and ours\n")
        print(f"fingerprint + planning, one process: nnU-Net v2 {nnunet_s:.1f} s (with its start-up), "
              f"ours {ours_s:.1f} s; separate-z decision for a case at {_fmt(case_spacing)} mm\n")
        print(plans_table(ours, nnunet, case_spacing, threshold, dict(zip(names, decisions))))
        print()
        print(check)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

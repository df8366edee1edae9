"""Benchmark: plan + preprocess of a raw dataset with nnU-Net v2 and with suprem_auto, side by side.

Both run their full command (integrity check, fingerprint, planning, 3d_fullres preprocessing) on copies of the
same raw dataset with the same number of worker processes. Reports wall time, peak memory (largest single process
from /usr/bin/time, and the sampled sum over the process tree), the planned spacing/patch/batch/normalization,
and how the preprocessed arrays differ. nnU-Net v2 runs from its own venv, created on first use:

    python3 -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install torch==2.13.0 nnunetv2

A second part (``--part storage``) measures random patch reads from .npy (memory-mapped) against blosc2 .b2nd
(chunked like nnU-Net) on the preprocessed hippocampus and on a large CT-sized volume.

Usage: python benchmarks/plan_preprocess.py --raw ../shared/data --dataset Dataset004_Hippocampus -np 2
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
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from suprem_auto.planning import DEFAULT_PLANS_NAME

REPO = Path(__file__).resolve().parents[1]


def ensure_venv(venv: Path) -> Path:
    """Create the nnU-Net venv when missing; returns its bin folder."""
    if not (venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = str(venv / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([pip, "install", "-q", "torch==2.13.0", "nnunetv2"], check=True)
    return venv / "bin"


def _descendants(pid: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: List[str], env: Dict[str, str], log: Path) -> Dict[str, float]:
    """Run under /usr/bin/time -v; sample the process tree's summed RSS every 0.2 s."""
    full = ["/usr/bin/time", "-v"] + cmd
    peak_tree = [0]
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(full, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak_tree[0] = max(peak_tree[0], sum(_rss_kb(p) for p in _descendants(proc.pid)))
                done.wait(0.2)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        done.set()
        thread.join()
    wall = time.perf_counter() - start
    text = log.read_text()
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {code}; see {log}")
    return {"wall_s": wall, "max_rss_single_mb": int(match.group(1)) / 1024 if match else float("nan"),
            "peak_tree_rss_mb": peak_tree[0] / 1024}


def summarize_nnunet(pre: Path) -> Dict[str, Dict]:
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    out = {}
    for name, c in plans["configurations"].items():
        if "spacing" not in c:
            continue
        out[name] = {"spacing": c["spacing"], "patch": c["patch_size"], "batch": c["batch_size"],
                     "normalization": c["normalization_schemes"], "use_mask": c["use_mask_for_norm"]}
    return out


def summarize_ours(pre: Path) -> Dict[str, Dict]:
    plans = json.loads((pre / f"{DEFAULT_PLANS_NAME}.json").read_text())
    return {name: {"spacing": c["spacing"], "patch": c["patch_size"], "batch": c["batch_size"],
                   "normalization": [n["scheme"] for n in c["normalization"]],
                   "use_mask": [n["use_mask"] for n in c["normalization"]]}
            for name, c in plans["configurations"].items()}


def compare_arrays(nn_dir: Path, our_dir: Path, python: Path) -> Dict[str, float]:
    """Max |difference| of preprocessed images and the fraction of differing seg voxels, over all cases."""
    script = (
        "import blosc2, numpy as np, sys, pathlib\n"
        "src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]); dst.mkdir(exist_ok=True)\n"
        "for f in src.glob('*.b2nd'):\n"
        "    np.save(dst / (f.name[:-5] + '.npy'), blosc2.open(str(f), mode='r')[:])\n")
    converted = nn_dir.parent / "nnunet_as_npy"
    subprocess.run([str(python), "-c", script, str(nn_dir), str(converted)], check=True)
    max_diff, seg_diff, seg_total, shape_mismatch, cases = 0.0, 0, 0, 0, 0
    for f in sorted(converted.glob("*_seg.npy")):
        case = f.name[:-len("_seg.npy")]
        theirs, ours = np.load(converted / f"{case}.npy"), np.load(our_dir / f"{case}.npy")
        theirs_seg, ours_seg = np.load(f), np.load(our_dir / f"{case}_seg.npy")
        cases += 1
        if theirs.shape != ours.shape:
            shape_mismatch += 1
            continue
        max_diff = max(max_diff, float(np.abs(theirs - ours).max()))
        seg_diff += int(np.sum(theirs_seg != ours_seg))
        seg_total += theirs_seg.size
    return {"cases": cases, "shape_mismatches": shape_mismatch, "max_abs_image_diff": max_diff,
            "seg_voxels_differing": seg_diff, "seg_voxels": seg_total}


def benchmark_pipeline(raw: Path, dataset: str, num_processes: int, venv: Path, work: Path) -> Dict:
    bin_dir = ensure_venv(venv)
    dataset_id = str(int(dataset[7:10]))
    results = {}
    for tool in ("nnunetv2", "suprem_auto"):
        root = work / tool
        (root / "raw").mkdir(parents=True)
        shutil.copytree(raw / dataset, root / "raw" / dataset)
        env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
                   nnUNet_results=str(root / "results"), SUPREM_RAW=str(root / "raw"),
                   SUPREM_PREPROCESSED=str(root / "pre"), SUPREM_RESULTS=str(root / "results"))
        if tool == "nnunetv2":
            cmd = [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", "3d_fullres",
                   "-np", str(num_processes), "-npfp", str(num_processes), "--verify_dataset_integrity"]
        else:
            cmd = [sys.executable, "-m", "suprem_auto.cli.plan_and_preprocess", "-d", dataset_id,
                   "-c", "3d_fullres", "-np", str(num_processes)]
        print(f"running {tool}: {' '.join(cmd)}", flush=True)
        results[tool] = run_measured(cmd, env, work / f"{tool}.log")
        print(f"  {results[tool]}", flush=True)
    pre_nn = work / "nnunetv2" / "pre" / dataset
    pre_ours = work / "suprem_auto" / "pre" / dataset
    results["plans"] = {"nnunetv2": summarize_nnunet(pre_nn), "suprem_auto": summarize_ours(pre_ours)}
    results["fingerprint"] = {
        "nnunetv2": json.loads((pre_nn / "dataset_fingerprint.json").read_text())["foreground_intensity_properties_per_channel"],
        "suprem_auto": json.loads((pre_ours / "dataset_fingerprint.json").read_text())["foreground_intensity_properties_per_channel"]}
    results["arrays"] = compare_arrays(pre_nn / "nnUNetPlans_3d_fullres", pre_ours / f"{DEFAULT_PLANS_NAME}_3d_fullres",
                                       bin_dir / "python")
    return results


def _patch_reads(read, shape: Tuple[int, ...], patch: Tuple[int, ...], n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(n):
        corner = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(shape, patch)]
        np.array(read(tuple(slice(c, c + p) for c, p in zip(corner, patch))), copy=True)  # force the read
    return (time.perf_counter() - start) / n


def benchmark_storage(arrays: Dict[str, Tuple[np.ndarray, Tuple[int, ...]]], work: Path, n: int = 50) -> Dict:
    """Mean time to read one random patch: memory-mapped .npy vs blosc2 (LZ4HC 5, patch-sized chunks, mmap)."""
    import blosc2

    blosc2.set_nthreads(1)
    out = {}
    for name, (array, patch) in arrays.items():
        npy = work / f"{name}.npy"
        np.save(npy, array)
        b2 = work / f"{name}.b2nd"
        chunks = tuple([array.shape[0]] + [min(s, p) for s, p in zip(array.shape[1:], patch)])
        blocks = tuple([1] + [max(1, min(s, p) // 4) for s, p in zip(array.shape[1:], patch)])
        blosc2.asarray(np.ascontiguousarray(array), urlpath=str(b2), mode="w", chunks=chunks, blocks=blocks,
                       cparams={"codec": blosc2.Codec.LZ4HC, "clevel": 5, "nthreads": 1})
        mm = np.load(npy, mmap_mode="r")
        bl = blosc2.open(str(b2), mode="r", mmap_mode="r")
        full_patch = (array.shape[0],) + tuple(patch)
        _patch_reads(lambda s: mm[s], array.shape, full_patch, 5)  # warm the page cache
        _patch_reads(lambda s: bl[s], array.shape, full_patch, 5)
        out[name] = {"shape": list(array.shape), "patch": list(patch),
                     "npy_ms": 1000 * _patch_reads(lambda s: mm[s], array.shape, full_patch, n),
                     "blosc2_ms": 1000 * _patch_reads(lambda s: bl[s], array.shape, full_patch, n),
                     "npy_mb": npy.stat().st_size / 2 ** 20, "blosc2_mb": b2.stat().st_size / 2 ** 20}
        print(f"  {name}: {out[name]}", flush=True)
    return out


def storage_inputs(raw: Path) -> Dict[str, Tuple[np.ndarray, Tuple[int, ...]]]:
    """A preprocessed hippocampus case and the example CT at 0.8 mm (about 420x380x460, a big CT's size)."""
    sys.path.insert(0, str(REPO / "tests"))
    from suprem_auto.dataset import load_raw_dataset_folder
    from suprem_auto.fingerprint import extract_fingerprint
    from suprem_auto.planning import plan_default
    from suprem_auto.preprocessing import preprocess_files
    from suprem_auto.preprocessing.resampling import resample_volume
    from suprem_auto.imageio import read_images

    ds = load_raw_dataset_folder(raw / "Dataset004_Hippocampus")
    first = dict(list(ds.cases.items())[:3])
    sub = type(ds)(ds.folder, ds.dataset_json, ds.labels, first)
    plans = plan_default(extract_fingerprint(sub, 1, progress=False), ds.channel_names, 3, ds.name)
    case = next(iter(first.values()))
    hippo, _, _ = preprocess_files(case.images, plans, "3d_fullres", case.label)
    ct, _ = read_images([raw / "totalsegmentator_example" / "example_ct.nii.gz"])
    big = resample_volume(ct[0], tuple(int(round(s * 3 / 0.8)) for s in ct.shape[1:]), order=1)[None]
    return {"hippocampus": (hippo, tuple(plans["configurations"]["3d_fullres"]["patch_size"])),
            "ct_0.8mm": (big.astype(np.float32), (96, 160, 160))}


NNUNET_RESAMPLE = """
import sys, time, numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape as f
data, seg = np.load(sys.argv[1]), np.load(sys.argv[2])
shape, old, new = [int(v) for v in sys.argv[3].split(",")], [float(v) for v in sys.argv[4].split(",")], \
    [float(v) for v in sys.argv[5].split(",")]
t = time.perf_counter(); d = f(data, shape, old, new, False, 3, 0, None); td = time.perf_counter() - t
t = time.perf_counter(); s = f(seg, shape, old, new, True, 1, 0, None); ts = time.perf_counter() - t
np.save(sys.argv[6], d.astype(np.float32)); np.save(sys.argv[7], s); print(td, ts)
"""


def benchmark_resampling(raw: Path, venv: Path, work: Path) -> Dict:
    """nnU-Net's resample_data_or_seg_to_shape against ours on the example CT (data order 3, seg one-hot order 1,
    automatic separate z), for an isotropic target (1.5 mm) and an anisotropic one (0.8 x 0.8 x 5 mm)."""
    from suprem_auto.imageio import read_images, read_segmentation
    from suprem_auto.preprocessing.resampling import (compute_new_shape, resample_data, resample_segmentation,
                                                      separate_z_axis)

    ct, props = read_images([raw / "totalsegmentator_example" / "example_ct.nii.gz"])
    seg, _ = read_segmentation(raw / "totalsegmentator_example" / "example_seg_fast_force_split.nii.gz")
    ct = (ct - ct.mean()) / ct.std()
    np.save(work / "ct.npy", ct)
    np.save(work / "seg.npy", seg.astype(np.int16))
    out = {}
    for name, target in (("iso_1.5mm", [1.5, 1.5, 1.5]), ("aniso_5x0.8x0.8mm", [5.0, 0.8, 0.8])):
        spacing = props["spacing"]
        shape = compute_new_shape(ct.shape[1:], spacing, target)
        args = [",".join(map(str, shape)), ",".join(map(str, spacing)), ",".join(map(str, target))]
        res = subprocess.run([str(venv / "bin" / "python"), "-c", NNUNET_RESAMPLE, str(work / "ct.npy"),
                              str(work / "seg.npy"), *args, str(work / "nd.npy"), str(work / "ns.npy")],
                             check=True, capture_output=True, text=True)
        nn_data_s, nn_seg_s = (float(v) for v in res.stdout.split()[-2:])
        z = separate_z_axis(spacing, target)
        t = time.perf_counter()
        ours = resample_data(ct, shape, 3, z, 0)
        our_data_s = time.perf_counter() - t
        t = time.perf_counter()
        ours_seg = resample_segmentation(seg[0].astype(np.int16), shape, z, 1, 0)
        our_seg_s = time.perf_counter() - t
        theirs, theirs_seg = np.load(work / "nd.npy"), np.load(work / "ns.npy")[0]
        out[name] = {"shape": list(shape), "separate_z_axis": z,
                     "max_abs_image_diff": float(np.abs(theirs - ours).max()),
                     "seg_fraction_differing": float(np.mean(theirs_seg != ours_seg)),
                     "nnunet_s": {"data": nn_data_s, "seg": nn_seg_s}, "ours_s": {"data": our_data_s, "seg": our_seg_s}}
        print(f"  {name}: {out[name]}", flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=REPO.parent / "shared" / "data", help="folder holding the dataset")
    parser.add_argument("--dataset", default="Dataset004_Hippocampus", help="raw dataset folder name")
    parser.add_argument("-np", "--num_processes", type=int, default=2, help="workers for both tools")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet_bench/V"), help="nnU-Net v2 venv")
    parser.add_argument("--part", choices=("pipeline", "storage", "resampling", "all"), default="all", help="what to measure")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="plan_preprocess_bench_"))
    report = {}
    try:
        if args.part in ("storage", "all"):
            print("storage: random patch reads", flush=True)
            report["storage"] = benchmark_storage(storage_inputs(args.raw), work)
        if args.part in ("resampling", "all"):
            print("resampling: nnU-Net v2 against suprem_auto on the example CT", flush=True)
            report["resampling"] = benchmark_resampling(args.raw, args.venv, work)
        if args.part in ("pipeline", "all"):
            report["pipeline"] = benchmark_pipeline(args.raw, args.dataset, args.num_processes, args.venv, work)
        print(json.dumps(report, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

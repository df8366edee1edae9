"""Transfer benchmark: does our own supervised pre-training help a small downstream task? (issue 6)

The SuPreM claim at CPU scale on MSD Hippocampus (the one multi-case set we hold):
1. split the 220 cases (seeded) into a pre-training part, a fine-tuning pool and held-out test cases;
2. pre-train the backbone on the pre-training part with the two labels merged into one ("hippocampus": a different
   task), fold ``all``, with ``suprem_train``;
3. for each fine-tuning size (first N cases of the pool, both labels = novel classes) and seed, train from scratch
   and from the pre-trained checkpoint (``-pretrained .../fold_all/checkpoint_final.pth``) with the same trainer
   and iteration budget;
4. predict the held-out cases with ``suprem_predict`` and evaluate them with ``suprem_auto.evaluation``;
5. table per size: mean Dice per class (scratch, pretrained, difference) and a Wilcoxon signed-rank test over the
   held-out cases (per-case Dice averaged over seeds, paired by case).

Everything goes through our CLIs (``suprem_plan_and_preprocess``, ``suprem_train``, ``suprem_predict``) as
subprocesses under ``nice``; the work folder (default ``benchmarks/work/transfer``, git-ignored) holds raw,
preprocessed and results roots. Finished stages are reused, so a rerun resumes.

``--architecture`` swaps the plans' network for a SuPreM backbone (suprem_unet, segresnet, swin_unetr with the
presets' kwargs; patch size rounded up to the preset's divisor) while keeping the dataset's own normalisation and
spacing, so random init and our own pre-training are compared for that backbone too.

Example (the settings of the run in RESULTS.md are recorded there):
    python benchmarks/transfer.py --pretrain_iters 200 --finetune_iters 80 --seeds 0 1
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
from typing import Dict, List, Sequence

import numpy as np

from suprem_auto.planning import DEFAULT_PLANS_NAME

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_ID, FINETUNE_FIRST_ID = 950, 951
TRAINER = "SupremTrainer"
PLANS = DEFAULT_PLANS_NAME
CONFIG = "3d_fullres"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "Dataset004_Hippocampus",
                   help="raw nnU-Net-format Hippocampus dataset (read only)")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "transfer",
                   help="work folder (raw/preprocessed/results roots, predictions, tables)")
    p.add_argument("--n_pretrain", type=int, default=100, help="cases for pre-training (labels merged)")
    p.add_argument("--n_pool", type=int, default=40, help="fine-tuning pool (both labels)")
    p.add_argument("--n_test", type=int, default=40, help="held-out test cases (used by neither)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 40],
                   help="fine-tuning set sizes (first N cases of the pool)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the case split")
    p.add_argument("--pretrain_iters", type=int, default=250, help="pre-training iterations")
    p.add_argument("--pretrained_checkpoint", type=Path, default=None,
                   help="use this checkpoint instead of the pretrain stage's checkpoint_final.pth (e.g. an "
                        "earlier checkpoint_latest.pth of a pre-training cut short)")
    p.add_argument("--finetune_iters", type=int, default=100,
                   help="iterations of each fine-tuning and each from-scratch run")
    p.add_argument("--iters_per_epoch", type=int, default=25, help="iterations per epoch (budget = epochs x this)")
    p.add_argument("--val_iters", type=int, default=1, help="pseudo-Dice validation iterations per epoch")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--lr", type=float, default=None, help="learning rate of every run (default: the trainer's)")
    p.add_argument("--recipe", default="trainer", choices=["trainer", "short"],
                   help="trainer: the trainer's own recipe in epochs; short: --iterations N with the short-budget "
                        "recipe (AdamW 1e-3, warm-up + cosine), both arms alike")
    p.add_argument("--network_width", type=float, default=1.0,
                   help="feature-width factor of the network (pre-training and fine-tuning alike)")
    p.add_argument("--trainer", default=TRAINER, help="trainer of every run (same recipe for both arms)")
    p.add_argument("--architecture", default="plain_unet",
                   choices=["plain_unet", "suprem_unet", "segresnet", "swin_unetr"],
                   help="network; SuPreM backbones use the presets' kwargs with the dataset's normalisation")
    p.add_argument("--num_workers", type=int, default=1, help="data workers per training run")
    p.add_argument("--arms", nargs="+", default=["scratch", "pretrained"], choices=["scratch", "pretrained"],
                   help="which arms the finetune stage trains; parallel invocations share the runs through lock "
                        "files in <work>/locks (delete a run's lock after killing its process)")
    p.add_argument("--patch_size", default=None,
                   help="patch ZxYxX of every run (default: the plans'; e.g. 32x64x32 for a cheaper swin_unetr)")
    p.add_argument("--nice", type=int, default=19, help="niceness of the subprocesses")
    p.add_argument("--stages", nargs="+", default=["build", "pretrain", "finetune", "report"],
                   choices=["build", "pretrain", "finetune", "report"])
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- helpers
def run(cmd: List[str], args: argparse.Namespace, log: Path, results: Path | None = None) -> float:
    """Run one of our CLIs under nice with one thread per process; output to ``log``; returns seconds.
    ``results`` replaces the results root (each fine-tuning run has its own, so runs can go in parallel)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    full = ["nice", "-n", str(args.nice), sys.executable, "-m", *cmd,
            "--raw", str(args.work / "raw"), "--preprocessed", str(args.work / "preprocessed"),
            "--results", str(results or args.work / "results")]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as fh:
        fh.write(" ".join(full) + "\n")
        fh.flush()
        code = subprocess.call(full, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {code}); see {log}")
    return time.time() - start


def case_split(source: Path, args: argparse.Namespace) -> Dict[str, List[str]]:
    """Seeded disjoint split of the source cases into pretrain / pool / test."""
    ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (source / "imagesTr").glob("*_0000.nii.gz"))
    need = args.n_pretrain + args.n_pool + args.n_test
    if len(ids) < need:
        raise SystemExit(f"{source}: {len(ids)} cases, the split needs {need}")
    order = np.random.default_rng(args.split_seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    return {"pretrain": shuffled[: args.n_pretrain],
            "pool": shuffled[args.n_pretrain: args.n_pretrain + args.n_pool],
            "test": shuffled[args.n_pretrain + args.n_pool: need]}


def dataset_name(dataset_id: int, tag: str) -> str:
    return f"Dataset{dataset_id:03d}_{tag}"


def link(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.symlink_to(src.resolve())


def write_merged_label(src: Path, dst: Path) -> None:
    """Every foreground label -> 1 (same geometry)."""
    import SimpleITK as sitk

    if dst.exists():
        return
    img = sitk.ReadImage(str(src))
    merged = sitk.Cast(img > 0, sitk.sitkUInt8)
    merged.CopyInformation(img)
    tmp = dst.with_name(dst.name + ".tmp.nii.gz")
    sitk.WriteImage(merged, str(tmp), True)
    tmp.replace(dst)


def make_raw(folder: Path, cases: Sequence[str], source: Path, labels: Dict[str, int], merged: bool) -> None:
    """A raw dataset of symlinked images (and labels, or merged copies) with its dataset.json."""
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case in cases:
        link(source / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTr" / f"{case}_0000.nii.gz")
        label_src = source / "labelsTr" / f"{case}.nii.gz"
        if merged:
            write_merged_label(label_src, folder / "labelsTr" / f"{case}.nii.gz")
        else:
            link(label_src, folder / "labelsTr" / f"{case}.nii.gz")
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": len(cases),
                    "file_ending": ".nii.gz",
                    "description": f"transfer benchmark subset of {source.name} ({len(cases)} cases)"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))


def finetune_names(args: argparse.Namespace) -> Dict[int, str]:
    """Fine-tuning dataset per size: the existing raw ``Dataset<id>_HippoFT<n>``, else the next free id from 951
    (so a later call with other ``--sizes`` finds the same datasets)."""
    raw = args.work / "raw"
    existing = {p.name.split("_", 1)[1]: p.name for p in raw.glob("Dataset*_*")} if raw.is_dir() else {}
    used = {int(name[7:10]) for name in existing.values()}
    names = {}
    for n in args.sizes:
        tag = f"HippoFT{n}"
        if tag not in existing:
            free = next(i for i in range(FINETUNE_FIRST_ID, 1000) if i not in used)
            used.add(free)
            existing[tag] = dataset_name(free, tag)
        names[n] = existing[tag]
    return names


def plans_name(args: argparse.Namespace) -> str:
    return PLANS if args.architecture == "plain_unet" else f"{PLANS}_{args.architecture}"


def derive_architecture_plans(pre_folder: Path, architecture: str) -> None:
    """``suprem_plans_<arch>.json``: the default plans with a SuPreM backbone (preset kwargs, patch rounded up)."""
    from suprem_auto.utils.atomic import atomic_write_json

    preset = {"suprem_unet": "suprem_unet", "segresnet": "suprem_segresnet",
              "swin_unetr": "suprem_swin_unetr"}[architecture]
    preset_json = json.loads((REPO / "plans" / f"{preset}.json").read_text())
    plans = json.loads((pre_folder / f"{PLANS}.json").read_text())
    divisor = int(preset_json["patch_divisor"])
    config = plans["configurations"][CONFIG]
    config["patch_size"] = [int(-(-s // divisor) * divisor) for s in config["patch_size"]]
    config["architecture"] = preset_json["architecture"]
    config["patch_divisor"] = divisor
    config.pop("estimated_feature_map_voxels", None)
    plans["configurations"] = {CONFIG: config}
    plans["plans_name"] = f"{PLANS}_{architecture}"
    atomic_write_json(pre_folder / f"{PLANS}_{architecture}.json", plans)


# ----------------------------------------------------------------------------------------------- stages
def stage_build(args: argparse.Namespace, split: Dict[str, List[str]]) -> None:
    """Raw datasets (pretrain merged, one per fine-tuning size, test folder), plan + preprocess."""
    src_labels = json.loads((args.source / "dataset.json").read_text())["labels"]
    raw = args.work / "raw"
    make_raw(raw / dataset_name(PRETRAIN_ID, "HippoMerged"), split["pretrain"], args.source,
             {"background": 0, "hippocampus": 1}, merged=True)
    for n, name in finetune_names(args).items():
        make_raw(raw / name, split["pool"][:n], args.source, src_labels, merged=False)
    test = args.work / "test"
    (test / "images").mkdir(parents=True, exist_ok=True)
    (test / "labels").mkdir(parents=True, exist_ok=True)
    for case in split["test"]:
        link(args.source / "imagesTr" / f"{case}_0000.nii.gz", test / "images" / f"{case}_0000.nii.gz")
        link(args.source / "labelsTr" / f"{case}.nii.gz", test / "labels" / f"{case}.nii.gz")
    ids = [name.split("_")[0][len("Dataset"):] for name in
           [dataset_name(PRETRAIN_ID, "HippoMerged"), *finetune_names(args).values()]]
    secs = run(["suprem_auto.cli.plan_and_preprocess", "-d", *ids, "-np", "1"], args,
               args.work / "logs" / "plan_and_preprocess.log")
    print(f"plan + preprocess: {secs:.0f} s")
    if args.architecture != "plain_unet":
        names = [dataset_name(PRETRAIN_ID, "HippoMerged"), *finetune_names(args).values()]
        for name in names:
            derive_architecture_plans(args.work / "preprocessed" / name, args.architecture)
    check_same_architecture(args)


def check_same_architecture(args: argparse.Namespace) -> None:
    """Pre-training and every fine-tuning dataset must plan the same network (else weights cannot transfer)."""
    names = [dataset_name(PRETRAIN_ID, "HippoMerged"), *finetune_names(args).values()]
    found = {}
    for name in names:
        plans = json.loads((args.work / "preprocessed" / name / f"{plans_name(args)}.json").read_text())
        config = plans["configurations"][CONFIG]
        found[name] = (json.dumps(config["architecture"], sort_keys=True), config["patch_size"],
                       config["spacing"])
    if len({v[0] for v in found.values()}) != 1:
        raise SystemExit("the datasets planned different networks; transfer needs the same one: "
                         + "; ".join(f"{k}: {v[0]}" for k, v in found.items()))
    for name, (_, patch, spacing) in found.items():
        print(f"{name}: patch {patch} spacing {spacing}")


def train_cmd(args: argparse.Namespace, dataset: str, iters: int, seed: int) -> List[str]:
    """One suprem_train call. ``--recipe trainer``: the trainer's recipe over epochs of --iters_per_epoch;
    ``--recipe short``: ``--iterations N`` (the short-budget recipe: AdamW, warm-up + cosine over N)."""
    cmd = ["suprem_auto.cli.train", dataset, CONFIG, "all", "-tr", args.trainer, "-p", plans_name(args),
           "--val_iters", str(args.val_iters), "--batch_size", str(args.batch_size), "--seed", str(seed),
           "--num_workers", str(args.num_workers), "--no_final_validation", "-device", "cpu"]
    if args.recipe == "short":
        cmd += ["--iterations", str(iters), "--recipe", "short"]
    else:
        cmd += ["--epochs", str(max(1, iters // args.iters_per_epoch)), "--iters_per_epoch", str(args.iters_per_epoch)]
    if args.network_width != 1.0:
        cmd += ["--network_width", str(args.network_width)]
    if args.patch_size:
        cmd += ["--patch_size", args.patch_size]
    if args.lr is not None:
        cmd += ["--lr", str(args.lr)]
    return cmd


def model_folder(results: Path, dataset: str, args: argparse.Namespace) -> Path:
    return results / dataset / f"{args.trainer}__{plans_name(args)}__{CONFIG}"


def pretrained_checkpoint(args: argparse.Namespace) -> Path:
    if args.pretrained_checkpoint is not None:
        return args.pretrained_checkpoint.resolve()
    return model_folder(args.work / "results", dataset_name(PRETRAIN_ID, "HippoMerged"), args) / "fold_all" / \
        "checkpoint_final.pth"


def stage_pretrain(args: argparse.Namespace) -> None:
    ckpt = pretrained_checkpoint(args)
    if ckpt.is_file():
        print(f"pre-training done: {ckpt}")
        return
    secs = run(train_cmd(args, str(PRETRAIN_ID), args.pretrain_iters, 0), args,
               args.work / "logs" / f"pretrain_{args.architecture}.log")
    print(f"pre-training ({args.pretrain_iters} iterations): {secs:.0f} s -> {ckpt}")


def claim(lock: Path) -> bool:
    """Atomically create ``lock`` (False if it exists), so parallel invocations share the runs."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def run_arm(args: argparse.Namespace, size: int, dataset: str, arm: str, seed: int) -> Path:
    """Train one arm (scratch | pretrained) into its own results root, predict the test cases and evaluate them;
    returns the prediction folder."""
    tag = f"{args.architecture}_n{size}_{arm}_s{seed}"
    pred = args.work / "predictions" / tag
    if (pred / "summary.json").is_file():
        return pred
    if not claim(args.work / "locks" / tag):
        print(f"  {tag}: another process is on it; skipped", flush=True)
        return pred
    results = args.work / "runs" / tag
    folder = model_folder(results, dataset, args)
    if not (folder / "fold_all" / "checkpoint_final.pth").is_file():
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted run
        cmd = train_cmd(args, dataset, args.finetune_iters, seed)
        if arm == "pretrained":
            if not pretrained_checkpoint(args).is_file():
                raise SystemExit(f"{pretrained_checkpoint(args)}: missing; run the pretrain stage first")
            cmd += ["-pretrained", str(pretrained_checkpoint(args))]
        secs = run(cmd, args, args.work / "logs" / f"{tag}.log", results)
        print(f"  {tag}: trained in {secs:.0f} s", flush=True)
    secs = run(["suprem_auto.cli.predict", "-i", str(args.work / "test" / "images"), "-o", str(pred),
                "-m", str(folder), "-f", "all", "--disable_tta", "-device", "cpu", "--disable_progress_bar"],
               args, args.work / "logs" / f"{tag}_predict.log", results)
    from suprem_auto.evaluation.evaluate import evaluate_folder

    summary = evaluate_folder(args.work / "test" / "labels", pred, labels=[1, 2])
    print(f"  {tag}: predicted in {secs:.0f} s; Dice {summary['mean']['1']['dice']:.3f} / "
          f"{summary['mean']['2']['dice']:.3f}", flush=True)
    return pred


def stage_finetune(args: argparse.Namespace) -> None:
    for size, dataset in finetune_names(args).items():
        for seed in args.seeds:
            for arm in args.arms:
                run_arm(args, size, dataset, arm, seed)


# ----------------------------------------------------------------------------------------------- report
def per_case_dice(pred: Path) -> Dict[str, Dict[str, float]]:
    summary = json.loads((pred / "summary.json").read_text())
    return {c["case"]: {k: c["metrics"][k]["dice"] for k in ("1", "2")} for c in summary["metric_per_case"]}


def stage_report(args: argparse.Namespace) -> str:
    """The Markdown table over the sizes and seeds whose both arms are finished (others are listed as missing)."""
    from scipy.stats import wilcoxon

    labels = json.loads((args.source / "dataset.json").read_text())["labels"]
    names = {str(v): k for k, v in labels.items()}
    lines = ["| train cases | class | seeds | scratch Dice | pretrained Dice | difference | per-seed differences | "
             "Wilcoxon p (n cases) |", "|---|---|---|---|---|---|---|---|"]
    missing: List[str] = []
    for size in args.sizes:
        runs: Dict[str, List[Dict[str, Dict[str, float]]]] = {"scratch": [], "pretrained": []}
        seeds = []
        for seed in args.seeds:
            preds = {arm: args.work / "predictions" / f"{args.architecture}_n{size}_{arm}_s{seed}"
                     for arm in runs}
            if all((p / "summary.json").is_file() for p in preds.values()):
                seeds.append(seed)
                for arm, pred in preds.items():
                    runs[arm].append(per_case_dice(pred))
            else:
                missing.append(f"n={size} seed {seed}")
        if not seeds:
            continue
        cases = sorted(runs["scratch"][0])
        for key in ("1", "2"):
            def matrix(arm: str) -> np.ndarray:
                return np.array([[r[c][key] for c in cases] for r in runs[arm]], dtype=float)
            scratch, pre = matrix("scratch"), matrix("pretrained")
            seed_diffs = np.nanmean(pre, axis=1) - np.nanmean(scratch, axis=1)
            a, b = np.nanmean(scratch, axis=0), np.nanmean(pre, axis=0)  # per case, averaged over seeds
            ok = ~(np.isnan(a) | np.isnan(b))
            p = wilcoxon(b[ok], a[ok]).pvalue if np.any(a[ok] != b[ok]) else 1.0
            lines.append(f"| {size} | {names.get(key, key)} | {','.join(map(str, seeds))} | {a[ok].mean():.3f} | "
                         f"{b[ok].mean():.3f} | {b[ok].mean() - a[ok].mean():+.3f} | "
                         f"{', '.join(f'{d:+.3f}' for d in seed_diffs)} | {p:.2g} ({int(ok.sum())}) |")
    table = "\n".join(lines)
    if missing:
        table += "\n\nnot finished (no row): " + "; ".join(missing)
    out = args.work / f"table_{args.architecture}.md"
    out.write_text(table + "\n")
    print(table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    split = case_split(args.source, args)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "split.json").write_text(json.dumps(split, indent=1))
    if "build" in args.stages:
        stage_build(args, split)
    if "pretrain" in args.stages:
        stage_pretrain(args)
    if "finetune" in args.stages:
        stage_finetune(args)
    if "report" in args.stages:
        stage_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Transfer benchmark: does our own supervised pre-training help a small downstream task? (issues 6 and 18)

The SuPreM claim at CPU scale on real data (MSD Hippocampus, or ACDC with ``--dataset acdc``):
1. split the subjects (seeded) into a pre-training part, a fine-tuning pool, held-out test cases and held-out
   selection cases (hippocampus: one case per subject, 100 / 40 / 40 / 40 of 220; ACDC: by patient, both frames
   together, 30 / 20 / 10 / 10 of 70 patients); the selection cases choose the fine-tuning policy, the test cases
   only confirm it;
2. pre-train the backbone on the pre-training part with every foreground label merged into one ("hippocampus",
   "heart": a different task), fold ``all``, with ``suprem_train``;
3. for each fine-tuning size (first N subjects of the pool, all labels = novel classes), iteration budget and seed,
   train from scratch and from the pre-trained checkpoint (``-pretrained .../fold_all/checkpoint_final.pth``, with
   ``--finetune_policy P`` for each policy asked for) with the same trainer; every budget is its own run (its own
   lr schedule over N iterations);
4. predict the test and the selection cases with ``suprem_predict`` and evaluate them with
   ``suprem_auto.evaluation``; each run's training seconds and the pre-trained load summary (tensors loaded /
   re-initialised, from the fold's ``load_report.json``) go to ``timing.json`` beside its predictions;
5. tables (``<work>/table_*.md``): policies at one size and budget (selection Dice chooses, test Dice confirms),
   learning curves per size (test Dice and seconds at each budget, pretrained - scratch with a Wilcoxon
   signed-rank p over the test cases, time to reach ``--dice_targets``), and Dice per class (scratch vs
   pretrained at each size; per-case Dice averaged over seeds, paired by case).

Everything goes through our CLIs (``suprem_plan_and_preprocess``, ``suprem_train``, ``suprem_predict``) as
subprocesses under ``nice`` with one thread each; the work folder (default ``benchmarks/work/transfer``,
git-ignored) holds raw, preprocessed and results roots, and both datasets can share one (hippocampus ids 950-959,
ACDC 960-999). Finished runs are reused, so a rerun resumes; parallel invocations (e.g. ``--arms scratch`` and
``--arms pretrained``, or two ``--policies`` lists) share the runs through lock files in ``<work>/locks`` (delete a
run's lock after killing its process with SIGKILL).

Layout: ``runs/<tag>/`` (the run's results root), ``predictions/<tag>/{test,selection}/summary.json``,
``predictions/<tag>/timing.json``, ``logs/<tag>.log``; test and selection images under ``<work>/test`` and
``<work>/selection`` (ACDC: ``acdc_test``, ``acdc_selection``). Run tag:
``[acdc_]<architecture>[_<configuration>]_n<size>_<arm>_it<iterations>_s<seed>[<tag_suffix>]`` where the
configuration appears only when it is not the dataset's default (hippocampus 3d_fullres, ACDC 2d), ``<arm>`` is
``scratch``, ``pretrained`` (the trainer's default policy) or ``pretrained-<policy>``, and ``--tag_suffix`` is
appended to both arms, e.g. ``plain_unet_n5_pretrained-layer_decay_it300_s0`` or
``plain_unet_2d_n5_scratch_it300_s0_xfrom_acdc``.

Networks: our loader needs every backbone tensor of the checkpoint's shape, so where a fine-tuning dataset plans
another network than the one the pretrained arm starts from (ACDC 2d: 6 stages on 5 patients, 7 on 30; another
dataset's checkpoint), the build stage writes ``<plans>_from<source id>_<configuration>.json`` into its
preprocessed folder: its own plans and data with the source's network (patch: the source's at the same spacing,
else its own rounded up to the network's divisor); both arms train with it, so they compare the same network.

``--architecture`` swaps the plans' network for a SuPreM backbone (suprem_unet, segresnet, swin_unetr with the
presets' kwargs; patch size rounded up to the preset's divisor; 3d configurations only) while keeping the dataset's
own normalisation and spacing, so random init and our own pre-training are compared for that backbone too.

Examples (the settings of the runs in RESULTS.md are recorded there):
    # issue 6: one budget, the trainer's default policy
    python benchmarks/transfer.py --pretrain_iters 200 --finetune_iters 80 --seeds 0 1
    # policy comparison on hippocampus (5 training cases, selection Dice chooses; two invocations on two cores)
    python benchmarks/transfer.py --work benchmarks/work/hippo --recipe short --network_width 0.25 \\
        --pretrain_iters 600 --sizes 5 --finetune_iters 300 --seeds 0 1 2 \\
        --policies short suprem nnunet_pretrained short_low_lr frozen_encoder_warmup layer_decay --arms pretrained
    python benchmarks/transfer.py --work benchmarks/work/hippo ... --arms scratch   # same flags otherwise
    # learning curves with the chosen policy (test Dice and seconds per budget, time to Dice 0.80 / 0.85)
    python benchmarks/transfer.py --work benchmarks/work/hippo --recipe short --network_width 0.25 \\
        --pretrain_iters 600 --sizes 5 10 40 --finetune_iters 150 600 1500 --seeds 0 1 2 --policy layer_decay
    # ACDC (2d, by patient; pre-training on the heart = RV + MYO + LV merged)
    python benchmarks/transfer.py --dataset acdc --work benchmarks/work/hippo --recipe short \\
        --network_width 0.25 --pretrain_iters 600 --finetune_iters 150 600 --seeds 0 1 2 --policy layer_decay
    # cross-dataset: the ACDC 2d pre-training fine-tuned on hippocampus 2d (both arms: the ACDC 2d network)
    python benchmarks/transfer.py --work benchmarks/work/hippo --configuration 2d --recipe short \\
        --network_width 0.25 --sizes 5 --finetune_iters 300 --seeds 0 1 2 --policy layer_decay \\
        --pretrained_checkpoint benchmarks/work/hippo/results/Dataset960_AcdcHeart/\\
SupremTrainer__suprem_plans__2d/fold_all/checkpoint_final.pth --tag_suffix _xfrom_acdc \\
        --stages build finetune report
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.planning import DEFAULT_PLANS_NAME

REPO = Path(__file__).resolve().parents[1]
TRAINER = "SupremTrainer"
PLANS = DEFAULT_PLANS_NAME
SPLIT_PARTS = ("pretrain", "pool", "test", "selection")  # order in the shuffled subjects (selection added last)
EVAL_PARTS = ("test", "selection")


@dataclass(frozen=True)
class DatasetSpec:
    """A source dataset of the benchmark: where it is, its ids and names here, and its defaults."""
    folder: str                      # under the shared data folder
    prefix: str                      # of run tags, tables, test / selection folders
    pretrain_id: int
    finetune_ids: range              # fine-tuning datasets take the next free id here
    pretrain_tag: str                # Dataset<id>_<tag> of the merged-label pre-training set
    finetune_tag: str                # Dataset<id>_<tag><size>
    merged_label: str
    configuration: str
    counts: Dict[str, int]           # default subjects per split part
    sizes: List[int]
    subject_pattern: Optional[str]   # None: one case per subject


DATASETS = {
    "hippocampus": DatasetSpec("Dataset004_Hippocampus", "", 950, range(951, 960), "HippoMerged", "HippoFT",
                               "hippocampus", "3d_fullres",
                               {"pretrain": 100, "pool": 40, "test": 40, "selection": 40}, [5, 10, 40], None),
    "acdc": DatasetSpec("Dataset027_ACDC", "acdc_", 960, range(961, 1000), "AcdcHeart", "AcdcFT", "heart", "2d",
                        {"pretrain": 30, "pool": 20, "test": 10, "selection": 10}, [5, 10, 20], r"^(patient\d+)_"),
}


def shared_data() -> Path:
    """``$SUPREM_SHARED_DATA`` if set, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SUPREM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="hippocampus", choices=sorted(DATASETS),
                   help="source dataset; ACDC splits by patient (both frames together), counts are in patients")
    p.add_argument("--source", type=Path, default=None,
                   help="raw nnU-Net-format source dataset (read only; default: the dataset's folder under "
                        "$SUPREM_SHARED_DATA or ../shared/data)")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "transfer",
                   help="work folder (raw/preprocessed/results roots, predictions, tables)")
    p.add_argument("--configuration", default=None,
                   help="configuration of every run (default: hippocampus 3d_fullres, acdc 2d)")
    p.add_argument("--n_pretrain", type=int, default=None,
                   help="subjects for pre-training, labels merged (default: hippocampus 100, acdc 30)")
    p.add_argument("--n_pool", type=int, default=None, help="fine-tuning pool (default: hippocampus 40, acdc 20)")
    p.add_argument("--n_test", type=int, default=None,
                   help="held-out test subjects (used by neither; default: hippocampus 40, acdc 10)")
    p.add_argument("--n_selection", type=int, default=None,
                   help="held-out selection subjects that choose the policy (default: hippocampus 40, acdc 10)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="fine-tuning set sizes in subjects, the first N of the pool (default: hippocampus 5 10 40, "
                        "acdc 5 10 20)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the subject split")
    p.add_argument("--pretrain_iters", type=int, default=250, help="pre-training iterations")
    p.add_argument("--pretrained_checkpoint", type=Path, default=None,
                   help="use this checkpoint instead of the pretrain stage's checkpoint_final.pth (e.g. an "
                        "earlier checkpoint_latest.pth of a pre-training cut short, or another dataset's: both arms "
                        "then train its network, read from the plans.json beside it; give --tag_suffix then)")
    p.add_argument("--tag_suffix", default="",
                   help="appended to the run tags and table names (e.g. _xfrom_acdc), so runs from another "
                        "checkpoint (whose network both arms train) do not collide with the others")
    p.add_argument("--finetune_iters", type=int, nargs="+", default=[100],
                   help="iteration budgets: one independent run per budget for each arm (learning curves)")
    p.add_argument("--policy", default=None,
                   help="fine-tuning policy of the pretrained arm (suprem_train --finetune_policy); default: none "
                        "given = the trainer's default ('default' means the same); the policy of the curves and "
                        "per-class tables")
    p.add_argument("--policies", nargs="+", default=None,
                   help="train the pretrained arm with each of these policies ('default' = no --finetune_policy); "
                        "the curves and per-class tables use --policy, else the first of these")
    p.add_argument("--iters_per_epoch", type=int, default=25, help="iterations per epoch (budget = epochs x this)")
    p.add_argument("--val_iters", type=int, default=1, help="pseudo-Dice validation iterations per epoch")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--lr", type=float, default=None, help="learning rate of every run (default: the trainer's)")
    p.add_argument("--recipe", default="trainer", choices=["trainer", "short"],
                   help="trainer: the trainer's own recipe in epochs; short: --iterations N with the short-budget "
                        "recipe (AdamW 1e-3, warm-up + cosine), both arms alike (a policy is laid over it)")
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
                   help="patch ZxYxX (2d: YxX) of every run (default: the plans'; e.g. 32x64x32 for a cheaper "
                        "swin_unetr)")
    p.add_argument("--report_size", type=int, default=None,
                   help="fine-tuning size of the policy table (default: the smallest of --sizes)")
    p.add_argument("--report_iters", type=int, default=None,
                   help="budget of the policy and per-class tables (default: the largest of --finetune_iters)")
    p.add_argument("--dice_targets", type=float, nargs="+", default=[0.80, 0.85],
                   help="time-to-Dice thresholds of the curves table (mean foreground test Dice)")
    p.add_argument("--nice", type=int, default=19, help="niceness of the subprocesses")
    p.add_argument("--stages", nargs="+", default=["build", "pretrain", "finetune", "report"],
                   choices=["build", "pretrain", "finetune", "report"])
    args = p.parse_args(argv)
    return resolve_defaults(args)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the dataset-dependent defaults; ``args.spec`` is the dataset's :class:`DatasetSpec`."""
    spec = args.spec = DATASETS[args.dataset]
    if args.source is None:
        args.source = shared_data() / spec.folder
    if args.configuration is None:
        args.configuration = spec.configuration
    for part in SPLIT_PARTS:
        if getattr(args, f"n_{part}") is None:
            setattr(args, f"n_{part}", spec.counts[part])
    if args.sizes is None:
        args.sizes = list(spec.sizes)
    if args.architecture != "plain_unet" and not args.configuration.startswith("3d"):
        raise SystemExit(f"--architecture {args.architecture} is a 3d backbone; --configuration "
                         f"{args.configuration} needs plain_unet")
    chosen = args.policy if args.policy is not None else (args.policies[0] if args.policies else None)
    args.policy = None if chosen in (None, "default") else chosen  # the curves' and per-class tables' policy
    policies = [None if p in (None, "default") else p for p in (args.policies or [args.policy])]
    args.policies = list(dict.fromkeys(policies + [args.policy]))  # the finetune stage trains each of these
    return args


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


def subject_of(case: str, pattern: Optional[str]) -> str:
    if pattern is None:
        return case
    match = re.search(pattern, case)
    if match is None:
        raise SystemExit(f"case {case}: no subject matches {pattern!r}")
    return match.group(1) if match.groups() else match.group(0)


def case_split(source: Path, args: argparse.Namespace) -> Dict[str, List[str]]:
    """Seeded disjoint split of the source's subjects into pretrain / pool / test / selection (cases of a subject
    stay together); selection comes after the others in the shuffled order, so adding it keeps the earlier parts."""
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (source / "imagesTr").glob("*_0000.nii.gz"))
    by_subject: Dict[str, List[str]] = {}
    for case in cases:
        by_subject.setdefault(subject_of(case, args.spec.subject_pattern), []).append(case)
    subjects = sorted(by_subject)
    need = sum(getattr(args, f"n_{part}") for part in SPLIT_PARTS)
    if len(subjects) < need:
        raise SystemExit(f"{source}: {len(subjects)} subjects, the split needs {need}")
    order = np.random.default_rng(args.split_seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    split, start = {}, 0
    for part in SPLIT_PARTS:
        n = getattr(args, f"n_{part}")
        split[part] = [case for subject in shuffled[start: start + n] for case in by_subject[subject]]
        split[f"{part}_subjects"] = shuffled[start: start + n]
        start += n
    return split


def pool_cases(split: Dict[str, List[str]], size: int, args: argparse.Namespace) -> List[str]:
    """The cases of the first ``size`` subjects of the pool (hippocampus: the first ``size`` cases)."""
    subjects = set(split["pool_subjects"][:size])
    return [case for case in split["pool"] if subject_of(case, args.spec.subject_pattern) in subjects]


def dataset_name(dataset_id: int, tag: str) -> str:
    return f"Dataset{dataset_id:03d}_{tag}"


def pretrain_name(args: argparse.Namespace) -> str:
    return dataset_name(args.spec.pretrain_id, args.spec.pretrain_tag)


def foreground_labels(args: argparse.Namespace) -> Dict[str, str]:
    """{label value as str: class name} of every foreground label of the source."""
    labels = json.loads((args.source / "dataset.json").read_text())["labels"]
    return {str(v): k for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if int(v) > 0}


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


def make_raw(folder: Path, cases: Sequence[str], args: argparse.Namespace, labels: Dict[str, int],
             merged: bool) -> None:
    """A raw dataset of symlinked images (and labels, or merged copies) with its dataset.json."""
    source = args.source
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case in cases:
        link(source / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTr" / f"{case}_0000.nii.gz")
        label_src = source / "labelsTr" / f"{case}.nii.gz"
        if merged:
            write_merged_label(label_src, folder / "labelsTr" / f"{case}.nii.gz")
        else:
            link(label_src, folder / "labelsTr" / f"{case}.nii.gz")
    channels = json.loads((source / "dataset.json").read_text()).get("channel_names", {"0": "MRI"})
    dataset_json: Dict[str, Any] = {"channel_names": channels, "labels": labels, "numTraining": len(cases),
                                    "file_ending": ".nii.gz",
                                    "description": f"transfer benchmark subset of {source.name} ({len(cases)} cases)"}
    if args.spec.subject_pattern:
        dataset_json["subject_pattern"] = args.spec.subject_pattern
    text = json.dumps(dataset_json, indent=2)
    if not (folder / "dataset.json").is_file() or (folder / "dataset.json").read_text() != text:
        (folder / "dataset.json").write_text(text)


def finetune_names(args: argparse.Namespace) -> Dict[int, str]:
    """Fine-tuning dataset per size: the existing raw ``Dataset<id>_<FT tag><n>``, else the next free id of the
    dataset's range (so a later call with other ``--sizes`` finds the same datasets)."""
    raw = args.work / "raw"
    existing = {p.name.split("_", 1)[1]: p.name for p in raw.glob("Dataset*_*")} if raw.is_dir() else {}
    used = {int(name[7:10]) for name in existing.values()}
    names = {}
    for n in args.sizes:
        tag = f"{args.spec.finetune_tag}{n}"
        if tag not in existing:
            free = next((i for i in args.spec.finetune_ids if i not in used), None)
            if free is None:
                raise SystemExit(f"no free dataset id left in {args.spec.finetune_ids} for {tag}")
            used.add(free)
            existing[tag] = dataset_name(free, tag)
        names[n] = existing[tag]
    return names


def plans_name(args: argparse.Namespace) -> str:
    return PLANS if args.architecture == "plain_unet" else f"{PLANS}_{args.architecture}"


def transferred_plans_name(args: argparse.Namespace) -> Optional[str]:
    """``<plans>_from<source id>_<configuration>``: the plans ``transfer_plans`` writes where a fine-tuning dataset
    planned another network than the pretrained arm's source (None when the source is not known)."""
    source = source_network(args)
    return None if source is None else f"{plans_name(args)}_from{source['dataset_id']}_{args.configuration}"


def dataset_plans(args: argparse.Namespace, dataset: str) -> str:
    """Plans of the runs on ``dataset``: the transferred plans where ``transfer_plans`` wrote them, else
    ``plans_name``."""
    transferred = transferred_plans_name(args)
    if transferred and (args.work / "preprocessed" / dataset / f"{transferred}.json").is_file():
        return transferred
    return plans_name(args)


def unnarrowed(architecture: Dict[str, Any], width: float) -> Dict[str, Any]:
    """The architecture before ``--network_width width`` (checked: narrowing it again gives ``architecture``)."""
    if width == 1:
        return architecture
    from suprem_auto.networks import get_backbone, scale_width

    key = get_backbone(architecture["name"]).width_arg
    value = architecture["kwargs"][key]
    wide = [int(round(v / width)) for v in value] if isinstance(value, list) else int(round(value / width))
    candidate = {**architecture, "kwargs": {**architecture["kwargs"], key: wide}}
    if scale_width(candidate, width) != architecture:
        raise SystemExit(f"cannot undo --network_width {width} of {architecture}")
    return candidate


def source_network(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The network the pretrained arm starts from, at width 1 (so --network_width narrows it like every run):
    the plans beside --pretrained_checkpoint (its fold's plans.json and hyperparameters.json, as trained), else the
    pre-training dataset's plans here; None without either. {architecture, patch_size, spacing, patch_divisor,
    dataset_id, origin}; worked out once per invocation."""
    if not hasattr(args, "_source_network"):
        args._source_network = _source_network(args)
    return args._source_network


def _source_network(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    if args.pretrained_checkpoint is not None:
        fold = args.pretrained_checkpoint.resolve().parent
        if (fold / "plans.json").is_file() and (fold / "hyperparameters.json").is_file():
            hyper = json.loads((fold / "hyperparameters.json").read_text())
            plans = json.loads((fold / "plans.json").read_text())
            config = plans["configurations"][hyper["configuration"]]
            match = re.match(r"Dataset(\d+)_", str(plans.get("dataset_name", "")))
            width = float((hyper.get("config") or {}).get("network_width") or 1.0)
            if width != args.network_width:
                raise SystemExit(f"{args.pretrained_checkpoint}: trained at --network_width {width:g}, the runs here "
                                 f"use {args.network_width:g}; the weights load only at the same width")
            return {"architecture": unnarrowed(hyper["architecture"], width), "patch_size": config["patch_size"],
                    "spacing": config["spacing"], "patch_divisor": config.get("patch_divisor"),
                    "dataset_id": int(match.group(1)) if match else "ckpt",
                    "origin": f"{args.pretrained_checkpoint} ({hyper['configuration']})"}
        print(f"{args.pretrained_checkpoint}: no plans.json / hyperparameters.json beside it; its network is not "
              "known here")
    pre_file = args.work / "preprocessed" / pretrain_name(args) / f"{plans_name(args)}.json"
    if not pre_file.is_file():
        return None
    config = json.loads(pre_file.read_text())["configurations"][args.configuration]
    return {"architecture": config["architecture"], "patch_size": config["patch_size"], "spacing": config["spacing"],
            "patch_divisor": config.get("patch_divisor"), "dataset_id": args.spec.pretrain_id,
            "origin": f"{pretrain_name(args)} ({args.configuration})"}


def transfer_plans(args: argparse.Namespace, finetune: Sequence[str]) -> None:
    """A fine-tuning dataset that planned another network than the one the pretrained arm starts from (ACDC 2d: 6
    stages on 5 patients, 7 on 30; another dataset's checkpoint) gets ``transferred_plans_name``: its own plans
    (spacing, normalisation, preprocessed data) with that network, and its patch size: the source's at the same
    spacing (nnU-Net's practice of moving the pre-training plans to the fine-tuning dataset), else its own rounded
    up to the network's divisor (doubled along its longest axis where the bottleneck would be a single voxel).
    Both arms train with it, so they train the same network."""
    source = source_network(args)
    if source is None:
        return
    arch = source["architecture"]
    strides = np.array(arch.get("kwargs", {}).get("strides") or [[1]], dtype=int)
    divisor = [int(d) for d in np.prod(strides, axis=0)] if source["patch_divisor"] is None \
        else [int(source["patch_divisor"])] * len(source["patch_size"])
    for name in finetune:
        folder = args.work / "preprocessed" / name
        plans = json.loads((folder / f"{plans_name(args)}.json").read_text())
        config = plans["configurations"][args.configuration]
        target = folder / f"{transferred_plans_name(args)}.json"
        if config["architecture"] == arch:
            target.unlink(missing_ok=True)
            continue
        if len(config["patch_size"]) != len(source["patch_size"]):
            raise SystemExit(f"{name}: {args.configuration} patch {config['patch_size']}, the pretrained network's "
                             f"{source['patch_size']}: another dimensionality")
        if config["spacing"] == source["spacing"]:
            config["patch_size"] = list(source["patch_size"])
        else:
            patch = [int(-(-s // d) * d) for s, d in zip(config["patch_size"], divisor)]
            if all(s == d for s, d in zip(patch, divisor)):  # instance norm needs more than one bottleneck voxel
                longest = int(np.argmax(config["patch_size"]))
                patch[longest] *= 2
            config["patch_size"] = patch
        config["architecture"] = arch
        if source["patch_divisor"] is not None:
            config["patch_divisor"] = source["patch_divisor"]
        config.pop("estimated_feature_map_voxels", None)
        plans["configurations"] = {args.configuration: config}
        plans["plans_name"] = target.stem
        text = json.dumps(plans, indent=2)
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
        print(f"{name}: planned another network than {source['origin']}; both arms use {target.name} (that "
              f"network, patch {config['patch_size']})")


def derive_architecture_plans(pre_folder: Path, architecture: str, configuration: str) -> None:
    """``suprem_plans_<arch>.json``: the default plans with a SuPreM backbone (preset kwargs, patch rounded up)."""
    from suprem_auto.utils.atomic import atomic_write_json

    preset = {"suprem_unet": "suprem_unet", "segresnet": "suprem_segresnet",
              "swin_unetr": "suprem_swin_unetr"}[architecture]
    preset_json = json.loads((REPO / "plans" / f"{preset}.json").read_text())
    plans = json.loads((pre_folder / f"{PLANS}.json").read_text())
    divisor = int(preset_json["patch_divisor"])
    config = plans["configurations"][configuration]
    config["patch_size"] = [int(-(-s // divisor) * divisor) for s in config["patch_size"]]
    config["architecture"] = preset_json["architecture"]
    config["patch_divisor"] = divisor
    config.pop("estimated_feature_map_voxels", None)
    plans["configurations"] = {configuration: config}
    plans["plans_name"] = f"{PLANS}_{architecture}"
    atomic_write_json(pre_folder / f"{PLANS}_{architecture}.json", plans)


def eval_folder(args: argparse.Namespace, part: str) -> Path:
    """Images and labels of the test or selection cases (hippocampus: ``<work>/test``, as before)."""
    return args.work / f"{args.spec.prefix}{part}"


def eval_parts(args: argparse.Namespace) -> List[str]:
    return [part for part in EVAL_PARTS if getattr(args, f"n_{part}") > 0]


def stem(args: argparse.Namespace) -> str:
    """Dataset prefix, architecture and (when not the dataset's default) configuration: run tags and tables."""
    config = "" if args.configuration == args.spec.configuration else f"_{args.configuration}"
    return f"{args.spec.prefix}{args.architecture}{config}"


def arm_label(arm: str, policy: Optional[str]) -> str:
    return arm if arm == "scratch" or policy is None else f"{arm}-{policy}"


def run_tag(args: argparse.Namespace, size: int, arm: str, policy: Optional[str], iters: int, seed: int) -> str:
    return f"{stem(args)}_n{size}_{arm_label(arm, policy)}_it{iters}_s{seed}{args.tag_suffix}"


# ----------------------------------------------------------------------------------------------- stages
def stage_build(args: argparse.Namespace, split: Dict[str, List[str]]) -> None:
    """Raw datasets (pretrain merged, one per fine-tuning size, test and selection folders), plan + preprocess."""
    src_labels = json.loads((args.source / "dataset.json").read_text())["labels"]
    raw = args.work / "raw"
    finetune = finetune_names(args)
    names = list(finetune.values())
    if args.pretrained_checkpoint is None:
        make_raw(raw / pretrain_name(args), split["pretrain"], args,
                 {"background": 0, args.spec.merged_label: 1}, merged=True)
        names.insert(0, pretrain_name(args))
    for n, name in finetune.items():
        make_raw(raw / name, pool_cases(split, n, args), args, src_labels, merged=False)
    for part in eval_parts(args):
        folder = eval_folder(args, part)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        for case in split[part]:
            link(args.source / "imagesTr" / f"{case}_0000.nii.gz", folder / "images" / f"{case}_0000.nii.gz")
            link(args.source / "labelsTr" / f"{case}.nii.gz", folder / "labels" / f"{case}.nii.gz")
    ids = [name.split("_")[0][len("Dataset"):] for name in names]
    secs = run(["suprem_auto.cli.plan_and_preprocess", "-d", *ids, "-np", "1", "-c", args.configuration], args,
               args.work / "logs" / f"plan_and_preprocess_{args.spec.prefix}{args.configuration}.log")
    print(f"plan + preprocess: {secs:.0f} s")
    if args.architecture != "plain_unet":
        for name in names:
            derive_architecture_plans(args.work / "preprocessed" / name, args.architecture, args.configuration)
    transfer_plans(args, list(finetune.values()))
    check_same_architecture(args)


def check_same_architecture(args: argparse.Namespace) -> None:
    """The pretrained arm's source network and every fine-tuning dataset's must be the same (else the weights
    cannot load): ``transfer_plans`` has made them so; printed per dataset."""
    source = source_network(args)
    found = {}
    for name in finetune_names(args).values():
        plans_file = args.work / "preprocessed" / name / f"{dataset_plans(args, name)}.json"
        config = json.loads(plans_file.read_text())["configurations"][args.configuration]
        found[name] = config
        stages = config["architecture"].get("kwargs", {}).get("n_stages", "?")
        print(f"{name} ({args.configuration}, {dataset_plans(args, name)}): {stages} stages, patch "
              f"{config['patch_size']}, spacing {config['spacing']}")
    if source is None:
        print("WARNING: the pretrained arm's network is not known here (no pre-training dataset, no plans beside "
              "--pretrained_checkpoint); not compared")
        return
    stages = source["architecture"].get("kwargs", {}).get("n_stages", "?")
    print(f"pretrained from {source['origin']}: {stages} stages, patch {source['patch_size']}, spacing "
          f"{source['spacing']}")
    differ = [name for name, config in found.items() if config["architecture"] != source["architecture"]]
    if differ:
        raise SystemExit(f"{', '.join(differ)}: another network than {source['origin']}; transfer needs the same "
                         "one")


def train_cmd(args: argparse.Namespace, dataset: str, iters: int, seed: int) -> List[str]:
    """One suprem_train call. ``--recipe trainer``: the trainer's recipe over epochs of --iters_per_epoch;
    ``--recipe short``: ``--iterations N`` (the short-budget recipe: AdamW, warm-up + cosine over N)."""
    cmd = ["suprem_auto.cli.train", dataset, args.configuration, "all", "-tr", args.trainer, "-p",
           dataset_plans(args, dataset),
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
    return results / dataset / f"{args.trainer}__{dataset_plans(args, dataset)}__{args.configuration}"


def pretrained_checkpoint(args: argparse.Namespace) -> Path:
    if args.pretrained_checkpoint is not None:
        return args.pretrained_checkpoint.resolve()
    return model_folder(args.work / "results", pretrain_name(args), args) / "fold_all" / "checkpoint_final.pth"


def stage_pretrain(args: argparse.Namespace) -> None:
    ckpt = pretrained_checkpoint(args)
    if ckpt.is_file():
        print(f"pre-training done: {ckpt}")
        return
    if args.pretrained_checkpoint is not None:
        raise SystemExit(f"{ckpt}: --pretrained_checkpoint is missing")
    secs = run(train_cmd(args, pretrain_name(args), args.pretrain_iters, 0), args,
               args.work / "logs" / f"pretrain_{stem(args)}.log")
    print(f"pre-training ({args.pretrain_iters} iterations): {secs:.0f} s -> {ckpt}")


def claim(lock: Path) -> bool:
    """Atomically create ``lock`` (False if it exists), so parallel invocations share the runs."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"pid {os.getpid()}\n".encode())
    os.close(fd)
    return True


def run_done(pred: Path, parts: Sequence[str]) -> bool:
    return (pred / "timing.json").is_file() and all((pred / part / "summary.json").is_file() for part in parts)


def load_summary(fold: Path) -> Optional[Dict[str, Any]]:
    """Counts of the fold's load_report.json (None without one: a scratch run)."""
    report_file = fold / "load_report.json"
    if not report_file.is_file():
        return None
    report = json.loads(report_file.read_text())
    return {"checkpoint": report.get("checkpoint"), "layout": report.get("layout"),
            "backbone_tensors_loaded": report.get("backbone_tensors_loaded"),
            "backbone_tensors_total": report.get("backbone_tensors_total"),
            "loaded": len(report.get("loaded") or []), "reinitialised": len(report.get("reinitialised") or {}),
            "adapted": len(report.get("adapted") or {}), "ignored": len(report.get("ignored") or {})}


def run_arm(args: argparse.Namespace, size: int, dataset: str, arm: str, policy: Optional[str], iters: int,
            seed: int) -> Path:
    """Train one arm (scratch | pretrained with ``policy``) for ``iters`` iterations into its own results root,
    predict the test and selection cases and evaluate them; returns the prediction folder."""
    tag = run_tag(args, size, arm, policy, iters, seed)
    pred = args.work / "predictions" / tag
    parts = eval_parts(args)
    if run_done(pred, parts):
        return pred
    lock = args.work / "locks" / tag
    if not claim(lock):
        print(f"  {tag}: another process is on it; skipped", flush=True)
        return pred
    try:
        if run_done(pred, parts):  # finished by another process between the check and the claim
            return pred
        results = args.work / "runs" / tag
        folder = model_folder(results, dataset, args)
        timing_file = results / "timing.json"
        if not (folder / "fold_all" / "checkpoint_final.pth").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # an interrupted run
            cmd = train_cmd(args, dataset, iters, seed)
            if arm == "pretrained":
                if not pretrained_checkpoint(args).is_file():
                    raise SystemExit(f"{pretrained_checkpoint(args)}: missing; run the pretrain stage first")
                cmd += ["-pretrained", str(pretrained_checkpoint(args))]
                if policy is not None:
                    cmd += ["--finetune_policy", policy]
            secs = run(cmd, args, args.work / "logs" / f"{tag}.log", results)
            timing_file.write_text(json.dumps({"train_s": round(secs, 1), "iterations": iters}, indent=1))
            print(f"  {tag}: trained in {secs:.0f} s", flush=True)
        from suprem_auto.evaluation.evaluate import evaluate_folder

        keys = list(foreground_labels(args))
        for part in parts:
            out = pred / part
            if (out / "summary.json").is_file():
                continue
            secs = run(["suprem_auto.cli.predict", "-i", str(eval_folder(args, part) / "images"), "-o", str(out),
                        "-m", str(folder), "-f", "all", "--disable_tta", "-device", "cpu", "--disable_progress_bar"],
                       args, args.work / "logs" / f"{tag}_predict_{part}.log", results)
            summary = evaluate_folder(eval_folder(args, part) / "labels", out, labels=[int(k) for k in keys])
            dice = " / ".join(f"{summary['mean'][k]['dice']:.3f}" for k in keys)
            print(f"  {tag}: {part} predicted in {secs:.0f} s; Dice {dice}", flush=True)
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"train_s": None,
                                                                                     "iterations": iters}
        hyper_file = folder / "fold_all" / "hyperparameters.json"
        hyper = json.loads(hyper_file.read_text()) if hyper_file.is_file() else {}
        timing.update({"arm": arm, "policy": policy, "finetune_policy_used": hyper.get("finetune_policy"),
                       "recipe": hyper.get("recipe"), "seed": seed, "size": size, "dataset": dataset,
                       "configuration": args.configuration, "load": load_summary(folder / "fold_all")})
        pred.mkdir(parents=True, exist_ok=True)
        (pred / "timing.json").write_text(json.dumps(timing, indent=1))
        return pred
    finally:
        lock.unlink(missing_ok=True)


def stage_finetune(args: argparse.Namespace) -> None:
    for size, dataset in finetune_names(args).items():
        for iters in args.finetune_iters:
            for seed in args.seeds:
                for arm in args.arms:
                    for policy in (args.policies if arm == "pretrained" else [None]):
                        run_arm(args, size, dataset, arm, policy, iters, seed)


# ----------------------------------------------------------------------------------------------- report
def per_case_dice(summary_file: Path, keys: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """{case: {class key: Dice}} (NaN where the evaluation gave none)."""
    summary = json.loads(summary_file.read_text())
    return {c["case"]: {k: np.nan if c["metrics"][k]["dice"] is None else float(c["metrics"][k]["dice"])
                        for k in keys} for c in summary["metric_per_case"]}


class Runs:
    """Finished runs of one (size, arm, policy, budget) over the seeds, read from their summaries."""

    def __init__(self, args: argparse.Namespace, size: int, arm: str, policy: Optional[str], iters: int,
                 missing: List[str]) -> None:
        self.keys = list(foreground_labels(args))
        self.seeds: List[int] = []
        self.dice: Dict[str, List[Dict[str, Dict[str, float]]]] = {part: [] for part in eval_parts(args)}
        self.train_s: List[float] = []
        self.policies_used: List[str] = []  # the policy names the trainer recorded (the default's real name)
        for seed in args.seeds:
            tag = run_tag(args, size, arm, policy, iters, seed)
            pred = args.work / "predictions" / tag
            if not run_done(pred, eval_parts(args)):
                missing.append(tag)
                continue
            self.seeds.append(seed)
            for part in self.dice:
                self.dice[part].append(per_case_dice(pred / part / "summary.json", self.keys))
            timing = json.loads((pred / "timing.json").read_text())
            train_s = timing.get("train_s")
            used = timing.get("finetune_policy_used")
            if isinstance(used, dict) and used.get("name") and used["name"] not in self.policies_used:
                self.policies_used.append(used["name"])
            self.train_s.append(np.nan if train_s is None else float(train_s))

    def matrix(self, part: str, seeds: Sequence[int] | None = None, key: str | None = None) -> np.ndarray:
        """(seeds, cases) Dice of one class, or the per-case foreground mean when ``key`` is None."""
        rows = [r for s, r in zip(self.seeds, self.dice[part]) if seeds is None or s in seeds]
        cases = sorted(self.dice[part][0])
        keys = [key] if key else self.keys
        with np.errstate(all="ignore"):
            return np.array([[np.nanmean([r[c][k] for k in keys]) if not all(np.isnan(r[c][k]) for k in keys)
                              else np.nan for c in cases] for r in rows], dtype=float)

    def seed_means(self, part: str, key: str | None = None) -> np.ndarray:
        return np.nanmean(self.matrix(part, key=key), axis=1)

    def mean(self, part: str, key: str | None = None) -> float:
        return float(np.mean(self.seed_means(part, key)))

    def seconds(self) -> float:
        return float(np.nanmean(self.train_s)) if self.train_s and not np.all(np.isnan(self.train_s)) else np.nan


def compare(scratch: Runs, pre: Runs, part: str, key: str | None = None) -> tuple:
    """(common seeds, scratch mean, pretrained mean, per-seed differences, Wilcoxon p, n cases) on the seeds both
    arms finished; per-case Dice averaged over those seeds, paired by case."""
    from scipy.stats import wilcoxon

    seeds = [s for s in scratch.seeds if s in pre.seeds]
    if not seeds:
        return seeds, np.nan, np.nan, np.array([]), np.nan, 0
    s_m, p_m = scratch.matrix(part, seeds, key), pre.matrix(part, seeds, key)
    seed_diffs = np.nanmean(p_m, axis=1) - np.nanmean(s_m, axis=1)
    with np.errstate(all="ignore"):
        a, b = np.nanmean(s_m, axis=0), np.nanmean(p_m, axis=0)  # per case, averaged over seeds
    ok = ~(np.isnan(a) | np.isnan(b))
    p = wilcoxon(b[ok], a[ok]).pvalue if np.any(a[ok] != b[ok]) else 1.0
    return seeds, float(a[ok].mean()), float(b[ok].mean()), seed_diffs, float(p), int(ok.sum())


def title(args: argparse.Namespace) -> str:
    return f"{args.dataset} {args.configuration}, runs {stem(args)}_*{args.tag_suffix}"


def fmt_seconds(value: float) -> str:
    return "?" if np.isnan(value) else f"{value:.0f}"


def policy_table(args: argparse.Namespace, missing: List[str]) -> str:
    """Scratch and every policy at one size and budget: selection Dice (chooses), test Dice (confirms)."""
    size = args.report_size or min(args.sizes)
    iters = args.report_iters or max(args.finetune_iters)
    names = foreground_labels(args)
    parts = sorted(eval_parts(args), key=lambda part: part != "selection")  # selection chooses, test confirms
    arms = [("scratch", None)] + [("pretrained", p) for p in args.policies]
    runs = {arm_label(a, p): Runs(args, size, a, p, iters, missing) for a, p in arms}
    choose = "selection" if "selection" in parts else parts[0]
    candidates = {label: r for label, r in runs.items() if label != "scratch" and r.seeds}
    best = max(candidates, key=lambda label: candidates[label].mean(choose)) if candidates else None
    head = ["arm", "seeds"]
    for part in parts:
        head += [f"{part} Dice", f"{part} per seed", f"{part} per class ({' / '.join(names.values())})"]
    head += ["test - scratch (seeds)", "Wilcoxon p test (n cases)", "train s"]
    lines = [f"### Policies: {title(args)}, {size} training subjects, "
             f"{iters} iterations (best {choose} mean marked **)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in runs.items():
        if not r.seeds:
            continue
        shown = label + (f" ({'/'.join(r.policies_used)})" if label == "pretrained" and r.policies_used else "")
        cells = [f"**{shown}**" if label == best else shown, ",".join(map(str, r.seeds))]
        for part in parts:
            cells += [f"{r.mean(part):.3f}", ", ".join(f"{v:.3f}" for v in r.seed_means(part)),
                      " / ".join(f"{r.mean(part, k):.3f}" for k in names)]
        if label == "scratch" or "test" not in parts:
            cells += ["", ""]
        else:
            seeds, a, b, _, p, n = compare(runs["scratch"], r, "test")
            cells += [f"{b - a:+.3f} (seeds {','.join(map(str, seeds))})" if seeds else "no common seed",
                      f"{p:.2g} ({n})" if seeds else ""]
        cells.append(fmt_seconds(r.seconds()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_table(args: argparse.Namespace, missing: List[str]) -> str:
    """Per size: test Dice and training seconds of both arms at each budget, the difference with its Wilcoxon p,
    and the smallest budget at which each arm reached each Dice target."""
    policy = args.policy
    pre_label = arm_label("pretrained", policy)
    lines = [f"### Curves: {title(args)}, test cases, pretrained = {pre_label}", "",
             "| train subjects | iterations | scratch Dice (seeds) | scratch s | pretrained Dice (seeds) | "
             "pretrained s | difference (common seeds) | per-seed differences | Wilcoxon p (n cases) |",
             "|---|---|---|---|---|---|---|---|---|"]
    reached: Dict[tuple, Dict[float, str]] = {}
    for size in args.sizes:
        for arm in ("scratch", "pretrained"):
            reached[(size, arm)] = {t: "" for t in args.dice_targets}
        for iters in sorted(args.finetune_iters):
            scratch = Runs(args, size, "scratch", None, iters, missing)
            pre = Runs(args, size, "pretrained", policy, iters, missing)
            if not scratch.seeds and not pre.seeds:
                continue
            cells = [str(size), str(iters)]
            for arm, r in (("scratch", scratch), ("pretrained", pre)):
                if r.seeds:
                    mean = r.mean("test")
                    cells += [f"{mean:.3f} ({','.join(map(str, r.seeds))})", fmt_seconds(r.seconds())]
                    for target in args.dice_targets:
                        if not reached[(size, arm)][target] and mean >= target:
                            reached[(size, arm)][target] = f"{iters} it, {fmt_seconds(r.seconds())} s"
                else:
                    cells += ["-", "-"]
            seeds, a, b, diffs, p, n = compare(scratch, pre, "test")
            if seeds:
                cells += [f"{b - a:+.3f} ({','.join(map(str, seeds))})", ", ".join(f"{d:+.3f}" for d in diffs),
                          f"{p:.2g} ({n})"]
            else:
                cells += ["-", "-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
    targets = [f"{t:g}" for t in args.dice_targets]
    lines += ["", "Time to mean test Dice (smallest budget reaching it; train seconds averaged over seeds):", "",
              "| train subjects | arm | " + " | ".join(f"Dice >= {t}" for t in targets) + " |",
              "|---|---|" + "---|" * len(targets)]
    for (size, arm), hits in reached.items():
        label = pre_label if arm == "pretrained" else arm
        lines.append(f"| {size} | {label} | " + " | ".join(hits[t] or "not reached" for t in args.dice_targets)
                     + " |")
    return "\n".join(lines)


def class_table(args: argparse.Namespace, missing: List[str]) -> str:
    """The issue-6 table: per size and class, scratch vs pretrained on the test cases at one budget."""
    iters = args.report_iters or max(args.finetune_iters)
    names = foreground_labels(args)
    pre_label = arm_label("pretrained", args.policy)
    lines = [f"### Per class: {title(args)}, test cases, {iters} iterations, "
             f"pretrained = {pre_label}", "",
             "| train subjects | class | seeds | scratch Dice | pretrained Dice | difference | per-seed differences | "
             "Wilcoxon p (n cases) |", "|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        scratch = Runs(args, size, "scratch", None, iters, missing)
        pre = Runs(args, size, "pretrained", args.policy, iters, missing)
        for key, name in names.items():
            seeds, a, b, diffs, p, n = compare(scratch, pre, "test", key)
            if not seeds:
                break
            lines.append(f"| {size} | {name} | {','.join(map(str, seeds))} | {a:.3f} | {b:.3f} | {b - a:+.3f} | "
                         f"{', '.join(f'{d:+.3f}' for d in diffs)} | {p:.2g} ({n}) |")
    return "\n".join(lines)


def stage_report(args: argparse.Namespace) -> str:
    """The three Markdown tables over the finished runs (the others are listed as not finished)."""
    tables = {}
    for name, make in (("policies", policy_table), ("curves", curves_table), ("classes", class_table)):
        missing: List[str] = []
        table = make(args, missing)
        missing = sorted(set(missing))
        if missing:
            table += "\n\nnot finished (no row or fewer seeds): " + "; ".join(missing)
        out = args.work / f"table_{stem(args)}{args.tag_suffix}_{name}.md"
        out.write_text(table + "\n")
        tables[name] = table
    text = "\n\n".join(tables.values())
    print(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    split = case_split(args.source, args)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / f"{args.spec.prefix}split.json").write_text(json.dumps(split, indent=1))
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

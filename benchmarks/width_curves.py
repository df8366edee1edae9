"""Learning curves per network width (issue 14): Dice on held-out cases after N iterations of the short-budget recipe,
for widths 0.25 / 0.5 / 1.0, on hippocampus (3d_fullres) and ACDC (2d). They feed the width rule
(``suprem_auto/training/recipes/width_curves.json``, ``suprem_auto/training/width_choice.py``).

Every run is a scratch run of ``benchmarks/transfer.py`` (same subject split, same test cases, one thread, fold
``all``, its own lr schedule over N iterations), so runs already made for the transfer benchmark are reused::

    python benchmarks/width_curves.py run   --dataset hippocampus --work W --widths 0.25 0.5 1.0 --iters 250 1000
    python benchmarks/width_curves.py table --dataset hippocampus --work W --widths 0.25 0.5 1.0 --iters 250 1000 \\
        [--write_curves]

``table`` prints test Dice and seconds per iteration for each (width, iterations) that finished; ``--write_curves``
puts the finished points into the curves file (one entry per dataset, replaced).

``budget`` reads the results of ``benchmarks/heldout_budget.py ours`` in its work folder (every width it ran, the
iterations each budget bought, the held-out Dice: the whole training set, points far past 1,000 iterations) and,
with ``--write_curves``, puts them in as a second entry of the dataset (``<dataset>_heldout``) when at least two
widths were run (an entry with one width would credit that width alone)::

    python benchmarks/width_curves.py budget --dataset hippocampus --work /work/bench/hippo_all [--write_curves]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
CURVES = REPO / "suprem_auto" / "training" / "recipes" / "width_curves.json"
#: per dataset: transfer.py flags of the runs (size = training subjects), the run-tag stem and the configuration
DATASETS = {
    "hippocampus": {"flags": ["--pretrain_iters", "600"], "size": 40, "stem": "plain_unet",
                    "configuration": "3d_fullres", "test": "40 test cases (one per subject)"},
    "acdc": {"flags": ["--dataset", "acdc", "--pretrain_iters", "1500"], "size": 20, "stem": "acdc_plain_unet",
             "configuration": "2d", "test": "10 test patients (20 volumes)"},
}


def suffix(width: float) -> str:
    """Run-tag suffix of a width (0.25 has none: the transfer benchmark's own runs)."""
    return "" if width == 0.25 else f"_w{int(round(width * 100)):03d}"


def tag(dataset: str, width: float, iters: int, seed: int = 0) -> str:
    spec = DATASETS[dataset]
    return f"{spec['stem']}_n{spec['size']}_scratch_it{iters}_s{seed}{suffix(width)}"


def run(dataset: str, work: Path, widths: Sequence[float], iters: Sequence[int], nice: int) -> None:
    spec = DATASETS[dataset]
    for width in widths:
        cmd = [sys.executable, str(REPO / "benchmarks" / "transfer.py"), *spec["flags"], "--work", str(work),
               "--recipe", "short", "--network_width", f"{width:g}", "--sizes", str(spec["size"]), "--seeds", "0",
               "--arms", "scratch", "--stages", "finetune", "--nice", str(nice),
               "--finetune_iters", *[str(n) for n in iters]]
        if suffix(width):
            cmd += ["--tag_suffix", suffix(width)]
        subprocess.run(cmd, check=True)


def point(work: Path, dataset: str, width: float, iters: int) -> Optional[Dict[str, float]]:
    pred = work / "predictions" / tag(dataset, width, iters)
    summary, timing = pred / "test" / "summary.json", pred / "timing.json"
    if not (summary.is_file() and timing.is_file()):
        return None
    dice = json.loads(summary.read_text())["foreground_mean"]["dice"]
    seconds = json.loads(timing.read_text())["train_s"]
    return {"dice": float(dice), "sec_per_iteration": float(seconds) / iters}


def table(dataset: str, work: Path, widths: Sequence[float], iters: Sequence[int], write: bool) -> str:
    points = {w: {n: point(work, dataset, w, n) for n in iters} for w in widths}
    lines = [f"| width | " + " | ".join(f"{n} it" for n in iters) + " |",
             "|---|" + "---|" * len(iters)]
    for w in widths:
        cells = [f"{p['dice']:.3f} ({p['sec_per_iteration']:.2f} s/it)" if p else "-" for p in points[w].values()]
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if write:
        write_curves(dataset, {w: {n: p["dice"] for n, p in ps.items() if p} for w, ps in points.items()})
    return text


def write_curves(dataset: str, dice: Dict[float, Dict[int, float]], entry_name: Optional[str] = None,
                 training_subjects: Optional[int] = None, scored_on: Optional[str] = None) -> None:
    """Put one entry (replacing one of the same name) into the curves file."""
    data = json.loads(CURVES.read_text())
    spec = DATASETS[dataset]
    name = entry_name or dataset
    entry = {"dataset": name, "configuration": spec["configuration"],
             "training_subjects": training_subjects or spec["size"], "scored_on": scored_on or spec["test"],
             "seed": 0, "points": {f"{w:g}": [[n, round(d, 4)] for n, d in sorted(ps.items())]
                                   for w, ps in sorted(dice.items()) if ps}}
    data["curves"] = [c for c in data["curves"] if c["dataset"] != name] + [entry]
    text = json.dumps(data, indent=2)
    text = re.sub(r"\[\s+(\d+),\s+([\d.]+)\s+\]", r"[\1, \2]", text)  # one [iterations, dice] pair per line
    CURVES.write_text(text + "\n")


def budget_points(work: Path, configuration: str) -> Dict[float, Dict[int, float]]:
    """width -> {iterations: held-out foreground Dice} of heldout_budget.py's runs of ``configuration`` in ``work``
    whose only flag, if any, is the width (other flags change the recipe, not just the width)."""
    points: Dict[float, Dict[int, float]] = {}
    for path in sorted(work.glob(f"ours_{configuration}_*.json")):
        result = json.loads(path.read_text())
        flags = [a for a in result.get("flags") or [] if a.startswith("--")]
        if result.get("configuration") != configuration or set(flags) - {"--network_width"}:
            continue
        width = float(result["network_width"])
        points.setdefault(width, {})[int(result["iterations"])] = float(result["held_out"]["foreground_mean"])
    return points


def budget_table(dataset: str, work: Path, write: bool) -> str:
    """The heldout_budget.py points of ``work`` as a table; with ``write``, the ``<dataset>_heldout`` entry."""
    spec = DATASETS[dataset]
    points = budget_points(work, spec["configuration"])
    lines = ["| width | iterations: held-out Dice |", "|---|---|"]
    lines += [f"| {w:g} | " + ", ".join(f"{n}: {d:.3f}" for n, d in sorted(ps.items())) + " |"
              for w, ps in sorted(points.items())]
    if write and len(points) >= 2:
        held = len(list((work / "heldout_images").glob("*_0000.nii.gz")))
        train = len(list((work / "raw").glob("Dataset*/labelsTr/*.nii.gz")))
        write_curves(dataset, points, f"{dataset}_heldout", train, f"{held} held-out images (heldout_budget.py)")
    elif write:
        lines.append(f"not written: {len(points)} width(s) measured, at least 2 needed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["run", "table", "budget"])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="hippocampus")
    p.add_argument("--work", type=Path, required=True,
                   help="transfer.py work folder (runs are shared with it); budget: heldout_budget.py's work folder")
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--iters", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--write_curves", action="store_true", help="table: update the width-curves file")
    args = p.parse_args(argv)
    if args.mode == "run":
        run(args.dataset, args.work, args.widths, args.iters, args.nice)
    elif args.mode == "budget":
        print(budget_table(args.dataset, args.work, args.write_curves))
    else:
        print(table(args.dataset, args.work, args.widths, args.iters, args.write_curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput per batch size: how many patches (or 2D slices) a second one training step of the
short-budget network processes on this machine, at each batch size and width.

    python benchmarks/batch_throughput.py --work /work/bench/acdc --dataset 27 -c 2d --batches 2 4 8 16
    python benchmarks/batch_throughput.py --work /work/bench/hippo_all --dataset 4 -c 3d_fullres --batches 2 4 8

--work is a folder that ``benchmarks/heldout_budget.py`` prepared (raw + preprocessed). The step is the trainer's own
(``time_training_step``: forward, deep-supervision loss, backward, AdamW; the run's patch, precision and threads, on
random data shaped like a batch), median of --steps after one warm-up step. A narrow network on a CPU uses its cores
poorly at batch 2; if a bigger batch processes many more samples per second, a budget buys more data per minute.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

from budget import _cpu_name  # benchmarks/ is sys.path[0] when run as a script


def step_times(work: Path, dataset: str, configuration: str, batches: Sequence[int], widths: Sequence[float],
               steps: int) -> Dict[str, Any]:
    """Seconds per step and samples per second for every (width, batch)."""
    from suprem_auto.paths import Roots
    from suprem_auto.training.run import build_trainer

    roots = Roots(raw=work / "raw", preprocessed=work / "preprocessed", results=work / "throughput_results")
    rows = []
    for width in widths:
        for batch in batches:
            trainer = build_trainer(dataset, configuration, "all", roots, device="cpu", echo=False,
                                    overrides={"budget_s": 600.0, "batch_size": batch, "network_width": width})
            seconds = trainer.time_training_step(width, steps=steps)
            rows.append({"width": width, "batch": batch, "patch": list(trainer.patch_size),
                         "sec_per_step": round(seconds, 4), "samples_per_s": round(batch / seconds, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return {"cpu": _cpu_name(), "configuration": configuration, "steps": steps, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", required=True, help="dataset id or name in WORK/preprocessed")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    out = step_times(args.work, args.dataset, args.configuration, args.batches, args.widths, args.steps)
    name = f"batch_throughput_{args.configuration}.json"
    (args.work / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

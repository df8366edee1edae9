"""Training throughput on CPU: augmentation batches/s and optimiser-step time at the planner's hippocampus patch.

    python benchmarks/training_throughput.py [--cases 20] [--steps 5]

Copies real hippocampus cases into a temporary folder, runs suprem_plan_and_preprocess (default planner), then
times (a) the training data pipeline in this process (sampling + augmentation, and sampling only) and (b) one
training iteration (forward, Dice+CE with deep supervision, backward, SGD step) of the planned plain U-Net.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the trainer's choice)")
    args = parser.parse_args()

    from conftest import copy_hippocampus

    from suprem_auto.cli.plan_and_preprocess import main_plan_and_preprocess
    from suprem_auto.paths import resolve_roots
    from suprem_auto.training.run import build_trainer

    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    roots = resolve_roots(str(tmp / "raw"), str(tmp / "pre"), str(tmp / "results"))
    copy_hippocampus(roots.raw, args.cases)
    start = time.perf_counter()
    main_plan_and_preprocess(["-d", "4", "-np", "2", "--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed)])
    print(f"plan + preprocess {args.cases} cases: {time.perf_counter() - start:.1f} s")

    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                            overrides={"num_workers": 0, "batch_size": args.batch_size})
    trainer.initialize()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"patch {trainer.patch_size}, batch {trainer.global_batch_size}, torch threads {torch.get_num_threads()}, "
          f"parameters {sum(p.numel() for p in trainer.network.parameters()) / 1e6:.2f} M")
    train_stream, _ = trainer.build_streams()
    next(train_stream)
    aug = _time(lambda: next(train_stream), 10)
    sample = _time(train_stream.sampler.sample_batch, 10)
    print(f"data: sampling + augmentation {aug * 1000:.0f} ms/batch ({1 / aug:.1f} batches/s per worker); "
          f"sampling only {sample * 1000:.0f} ms/batch")
    batches = [next(train_stream) for _ in range(args.steps + 1)]
    trainer.close_streams()
    trainer.network.train()
    trainer.train_step(batches[0])  # warm-up (oneDNN primitive creation)
    it = iter(batches[1:])
    step = _time(lambda: trainer.train_step(next(it)), args.steps)
    print(f"train step (fwd + Dice/CE with deep supervision + bwd + SGD): {step:.2f} s/iteration "
          f"-> {250 * step / 60:.1f} min per 250-iteration epoch on this CPU")


if __name__ == "__main__":
    main()

"""The training loop of a budgeted run (``--budget`` / ``--iterations``): probe, plan, epochs of the planned length
with a per-iteration learning rate, re-planning after every epoch; the trainer's own hooks do the work."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Tuple

import numpy as np
from tqdm import tqdm

from suprem_auto.training.budget import (PROBE_ITERATIONS, BudgetClock, BudgetPlan, estimate_final_validation_s,
                                         final_validation_forwards, lr_at)
from suprem_auto.training.optim import apply_learning_rate
from suprem_auto.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from suprem_auto.training.trainers.base import BaseTrainer


def _probe_lr(base_lr: float, iteration: int) -> float:
    """Learning rate of the timing iterations before the plan exists: the start of a slow warm-up."""
    return base_lr * (iteration + 1) / (10 * PROBE_ITERATIONS + 1)


def _val_case_shapes(trainer: "BaseTrainer") -> List[List[int]]:
    _, val_cases = trainer.split()
    return [list(np.load(trainer.data_folder / f"{c}.npy", mmap_mode="r").shape[1:]) for c in val_cases]


def _inference_patch(trainer: "BaseTrainer") -> Tuple[List[int], float]:
    """The patch the final validation predicts with (the plans', which a --patch_size override does not change) and
    its cost relative to one training-patch forward (voxel ratio)."""
    patch = list(trainer.plans_config.get("patch_size") or trainer.patch_size)
    return patch, float(np.prod(patch)) / float(np.prod(trainer.patch_size))


def _first_plan(trainer: "BaseTrainer", clock: BudgetClock, train_times: List[float], val_time: float) -> BudgetPlan:
    """Plan from the probe: iteration time (first one dropped: start-up), one validation batch's time, and the
    estimated final validation (sliding windows x mirrors x forward time per patch) plus one epoch end."""
    c = trainer.config
    sec_iter = float(np.median(train_times[1:] or train_times)) if train_times else 0.0
    inference_patch, cost_ratio = _inference_patch(trainer)
    sec_patch = val_time / max(1, trainer.global_batch_size) * cost_ratio
    mirrors = 2 ** len(c.mirror_axes or [])
    reserve, forwards, shapes = 0.0, 0, []
    if clock.iterations is None:
        shapes = _val_case_shapes(trainer)
        forwards = final_validation_forwards(shapes, inference_patch, mirrors)
        reserve = estimate_final_validation_s(forwards, len(shapes), sec_patch)
    schedule = c.lr_schedule if c.lr_schedule in ("poly", "warmup_cosine") else "warmup_cosine"
    return clock.make_plan(c.lr, schedule, c.poly_exponent, c.warmup_fraction, c.val_iters_per_epoch, sec_iter,
                           val_time, reserve, len(train_times), forwards, len(shapes))


def sync_plan(trainer: "BaseTrainer") -> None:
    """Distributed runs: every rank takes rank 0's planned iterations (clocks differ slightly between ranks)."""
    if not trainer.dist.enabled:
        return
    import torch

    from suprem_auto.training import ddp

    plan = trainer.budget.plan
    value = torch.tensor([float(plan.planned_iterations) if trainer.dist.is_main else 0.0], dtype=torch.float64)
    plan.planned_iterations = int(ddp.all_reduce_sum(value.to(trainer.device), trainer.dist).cpu()[0])


def write_plan(trainer: "BaseTrainer") -> None:
    """budget_plan.json in the fold folder (rank 0)."""
    if trainer.dist.is_main and trainer.budget.plan is not None:
        atomic_write_json(trainer.fold_dir / "budget_plan.json", trainer.budget.plan.to_json())


def run_budgeted(trainer: "BaseTrainer") -> None:
    """Train until the plan is done or the budget (less the final validation's reserve) is spent."""
    clock = trainer.budget
    check_time = not trainer.dist.enabled
    train_stream, val_stream = trainer.build_streams()
    bar = None
    try:
        iteration = clock.plan.iteration if clock.plan is not None else 0
        epoch = trainer.current_epoch
        pending: List[float] = []  # losses of the probe iterations (they belong to epoch 0)
        if clock.plan is None:
            times: List[float] = []
            if clock.iterations is None:
                trainer.on_epoch_start(epoch)
                for i in range(PROBE_ITERATIONS):
                    apply_learning_rate(trainer.optimizer, _probe_lr(trainer.config.lr, i), trainer.frozen_groups(0))
                    start = time.monotonic()
                    pending.append(trainer.train_step(next(train_stream)))
                    times.append(time.monotonic() - start)
                trainer.network.eval()
                start = time.monotonic()
                trainer.validation_step(next(val_stream))
                val_time = time.monotonic() - start
            else:
                val_time = 0.0
            iteration = len(pending)
            _first_plan(trainer, clock, times, val_time)
            sync_plan(trainer)
            trainer.apply_plan_to_config()
            write_plan(trainer)
        trainer.log.message(clock.plan.describe())
        bar = tqdm(total=clock.plan.planned_iterations, initial=iteration, desc="training",
                   disable=not trainer.dist.is_main, dynamic_ncols=True)
        while not clock.must_stop(iteration, check_time) or pending:
            plan = clock.plan
            epoch_start = time.monotonic()
            trainer.on_epoch_start(epoch)
            losses, pending = pending, []
            while len(losses) < plan.iters_per_epoch and not clock.must_stop(iteration, check_time):
                apply_learning_rate(trainer.optimizer, lr_at(plan, iteration), trainer.frozen_groups(epoch))
                losses.append(trainer.train_step(next(train_stream)))
                iteration += 1
                bar.update(1)
                left = clock.time_left_s()
                bar.set_postfix_str(f"loss {losses[-1]:.4f}" + (f", {left:.0f}s of {plan.budget_s:.0f}s left"
                                                                  if left is not None else ""))
            trainer.network.eval()
            val_start = time.monotonic()
            val_results = [trainer.validation_step(next(val_stream)) for _ in range(plan.val_iters_per_epoch)]
            sec_patch = (time.monotonic() - val_start) / (plan.val_iters_per_epoch * trainer.global_batch_size) \
                * _inference_patch(trainer)[1]
            plan.iteration = iteration
            trainer.on_epoch_end(epoch, losses, val_results, time.monotonic() - epoch_start)
            clock.replan(iteration, (time.monotonic() - epoch_start) / max(1, len(losses)), sec_patch)
            sync_plan(trainer)
            write_plan(trainer)
            bar.total = clock.plan.planned_iterations
            bar.refresh()
            epoch += 1
        trainer.log.message(f"budget: {iteration} iterations in {epoch} epochs, {clock.elapsed_s:.0f}s elapsed"
                            + (f" of {clock.plan.budget_s:.0f}s" if clock.plan.budget_s is not None else ""))
    finally:
        if bar is not None:
            bar.close()
        trainer.close_streams()

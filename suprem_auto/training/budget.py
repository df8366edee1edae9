"""Training on a budget: a wall-time (``--budget 40m``) or iteration (``--iterations N``) plan over which the
learning-rate schedule, epoch length and validation share are laid, re-estimated from measured step times.

The plan is plain JSON (``BudgetPlan.to_json``), stored in every checkpoint and in ``budget_plan.json`` so that a
resumed run keeps it. The clock starts when the trainer is built and covers set-up, training, checkpoints and the
final validation (whose cost is estimated and reserved); interpreter start-up is outside it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from suprem_auto.training.schedule import poly_lr

#: epochs are the unit of logging and checkpointing: a planned run is cut into about this many of them
TARGET_EPOCHS = 20
MAX_ITERS_PER_EPOCH = 250
#: ...but an epoch lasts at least this long, so that its validation, checkpoint and plot stay a small share
MIN_EPOCH_S = 20.0
#: validation iterations per training iteration (nnU-Net: 50 / 250)
VAL_ITER_RATIO = 0.2
#: a re-plan does not add iterations once the learning rate is below this share of its peak (they would learn nothing)
EXTEND_MIN_LR_FRACTION = 0.01
#: iterations timed before the first plan of a wall-time budget
PROBE_ITERATIONS = 3

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of ``90s``, ``40m``, ``6h``, ``1h30m`` or a plain number of seconds; bad text raises ValueError."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise ValueError(f"--budget: '{text}' is not a duration (examples: 90s, 40m, 6h, 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"--budget: '{text}' must be longer than 0 seconds")
    return seconds


RECIPE_FILE = Path(__file__).with_name("recipes") / "short_budget.json"


def short_budget_recipe(budget_s: Optional[float] = None, device_type: str = "cpu",
                        width_adjustable: bool = False) -> Dict[str, Any]:
    """TrainingConfig changes used with --budget / --iterations (``recipes/short_budget.json``, chosen by the
    experiments in benchmarks/RESULTS.md, section "Training on a budget").

    With a wall-time budget and a network whose width may change (no pre-trained checkpoint, plain U-Net or
    SegResNet), the recipe also picks ``network_width`` for the device and budget from the file's table.
    """
    recipe = json.loads(RECIPE_FILE.read_text())
    changes = dict(recipe["changes"])
    if budget_s is not None and width_adjustable:
        table = recipe["network_width"].get(device_type, recipe["network_width"]["cuda"])
        for entry in table:
            if entry["max_budget_s"] is None or budget_s <= entry["max_budget_s"]:
                if entry["factor"] != 1.0:
                    changes["network_width"] = entry["factor"]
                break
    return changes


@dataclass
class BudgetPlan:
    """What a budgeted run does; every field is JSON (stored in checkpoints)."""

    budget_s: Optional[float]          # wall-time budget; None for a fixed iteration count
    planned_iterations: int
    iters_per_epoch: int
    val_iters_per_epoch: int
    warmup_iterations: int
    schedule: str                      # "warmup_cosine" or "poly"
    lr: float
    poly_exponent: float = 0.9
    sec_per_iteration: float = 0.0     # measured cost of one iteration incl. its share of validation/checkpoints
    final_validation_s: float = 0.0    # reserved for the final checkpoint and validation
    elapsed_s: float = 0.0             # wall time used so far (carried over a resume)
    iteration: int = 0                 # iterations done
    fixed: bool = False                # --iterations: never re-planned
    final_validation_forwards: int = 0  # patch forwards of the final validation (windows x mirrors)
    final_validation_cases: int = 0

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "BudgetPlan":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        """One log line stating the plan."""
        budget = f"budget {self.budget_s:.0f}s" if self.budget_s is not None else "fixed iteration count"
        return (f"plan: {budget}, {self.planned_iterations} iterations ({self.iters_per_epoch} per epoch, "
                f"{self.num_epochs} epochs, {self.val_iters_per_epoch} validation iterations per epoch), "
                f"schedule {self.schedule} lr {self.lr:g} warm-up {self.warmup_iterations} iterations, "
                f"{self.sec_per_iteration:.2f} s per iteration, {self.final_validation_s:.0f}s reserved for the "
                f"final validation")

    @property
    def num_epochs(self) -> int:
        return max(1, math.ceil(self.planned_iterations / self.iters_per_epoch))


def lr_at(plan: BudgetPlan, iteration: int) -> float:
    """Learning rate of one iteration: linear warm-up, then cosine to 0 (or poly) over the planned iterations."""
    total = max(1, plan.planned_iterations)
    if plan.schedule == "poly":
        return poly_lr(plan.lr, min(iteration, total), total, plan.poly_exponent)
    if plan.schedule != "warmup_cosine":
        raise ValueError(f"unknown lr schedule '{plan.schedule}' (known: poly, warmup_cosine)")
    if iteration < plan.warmup_iterations:
        return plan.lr * (iteration + 1) / (plan.warmup_iterations + 1)
    span = max(1, total - plan.warmup_iterations)
    progress = min(1.0, (iteration - plan.warmup_iterations) / span)
    return plan.lr * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_shape(planned_iterations: int, max_val_iters: int, sec_per_iteration: float = 0.0) -> "tuple[int, int]":
    """(iterations, validation iterations) per epoch: about TARGET_EPOCHS epochs, each at least MIN_EPOCH_S long
    (at the measured iteration time) and at most MAX_ITERS_PER_EPOCH iterations."""
    per_epoch = round(planned_iterations / TARGET_EPOCHS)
    if sec_per_iteration > 0:
        per_epoch = max(per_epoch, math.ceil(MIN_EPOCH_S / sec_per_iteration))
    per_epoch = max(1, min(MAX_ITERS_PER_EPOCH, planned_iterations, per_epoch))
    val = max(1, min(max_val_iters, round(per_epoch * VAL_ITER_RATIO)))
    return per_epoch, val


def sliding_windows(shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> int:
    """Number of sliding-window patches over an image (tile step ``step`` of the patch)."""
    n = 1
    for s, p in zip(shape, patch):
        n *= 1 if s <= p else math.ceil((s - p) / (p * step)) + 1
    return n


def final_validation_forwards(case_shapes: Sequence[Sequence[int]], patch: Sequence[int], num_mirrors: int) -> int:
    """Patch forwards of a sliding-window validation with test-time mirroring."""
    return sum(sliding_windows(s, patch) for s in case_shapes) * num_mirrors


def estimate_final_validation_s(forwards: int, num_cases: int, sec_per_patch_forward: float,
                                per_case_overhead_s: float = 2.0, fixed_overhead_s: float = 3.0) -> float:
    """Seconds the final validation (plus the final checkpoint) will take: forwards x forward time per patch, plus
    reading, preprocessing, export and metrics per case (about 2 s per small case besides the forwards: the demo's
    4-case validations took 38-48 s for 32 forwards of about 1.1 s each) and a fixed start-up."""
    return fixed_overhead_s + forwards * sec_per_patch_forward + per_case_overhead_s * num_cases


class BudgetClock:
    """Tracks the plan against the wall clock (monotonic); ``elapsed_s`` continues a resumed plan's time."""

    def __init__(self, plan: Optional[BudgetPlan], budget_s: Optional[float], iterations: Optional[int]) -> None:
        self.plan = plan
        self.budget_s = budget_s
        self.iterations = iterations
        self._start = time.monotonic() - (plan.elapsed_s if plan is not None else 0.0)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def time_left_s(self) -> Optional[float]:
        """Seconds left of the budget (None without a wall-time budget)."""
        budget = self.plan.budget_s if self.plan is not None else self.budget_s
        return None if budget is None else budget - self.elapsed_s

    def make_plan(self, lr: float, schedule: str, poly_exponent: float, warmup_fraction: float, max_val_iters: int,
                  sec_per_iteration: float, val_sec_per_iteration: float, final_validation_s: float,
                  iterations_done: int, forwards: int = 0, num_cases: int = 0) -> BudgetPlan:
        """The first plan: from the iteration count, or from the measured iteration time over the time left."""
        if self.iterations is not None:
            planned = int(self.iterations)
        else:
            per_iter = sec_per_iteration + VAL_ITER_RATIO * val_sec_per_iteration
            left = self.budget_s - self.elapsed_s - final_validation_s
            planned = iterations_done + max(0, int(left / max(per_iter, 1e-6)))
        planned = max(planned, iterations_done, 1)
        per_epoch, val = epoch_shape(planned, max_val_iters, sec_per_iteration)
        self.plan = BudgetPlan(budget_s=self.budget_s if self.iterations is None else None,
                               planned_iterations=planned, iters_per_epoch=per_epoch, val_iters_per_epoch=val,
                               warmup_iterations=int(round(warmup_fraction * planned)) if schedule != "poly" else 0,
                               schedule=schedule, lr=lr, poly_exponent=poly_exponent,
                               sec_per_iteration=sec_per_iteration, final_validation_s=final_validation_s,
                               elapsed_s=self.elapsed_s, iteration=iterations_done,
                               fixed=self.iterations is not None, final_validation_forwards=forwards,
                               final_validation_cases=num_cases)
        return self.plan

    def replan(self, iteration: int, measured_sec_per_iteration: float,
               sec_per_patch_forward: Optional[float] = None) -> BudgetPlan:
        """After an epoch: re-estimate the final validation from the measured forward time per patch, and fit the
        remaining iterations into the time left (a fixed count stays)."""
        plan = self.plan
        plan.iteration = iteration
        plan.elapsed_s = self.elapsed_s
        if plan.fixed or plan.budget_s is None:
            return plan
        if sec_per_patch_forward is not None and plan.final_validation_cases:
            plan.final_validation_s = estimate_final_validation_s(plan.final_validation_forwards,
                                                                  plan.final_validation_cases, sec_per_patch_forward)
        old = plan.sec_per_iteration or measured_sec_per_iteration
        plan.sec_per_iteration = 0.5 * old + 0.5 * measured_sec_per_iteration
        left = plan.budget_s - plan.elapsed_s - plan.final_validation_s
        refit = max(iteration, iteration + int(left / max(plan.sec_per_iteration, 1e-6)))
        if refit > plan.planned_iterations and lr_at(plan, iteration) < EXTEND_MIN_LR_FRACTION * plan.lr:
            return plan  # the schedule has decayed: more iterations would train at lr ~0; end early instead
        plan.planned_iterations = refit
        return plan

    def must_stop(self, iteration: int, check_time: bool = True) -> bool:
        """True when the plan is done, or (``check_time``) the budget less the reserve is spent. Distributed runs
        pass ``check_time=False``: every rank must stop at the same, synchronised planned iteration."""
        plan = self.plan
        if iteration >= plan.planned_iterations:
            return True
        if plan.budget_s is None or plan.fixed or not check_time:
            return False
        return self.elapsed_s + plan.final_validation_s >= plan.budget_s

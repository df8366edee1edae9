"""How long a run trains and at what learning rate: one schedule object that the trainer's single loop asks.

Three kinds, chosen by :func:`schedule_for`:

* :class:`EpochSchedule` (nnU-Net style): ``num_epochs`` x ``iters_per_epoch``, lr per epoch.
* :class:`IterationSchedule` (``--iterations N``): exactly N iterations, lr per iteration (warm-up + cosine / poly).
* :class:`ClockSchedule` (``--budget 40m``): the lr is a function of the elapsed share of the training time, so a
  slow minute costs iterations but never the schedule's shape; the run ends (checked before every iteration) when the
  time left no longer holds one more step plus the reserve for the end of the run (last epoch's validation and
  checkpoint, final validation, re-estimated after every epoch from measurements on this machine).

The loop asks ``learning_rate``, ``epoch_done``, ``run_done`` and ``val_iterations`` and reports ``record_step`` /
``record_epoch_end``. Every schedule is plain JSON (``to_json`` / :func:`schedule_from_json`): stored in every
checkpoint as ``budget_plan`` and, for budgeted runs, in ``budget_plan.json``, so that ``--c`` continues it. The clock
(:class:`RunClock`) starts when the trainer is built; interpreter start-up is outside it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence

from suprem_auto.training.budget_patch import budget_patch_2d, total_strides
from suprem_auto.training.reserve import RecentTimes
from suprem_auto.training.schedule import SCHEDULES, lr_at_progress, lr_for_epoch

#: epochs are the unit of logging and checkpointing: a budgeted run is cut into about this many of them
TARGET_EPOCHS = 20
MAX_ITERS_PER_EPOCH = 250
#: ...but an epoch of a wall-time budget lasts at least this long, so its validation and checkpoint stay a small share
MIN_EPOCH_S = 20.0
#: validation iterations per training iteration (nnU-Net: 50 / 250)
VAL_ITER_RATIO = 0.2
#: a clock schedule's warm-up starts at this share of its peak lr
WARMUP_START = 1 / 11
#: end-of-epoch cost (validation iterations, checkpoint, plot) assumed until one has been measured
DEFAULT_EPOCH_END_S = 2.0

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
                        width_adjustable: bool = False, planned_patch: Optional[Sequence[int]] = None,
                        architecture: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """TrainingConfig changes used with --budget / --iterations (``recipes/short_budget.json``, chosen by the
    experiments in benchmarks/RESULTS.md, section "Training on a budget").

    With a wall-time budget and a network whose width may change (no pre-trained checkpoint, plain U-Net or
    SegResNet), the recipe also gives ``network_width`` from the file's fallback table for the device and budget and,
    on the devices where widths are timed (``measure_on``), the ``width_candidates`` the trainer times and chooses
    from (``trainers/width_hooks.py``). With a wall-time budget, a 2D ``planned_patch`` and a device in the
    file's ``patch_2d.apply_on``, it also gives a smaller ``patch_size`` (``training/budget_patch.py``).
    """
    recipe = json.loads(RECIPE_FILE.read_text())
    changes = dict(recipe["changes"])
    if budget_s is not None and width_adjustable:
        widths = recipe["network_width"]
        table = widths["fallback"].get(device_type, widths["fallback"]["cuda"])
        for entry in table:
            if entry["max_budget_s"] is None or budget_s <= entry["max_budget_s"]:
                if entry["factor"] != 1.0:
                    changes["network_width"] = entry["factor"]
                break
        if device_type in widths.get("measure_on", []) and widths.get("candidates"):
            changes["width_candidates"] = [float(w) for w in widths["candidates"]]
    patch_rule = recipe.get("patch_2d")
    if (budget_s is not None and patch_rule and planned_patch is not None and len(planned_patch) == 2
            and device_type in patch_rule.get("apply_on", [])):
        strides = total_strides(architecture, 2)
        patch = budget_patch_2d(planned_patch, strides, float(patch_rule["area_factor"]),
                                int(patch_rule["min_edge"])) if strides else None
        if patch is not None:
            changes["patch_size"] = patch
    return changes


class RunClock:
    """Monotonic seconds since the trainer was built; a resumed run continues from its stored elapsed time."""

    def __init__(self, elapsed_s: float = 0.0) -> None:
        self._start = time.monotonic() - elapsed_s

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def continue_from(self, elapsed_s: float) -> None:
        self._start = time.monotonic() - float(elapsed_s)


def epoch_shape(planned_iterations: int, max_val_iters: int) -> "tuple[int, int]":
    """(iterations, validation iterations) per epoch of a fixed iteration count: about TARGET_EPOCHS epochs of at
    most MAX_ITERS_PER_EPOCH iterations, VAL_ITER_RATIO validation iterations per training iteration."""
    per_epoch = max(1, min(MAX_ITERS_PER_EPOCH, planned_iterations, round(planned_iterations / TARGET_EPOCHS)))
    return per_epoch, val_iterations_for(per_epoch, max_val_iters)


def val_iterations_for(train_iterations: int, max_val_iters: int) -> int:
    """Pseudo-Dice validation iterations after an epoch of ``train_iterations`` (at least 1)."""
    return max(1, min(max_val_iters, round(train_iterations * VAL_ITER_RATIO)))


@dataclass
class RunSchedule:
    """What the loop asks; subclasses decide. ``iteration`` counts optimiser steps; ``step_times`` are the latest
    step durations (their median estimates the next step)."""

    kind: ClassVar[str] = "abstract"
    #: decisions depend on the clock (distributed runs then take rank 0's answers)
    time_based: ClassVar[bool] = False

    lr: float
    schedule: str = "poly"
    poly_exponent: float = 0.9
    iteration: int = 0
    elapsed_s: float = 0.0
    step_times: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule '{self.schedule}' (known: {', '.join(SCHEDULES)})")

    # -- answers
    def learning_rate(self, epoch: int, elapsed_s: float) -> float:
        raise NotImplementedError

    def run_done(self, epoch: int, elapsed_s: float) -> bool:
        raise NotImplementedError

    def epoch_done(self, epoch_iterations: int, epoch_elapsed_s: float, elapsed_s: float) -> bool:
        raise NotImplementedError

    def val_iterations(self, epoch_iterations: int) -> int:
        raise NotImplementedError

    def time_left_s(self, epoch: int, elapsed_s: float) -> Optional[float]:
        """Seconds of training left (None when unknown)."""
        return None

    def run_progress(self, epoch: int, elapsed_s: float) -> float:
        """Share of the run done, in [0, 1] (epochs, iterations or training time): what a policy that acts on a
        share of the run (e.g. an encoder frozen for the first 20 %) reads."""
        raise NotImplementedError

    def begin(self, elapsed_s: float) -> None:
        """The loop starts (or restarts after a resume)."""

    @property
    def budgeted(self) -> bool:
        return self.kind != EpochSchedule.kind

    # -- reports
    def record_step(self, seconds: float) -> None:
        self.iteration += 1
        times = RecentTimes(self.step_times)
        times.add(seconds)
        self.step_times = times.values

    def record_epoch_end(self, seconds: float) -> None:
        """Seconds the end of an epoch took (validation iterations, checkpoints, plot)."""

    @property
    def sec_per_iteration(self) -> float:
        return RecentTimes(list(self.step_times)).estimate()

    # -- JSON
    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind
        data["sec_per_iteration"] = self.sec_per_iteration
        return data

    @classmethod
    def from_fields(cls, data: Dict[str, Any]) -> "RunSchedule":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class EpochSchedule(RunSchedule):
    """nnU-Net style: a fixed number of epochs of a fixed length, one lr per epoch."""

    kind: ClassVar[str] = "epochs"
    num_epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters_per_epoch: int = 50
    warmup_epochs: int = 0

    def learning_rate(self, epoch: int, elapsed_s: float) -> float:
        return lr_for_epoch(self.schedule, self.lr, epoch, self.num_epochs, self.poly_exponent, self.warmup_epochs)

    def run_done(self, epoch: int, elapsed_s: float) -> bool:
        return epoch >= self.num_epochs

    def run_progress(self, epoch: int, elapsed_s: float) -> float:
        return min(1.0, epoch / max(1, self.num_epochs))

    def epoch_done(self, epoch_iterations: int, epoch_elapsed_s: float, elapsed_s: float) -> bool:
        return epoch_iterations >= self.iters_per_epoch

    def val_iterations(self, epoch_iterations: int) -> int:
        return self.val_iters_per_epoch

    def describe(self) -> str:
        return (f"plan: {self.num_epochs} epochs of {self.iters_per_epoch} iterations ({self.val_iters_per_epoch} "
                f"validation iterations each), schedule {self.schedule} lr {self.lr:g}")


@dataclass
class IterationSchedule(RunSchedule):
    """``--iterations N``: exactly N iterations, the lr laid over them (warm-up + cosine, or poly)."""

    kind: ClassVar[str] = "iterations"
    planned_iterations: int = 1
    iters_per_epoch: int = 1
    val_iters_per_epoch: int = 1
    warmup_iterations: int = 0

    def learning_rate(self, epoch: int, elapsed_s: float) -> float:
        n = max(1, self.planned_iterations)
        return lr_at_progress(self.schedule, self.lr, self.iteration / n, self.warmup_iterations / n,
                              self.poly_exponent, first_step=1 / n)

    def run_done(self, epoch: int, elapsed_s: float) -> bool:
        return self.iteration >= self.planned_iterations

    def run_progress(self, epoch: int, elapsed_s: float) -> float:
        return min(1.0, self.iteration / max(1, self.planned_iterations))

    def epoch_done(self, epoch_iterations: int, epoch_elapsed_s: float, elapsed_s: float) -> bool:
        return epoch_iterations >= self.iters_per_epoch or self.run_done(0, elapsed_s)

    def val_iterations(self, epoch_iterations: int) -> int:
        return self.val_iters_per_epoch

    def time_left_s(self, epoch: int, elapsed_s: float) -> Optional[float]:
        if not self.step_times:
            return None
        return self.sec_per_iteration * max(0, self.planned_iterations - self.iteration)

    @property
    def num_epochs(self) -> int:
        return max(1, math.ceil(self.planned_iterations / self.iters_per_epoch))

    def describe(self) -> str:
        return (f"plan: fixed iteration count, {self.planned_iterations} iterations ({self.iters_per_epoch} per "
                f"epoch, {self.num_epochs} epochs, {self.val_iters_per_epoch} validation iterations per epoch), "
                f"schedule {self.schedule} lr {self.lr:g} warm-up {self.warmup_iterations} iterations")


@dataclass
class ClockSchedule(RunSchedule):
    """``--budget``: the lr follows the elapsed share of the training time; epochs last a share of it; the run ends
    when one more step would not leave the reserve (end of the last epoch + final validation) inside the budget."""

    kind: ClassVar[str] = "clock"
    time_based: ClassVar[bool] = True
    budget_s: float = 0.0
    warmup_fraction: float = 0.05
    max_val_iters: int = 50
    train_start_s: Optional[float] = None   # elapsed time when training began (set-up before it is not training)
    progress: float = 0.0                   # share of the training time used (never decreases)
    final_validation_s: float = 0.0         # estimated cost of the final validation (0 when there is none)
    final_validation: Optional[Dict[str, Any]] = None  # its workload (cases, network calls, ...) and call time
    call_times: List[float] = field(default_factory=list)      # measured network calls at the validation patch
    epoch_end_times: List[float] = field(default_factory=list)  # measured ends of epochs
    final_validation_measured_s: Optional[float] = None  # what the final validation really took

    @property
    def epoch_end_s(self) -> float:
        return RecentTimes(list(self.epoch_end_times)).estimate(DEFAULT_EPOCH_END_S)

    @property
    def reserve_s(self) -> float:
        """Seconds kept for the end of the run: the last epoch's end (validation, checkpoint) and the final
        validation with the final checkpoint."""
        return self.final_validation_s + self.epoch_end_s

    @property
    def training_s(self) -> float:
        """Seconds of training the budget holds (set-up and reserve excluded)."""
        return max(1e-6, self.budget_s - self.reserve_s - (self.train_start_s or 0.0))

    @property
    def epoch_s(self) -> float:
        """Target length of an epoch's training part."""
        return max(MIN_EPOCH_S, self.training_s / TARGET_EPOCHS)

    def begin(self, elapsed_s: float) -> None:
        if self.train_start_s is None:
            self.train_start_s = float(elapsed_s)

    def progress_at(self, elapsed_s: float) -> float:
        share = (elapsed_s - (self.train_start_s or 0.0)) / self.training_s
        return min(1.0, max(self.progress, share))

    def run_progress(self, epoch: int, elapsed_s: float) -> float:
        return self.progress_at(elapsed_s)

    def learning_rate(self, epoch: int, elapsed_s: float) -> float:
        self.progress = self.progress_at(elapsed_s)
        return lr_at_progress(self.schedule, self.lr, self.progress, self.warmup_fraction, self.poly_exponent,
                              first_step=self.warmup_fraction * WARMUP_START / (1 - WARMUP_START))

    def run_done(self, epoch: int, elapsed_s: float) -> bool:
        return elapsed_s + self.sec_per_iteration + self.reserve_s >= self.budget_s

    def epoch_done(self, epoch_iterations: int, epoch_elapsed_s: float, elapsed_s: float) -> bool:
        return (epoch_iterations >= MAX_ITERS_PER_EPOCH or epoch_elapsed_s >= self.epoch_s
                or self.run_done(0, elapsed_s))

    def val_iterations(self, epoch_iterations: int) -> int:
        return val_iterations_for(epoch_iterations, self.max_val_iters)

    def time_left_s(self, epoch: int, elapsed_s: float) -> Optional[float]:
        return max(0.0, self.budget_s - elapsed_s)

    def record_epoch_end(self, seconds: float) -> None:
        times = RecentTimes(self.epoch_end_times, window=5)
        times.add(seconds)
        self.epoch_end_times = times.values

    def record_call(self, seconds: float) -> None:
        """One timed network call at the final validation's patch, tile batch and precision."""
        times = RecentTimes(self.call_times, window=5)
        times.add(seconds)
        self.call_times = times.values

    def set_final_validation(self, workload: Optional[Dict[str, Any]], estimate_s: float) -> None:
        """Record a (re-)estimate of the final validation: its workload and seconds (0: there is none)."""
        self.final_validation = workload
        self.final_validation_s = float(estimate_s)

    @property
    def call_s(self) -> float:
        return RecentTimes(list(self.call_times)).estimate()

    def describe(self) -> str:
        fv = self.final_validation or {}
        validation = (f"{self.final_validation_s:.0f}s reserved for the final validation ({fv.get('num_cases', 0)} "
                      f"cases, {fv.get('network_calls', 0)} network calls of {self.call_s:.3f}s)"
                      if self.final_validation_s else "no final validation")
        return (f"plan: budget {self.budget_s:.0f}s, lr schedule {self.schedule} lr {self.lr:g} over the training "
                f"time (warm-up {self.warmup_fraction:.0%}), epochs of {self.epoch_s:.0f}s, {validation}, "
                f"{self.epoch_end_s:.1f}s for the last epoch's end")


_KINDS = {cls.kind: cls for cls in (EpochSchedule, IterationSchedule, ClockSchedule)}


def schedule_from_json(data: Dict[str, Any]) -> RunSchedule:
    """The schedule stored by ``to_json`` (also the plans of earlier versions, which had no ``kind``)."""
    if "kind" in data:
        if data["kind"] not in _KINDS:
            raise ValueError(f"budget_plan: unknown schedule kind '{data['kind']}' (known: {', '.join(_KINDS)})")
        return _KINDS[data["kind"]].from_fields(data)
    planned = max(1, int(data.get("planned_iterations", 1)))
    if data.get("fixed") or data.get("budget_s") is None:
        return IterationSchedule.from_fields(data)
    legacy = dict(data, warmup_fraction=data.get("warmup_iterations", 0) / planned,
                  max_val_iters=data.get("val_iters_per_epoch", 50), train_start_s=0.0)
    return ClockSchedule.from_fields(legacy)


def schedule_for(config: Any) -> RunSchedule:
    """The schedule a TrainingConfig asks for: ``iterations`` > ``budget_s`` > epochs."""
    schedule = config.lr_schedule
    if config.iterations is not None or config.budget_s is not None:
        schedule = schedule if schedule in SCHEDULES else "warmup_cosine"
    if config.iterations is not None:
        n = max(1, int(config.iterations))
        per_epoch, val = epoch_shape(n, config.val_iters_per_epoch)
        warmup = int(round(config.warmup_fraction * n)) if schedule != "poly" else 0
        return IterationSchedule(lr=config.lr, schedule=schedule, poly_exponent=config.poly_exponent,
                                 planned_iterations=n, iters_per_epoch=per_epoch, val_iters_per_epoch=val,
                                 warmup_iterations=warmup)
    if config.budget_s is not None:
        return ClockSchedule(lr=config.lr, schedule=schedule, poly_exponent=config.poly_exponent,
                             budget_s=float(config.budget_s),
                             warmup_fraction=config.warmup_fraction if schedule != "poly" else 0.0,
                             max_val_iters=config.val_iters_per_epoch)
    warmup_epochs = config.warmup_epochs
    if schedule != "poly" and not warmup_epochs:  # the warm-up as a share of the run, as budgets give it
        warmup_epochs = int(round(config.warmup_fraction * config.num_epochs))
    return EpochSchedule(lr=config.lr, schedule=schedule, poly_exponent=config.poly_exponent,
                         num_epochs=config.num_epochs, iters_per_epoch=config.iters_per_epoch,
                         val_iters_per_epoch=config.val_iters_per_epoch, warmup_epochs=warmup_epochs)


__all__ = ["ClockSchedule", "EpochSchedule", "IterationSchedule", "RunClock", "RunSchedule",
           "epoch_shape", "parse_duration", "schedule_for", "schedule_from_json", "short_budget_recipe"]

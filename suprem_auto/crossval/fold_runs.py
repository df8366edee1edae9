"""What each fold of a trained model really did: network, precision, iterations, wall time and speed.

Everything is read from the fold folder: ``hyperparameters.json``, ``budget_plan.json``, ``metrics.jsonl`` (complete
lines that parse; others are skipped) and, for what those lack, a checkpoint's ``config``, ``architecture`` and
weights (the parameter count). Per-epoch records may carry ``iteration`` (iterations done at the epoch's end),
``elapsed_s`` (training time at the epoch's end), ``sec_per_iteration`` and ``precision``; where they do not, the
iterations are estimated from ``iters_per_epoch`` (and the budget plan's final count) and the time from the summed
``epoch_time_s``. What cannot be found stays ``None`` (the report says "not recorded").
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from suprem_auto.utils.atomic import read_complete_lines

SPEED_VARIATION_LIMIT = 2.0   # slowest / fastest epoch seconds per iteration above this: the machine was busy
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


@dataclass
class EpochPoint:
    """One epoch on the iteration and time axes."""

    epoch: int
    iteration: Optional[int]            # iterations done at the end of the epoch
    elapsed_s: Optional[float]          # training time at the end of the epoch
    iterations: Optional[int]           # iterations of this epoch
    sec_per_iteration: Optional[float]
    record: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FoldRun:
    """The facts of one fold's training run; None where the fold folder does not record them."""

    fold: int
    architecture: Optional[str] = None
    features: Optional[List[int]] = None
    width_factor: Optional[float] = None
    parameters: Optional[int] = None
    precision: Optional[str] = None
    iterations: Optional[int] = None
    iterations_estimated: bool = False
    wall_time_s: Optional[float] = None
    wall_time_source: str = "not recorded"
    speed_ratio: Optional[float] = None  # slowest / fastest epoch seconds per iteration
    epochs: List[EpochPoint] = field(default_factory=list)

    @property
    def sec_per_iteration(self) -> Optional[float]:
        """Mean seconds per iteration over the whole run."""
        if self.wall_time_s is None or not self.iterations:
            return None
        return self.wall_time_s / self.iterations

    @property
    def speed_varied(self) -> bool:
        """True when the epochs' speed varied more than ``SPEED_VARIATION_LIMIT`` (a busy machine)."""
        return self.speed_ratio is not None and self.speed_ratio > SPEED_VARIATION_LIMIT


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl``: complete lines that parse as JSON objects (others skipped)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in read_complete_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_json(path: Path) -> Dict[str, Any]:
    """A JSON object file, or {} when it is missing or does not parse."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_checkpoint(fold_dir: Path) -> Dict[str, Any]:
    """The first checkpoint that loads (``weights_only=True``, memory-mapped), or {}."""
    from suprem_auto.utils.checkpoint_format import safe_torch_load

    for name in CHECKPOINTS:
        path = fold_dir / name
        if not path.is_file():
            continue
        try:
            checkpoint = safe_torch_load(path, mmap=True)
        except Exception:  # noqa: BLE001 - a damaged checkpoint only means "not recorded" here
            continue
        if isinstance(checkpoint, dict):
            return checkpoint
    return {}


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def epoch_points(records: List[Dict[str, Any]], iters_per_epoch: Optional[int],
                 final_iteration: Optional[int]) -> tuple[List[EpochPoint], bool]:
    """The epochs on iteration and time axes; the flag says whether iterations were estimated."""
    points: List[EpochPoint] = []
    recorded = bool(records) and all(_number(r.get("iteration")) is not None for r in records)
    estimated = not recorded and bool(records) and iters_per_epoch is not None
    previous_iteration, previous_elapsed = 0, 0.0
    for i, record in enumerate(records):
        if recorded:
            iteration: Optional[int] = int(record["iteration"])
        elif iters_per_epoch is not None:
            iteration = (i + 1) * iters_per_epoch
            if i == len(records) - 1 and final_iteration is not None and previous_iteration < final_iteration:
                iteration = final_iteration  # a budget may cut the last epoch short
        else:
            iteration = None
        elapsed = _number(record.get("elapsed_s"))
        epoch_time = _number(record.get("epoch_time_s"))
        if elapsed is None and epoch_time is not None and previous_elapsed is not None:
            elapsed = previous_elapsed + epoch_time
        n = iteration - previous_iteration if iteration is not None else None
        spi = _number(record.get("sec_per_iteration"))
        if spi is None and epoch_time is not None and n:
            spi = epoch_time / n
        points.append(EpochPoint(int(record.get("epoch", i)), iteration, elapsed, n, spi, record))
        previous_iteration = iteration if iteration is not None else previous_iteration
        previous_elapsed = elapsed
    return points, estimated


def speed_ratio(points: List[EpochPoint]) -> Optional[float]:
    """Slowest / fastest epoch seconds per iteration over full-length epochs (at least half the median length:
    a short last epoch is mostly validation). Computed from ``epoch_time_s``, the first epoch (warm-up) is left
    out when three or more remain."""
    usable = [p for p in points if p.sec_per_iteration and p.sec_per_iteration > 0]
    lengths = [p.iterations for p in usable if p.iterations]
    if lengths:
        half = statistics.median(lengths) / 2
        usable = [p for p in usable if p.iterations is None or p.iterations >= half]
    if len(usable) >= 4 and "sec_per_iteration" not in usable[0].record:
        usable = usable[1:]
    if len(usable) < 2:
        return None
    values = [p.sec_per_iteration for p in usable]
    return max(values) / min(values)


def read_fold_run(fold_dir: Path, fold: int) -> FoldRun:
    """Everything the fold folder records about the run (see the module docstring)."""
    fold_dir = Path(fold_dir)
    hyper = _read_json(fold_dir / "hyperparameters.json")
    plan = _read_json(fold_dir / "budget_plan.json") or (hyper.get("budget_plan") or {})
    records = read_metrics(fold_dir / "metrics.jsonl")
    checkpoint = _read_checkpoint(fold_dir)
    config = hyper.get("config") or checkpoint.get("config") or {}
    architecture = hyper.get("architecture") or checkpoint.get("architecture") or {}
    run = FoldRun(fold)
    run.architecture = architecture.get("name")
    features = (architecture.get("kwargs") or {}).get("features_per_stage")
    run.features = [int(f) for f in features] if isinstance(features, list) else None
    run.width_factor = _number(config.get("network_width"))
    weights = checkpoint.get("network_weights")
    if isinstance(weights, dict) and weights:
        run.parameters = int(sum(t.numel() for t in weights.values() if hasattr(t, "numel")))
    run.precision = hyper.get("precision") or next((r["precision"] for r in reversed(records)
                                                    if isinstance(r.get("precision"), str)), None)
    ipe = plan.get("iters_per_epoch") or config.get("iters_per_epoch")
    final_iteration = int(plan["iteration"]) if _number(plan.get("iteration")) else None
    run.epochs, estimated = epoch_points(records, int(ipe) if ipe else None, final_iteration)
    if run.epochs and run.epochs[-1].iteration is not None:
        run.iterations, run.iterations_estimated = run.epochs[-1].iteration, estimated
        if estimated and final_iteration is not None:
            run.iterations, run.iterations_estimated = final_iteration, False
    elif final_iteration is not None:
        run.iterations = final_iteration
    if records and _number(records[-1].get("elapsed_s")) is not None:
        run.wall_time_s, run.wall_time_source = float(records[-1]["elapsed_s"]), "recorded per epoch"
    elif _number(plan.get("elapsed_s")):
        run.wall_time_s, run.wall_time_source = float(plan["elapsed_s"]), "budget plan"
    elif run.epochs and run.epochs[-1].elapsed_s is not None:
        run.wall_time_s, run.wall_time_source = run.epochs[-1].elapsed_s, "sum of epoch times"
    run.speed_ratio = speed_ratio(run.epochs)
    return run


def read_fold_runs(model_dir: Path, folds: List[int]) -> List[FoldRun]:
    """``read_fold_run`` for every fold whose folder exists."""
    return [read_fold_run(Path(model_dir) / f"fold_{f}", f) for f in folds if (Path(model_dir) / f"fold_{f}").is_dir()]

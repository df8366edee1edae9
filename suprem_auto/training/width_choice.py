"""Which network width a wall-time budget should train: measured learning curves + step times timed on this machine.

A wider network learns more per iteration but each iteration costs more; which wins depends on how many iterations
the budget buys on *this* machine. The rule:

1. ``recipes/width_curves.json`` holds learning curves measured on real data (Dice on held-out cases after N
   iterations of the short-budget recipe, per width; benchmarks/RESULTS.md says how). Each dataset's Dice is divided
   by its best measured Dice, so datasets of different difficulty count alike (:func:`relative_quality`).
2. At the start of a budgeted run the trainer times a real training step of each candidate width on this machine
   (``trainers/width_hooks.py``); the budget then buys ``training seconds / step seconds`` iterations per width.
3. :func:`choose_width` predicts each width's relative quality at its iteration count (interpolated in
   log-iterations; below the first measured point it falls to 0 at one iteration; beyond the last it stays flat, so
   no gain is claimed that was not measured) and takes the best; a width within ``tie_tolerance`` of the best that
   is narrower wins the tie (cheaper to predict with, measured further along its curve).

Pure functions on plain data; no torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

CURVES_FILE = Path(__file__).with_name("recipes") / "width_curves.json"
#: a narrower width within this much relative quality of the best is preferred
TIE_TOLERANCE = 0.01

Curve = List[Tuple[float, float]]  # (iterations, Dice), iterations ascending


def load_curves(path: Path = CURVES_FILE) -> Dict[str, Any]:
    """The curves file (``curves``: a list of ``{"dataset", "configuration", "points": {width: [[it, dice]...]}}``);
    a malformed file raises ValueError naming it."""
    data = json.loads(Path(path).read_text())
    try:
        for entry in data["curves"]:
            for width, points in entry["points"].items():
                float(width)
                if not points or any(len(p) != 2 or p[0] < 1 for p in points):
                    raise ValueError(f"width {width}: points must be [iterations >= 1, dice] pairs")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a width-curves file ({exc})") from None
    return data


def _interpolate(curve: Curve, iterations: float) -> float:
    """A curve's value at ``iterations``, linear in log-iterations; 0 at one iteration, flat past the last point."""
    points = sorted(curve)
    n = max(1.0, float(iterations))
    if n >= points[-1][0]:
        return points[-1][1]
    previous = (1.0, 0.0)
    for point in points:
        if n <= point[0]:
            (n0, d0), (n1, d1) = previous, point
            if n1 <= n0:
                return d1
            share = (math.log(n) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return d0 + share * (d1 - d0)
        previous = point
    return points[-1][1]


def relative_quality(curves: Mapping[str, Any], width: float, iterations: float) -> Optional[float]:
    """Mean over the datasets that measured ``width`` of its Dice after ``iterations`` divided by the dataset's best
    measured Dice (any width); None when no dataset measured this width."""
    values = []
    for entry in curves["curves"]:
        points = {float(w): [(float(n), float(d)) for n, d in p] for w, p in entry["points"].items()}
        best = max(d for p in points.values() for _, d in p)
        if width in points and best > 0:
            values.append(_interpolate(points[width], iterations) / best)
    return sum(values) / len(values) if values else None


def measured_widths(curves: Mapping[str, Any]) -> List[float]:
    """Every width some dataset measured, ascending."""
    return sorted({float(w) for entry in curves["curves"] for w in entry["points"]})


@dataclass
class WidthChoice:
    """The decision and what it rests on (written to the fold's ``width_choice.json``)."""

    width: float
    reason: str
    training_s: float = 0.0
    step_s: Dict[str, float] = field(default_factory=dict)               # width -> measured seconds per step
    predicted_iterations: Dict[str, int] = field(default_factory=dict)
    predicted_quality: Dict[str, Optional[float]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)                # width -> why it was not timed
    outcome: Dict[str, Any] = field(default_factory=dict)                # what the run then did (iterations...)
    augmentation: Dict[str, Any] = field(default_factory=dict)           # what the predicted iterations decided

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        rows = [f"{w}: {self.step_s[w]:.3f}s/step -> ~{self.predicted_iterations[w]} iterations, predicted "
                + (f"{self.predicted_quality[w]:.3f}" if self.predicted_quality.get(w) is not None else "n/a")
                for w in self.step_s]
        rows += [f"{w}: not timed ({why})" for w, why in self.skipped.items()]
        return f"network width {self.width:g} ({self.reason}); " + "; ".join(rows)


def choose_width(step_s: Mapping[float, float], training_s: float, curves: Mapping[str, Any],
                 tie_tolerance: float = TIE_TOLERANCE) -> WidthChoice:
    """The width whose measured curve predicts the best relative quality after the iterations ``training_s`` buys at
    its measured step time. Widths without a curve are not chosen (unless nothing has one: then the narrowest)."""
    if not step_s:
        raise ValueError("choose_width: no width was timed")
    quality: Dict[float, Optional[float]] = {}
    iterations: Dict[float, int] = {}
    for width, seconds in sorted(step_s.items()):
        iterations[width] = int(max(0.0, training_s) / max(seconds, 1e-9))
        quality[width] = relative_quality(curves, width, iterations[width])
    scored = {w: q for w, q in quality.items() if q is not None}
    if not scored:
        width, reason = min(step_s), "no measured learning curve for the timed widths: the narrowest"
    else:
        best = max(scored.values())
        width = min(w for w, q in scored.items() if q >= best - tie_tolerance)
        reason = ("best predicted quality for this budget on this machine" if scored[width] == best
                  else f"within {tie_tolerance:g} of the best predicted quality and narrower")
    return WidthChoice(width=width, reason=reason, training_s=round(float(training_s), 1),
                       step_s={f"{w:g}": round(s, 4) for w, s in sorted(step_s.items())},
                       predicted_iterations={f"{w:g}": n for w, n in iterations.items()},
                       predicted_quality={f"{w:g}": (round(q, 4) if q is not None else None)
                                          for w, q in quality.items()})


__all__ = ["CURVES_FILE", "WidthChoice", "choose_width", "load_curves", "measured_widths",
           "relative_quality"]

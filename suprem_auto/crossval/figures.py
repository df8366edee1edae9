"""Figures of the cross-validation report (matplotlib, Agg backend), returned as PNG bytes."""
from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def dice_boxplot(per_case: Dict[str, Dict[str, List[float]]], class_names: Dict[str, str]) -> bytes:
    """Box plots of per-case Dice: one panel per class, one box per model."""
    classes = list(class_names)
    plt, fig = _figure(4.0 * max(1, len(classes)), 4.0)
    models = list(per_case)
    for i, key in enumerate(classes):
        ax = fig.add_subplot(1, len(classes), i + 1)
        data = [[v for v in per_case[m].get(key, []) if not np.isnan(v)] for m in models]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(models) + 1))
        ax.set_xticklabels([m.split("__")[0] + "\n" + m.split("__")[-1] for m in models], fontsize=7, rotation=20)
        ax.set_title(f"Dice: {class_names[key]}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    return _png(plt, fig)


CLASS_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000")


def class_colour(index: int) -> str:
    """A distinct colour per class (cycles after 16 classes)."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def learning_curves(runs: Sequence[Any], title: str) -> Optional[bytes]:
    """Per fold (``fold_runs.FoldRun``): losses and EMA pseudo-Dice against iterations (against training time
    where no fold knows its iterations) and each epoch's seconds per iteration against training time."""
    runs = [r for r in runs if r.epochs]
    if not runs:
        return None
    by_iteration = all(p.iteration is not None for r in runs for p in r.epochs)
    estimated = any(r.iterations_estimated for r in runs)
    plt, fig = _figure(15, 4.0)
    ax_loss, ax_dice, ax_speed = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(sorted(runs, key=lambda r: r.fold)):
        colour = colours[i % len(colours)]
        x = [p.iteration if by_iteration else (p.elapsed_s or np.nan) for p in run.epochs]
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            values = [p.record.get(key) for p in run.epochs]
            if any(v is not None for v in values):
                ax_loss.plot(x, [np.nan if v is None else v for v in values], style, color=colour,
                             label=f"fold {run.fold} {key.replace('_loss', '')}")
        ema = [p.record.get("ema_pseudo_dice", p.record.get("pseudo_dice_ema")) for p in run.epochs]
        if any(v is not None for v in ema):
            ax_dice.plot(x, [np.nan if v is None else v for v in ema], color=colour, label=f"fold {run.fold}")
        t = [np.nan if p.elapsed_s is None else p.elapsed_s for p in run.epochs]
        spi = [np.nan if p.sec_per_iteration is None else p.sec_per_iteration for p in run.epochs]
        ax_speed.plot(t, spi, "o-", color=colour, markersize=3, label=f"fold {run.fold}")
    x_label = ("iteration" + (" (estimated from iterations per epoch)" if estimated else "")) if by_iteration \
        else "training time (s)"
    for ax, name in ((ax_loss, f"{title}\nloss"), (ax_dice, "EMA pseudo-Dice"), (ax_speed, "seconds per iteration")):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_label if ax is not ax_speed else "training time (s)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    ax_speed.set_ylim(bottom=0)
    return _png(plt, fig)


def overlay_slice(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, title: str,
                  class_names: Optional[Dict[int, str]] = None) -> bytes:
    """The axial slice with the most reference foreground: image with the reference's and the prediction's
    contours side by side, one colour per class (the same in both panels), a legend naming the classes."""
    from matplotlib.lines import Line2D

    foreground = (reference > 0).reshape(reference.shape[0], -1).sum(1)
    z = int(np.argmax(foreground)) if foreground.max() > 0 else reference.shape[0] // 2
    values = sorted(int(v) for v in set(np.unique(reference)) | set(np.unique(prediction)) if v > 0)
    names = class_names or {}
    plt, fig = _figure(8, 4.6)
    for i, (labels, name) in enumerate(((reference, "reference"), (prediction, "prediction"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(image[z], cmap="gray")
        for k, value in enumerate(values):
            mask = labels[z] == value
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[class_colour(k)], linewidths=1.2)
        ax.set_title(f"{name}, slice {z}", fontsize=9)
        ax.axis("off")
    handles = [Line2D([0], [0], color=class_colour(k), lw=2, label=names.get(v, f"class {v}"))
               for k, v in enumerate(values)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.93))
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and standard deviation ignoring NaN (NaN, NaN when nothing is defined)."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0

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


def learning_curves(curves: Dict[int, List[Dict[str, Any]]], title: str) -> Optional[bytes]:
    """Training/validation loss and EMA pseudo-Dice per fold."""
    if not curves:
        return None
    plt, fig = _figure(10, 3.5)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_dice = fig.add_subplot(1, 2, 2)
    for fold, records in sorted(curves.items()):
        epochs = [r.get("epoch", i) for i, r in enumerate(records)]
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            values = [r.get(key) for r in records]
            if any(v is not None for v in values):
                ax_loss.plot(epochs, [np.nan if v is None else v for v in values], style, label=f"fold {fold} {key}")
        ema = [r.get("ema_pseudo_dice", r.get("pseudo_dice_ema")) for r in records]
        if any(v is not None for v in ema):
            ax_dice.plot(epochs, [np.nan if v is None else v for v in ema], label=f"fold {fold}")
    ax_loss.set_title(f"{title}: loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize=6)
    ax_dice.set_title("EMA pseudo-Dice")
    ax_dice.set_xlabel("epoch")
    ax_dice.legend(fontsize=6)
    return _png(plt, fig)


def overlay_slice(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, title: str) -> bytes:
    """The axial slice with the most reference foreground: image, reference contour (green), prediction (red)."""
    foreground = (reference > 0).reshape(reference.shape[0], -1).sum(1)
    z = int(np.argmax(foreground)) if foreground.max() > 0 else reference.shape[0] // 2
    plt, fig = _figure(7, 3.5)
    for i, (labels, name, colour) in enumerate(((reference, "reference", "lime"), (prediction, "prediction", "red"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(image[z], cmap="gray")
        for value in np.unique(labels[z]):
            if value > 0:
                ax.contour(labels[z] == value, levels=[0.5], colors=[colour], linewidths=1)
        ax.set_title(f"{title}: {name} (slice {z})", fontsize=8)
        ax.axis("off")
    return _png(plt, fig)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and standard deviation ignoring NaN (NaN, NaN when nothing is defined)."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0

"""Run logs: training_log.txt (human), metrics.jsonl (one JSON line per epoch), progress.png (plots)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from suprem_auto.utils.atomic import append_line, atomic_path, atomic_write


class RunLog:
    """Writes the run's logs into ``fold_dir``; ``enabled=False`` (DDP ranks > 0) makes every call a no-op."""

    def __init__(self, fold_dir: Path, enabled: bool = True, echo: bool = True) -> None:
        self.fold_dir = Path(fold_dir)
        self.enabled = enabled
        self.echo = echo
        self.history: List[Dict[str, Any]] = []
        if enabled:
            self.fold_dir.mkdir(parents=True, exist_ok=True)

    @property
    def text_path(self) -> Path:
        return self.fold_dir / "training_log.txt"

    @property
    def metrics_path(self) -> Path:
        return self.fold_dir / "metrics.jsonl"

    def message(self, text: str, echo: Optional[bool] = None) -> None:
        """Print a line (unless ``echo`` is False, or None and the log does not echo) and append it, time-stamped,
        to training_log.txt as whole lines (a kill never leaves a half line glued to the next)."""
        if not self.enabled:
            return
        if self.echo if echo is None else echo:
            print(text, flush=True)
        stamp = time.strftime('%Y-%m-%d %H:%M:%S')
        append_line(self.text_path, "\n".join(f"{stamp}: {line}" for line in text.splitlines() or [""]))

    def restore(self, history: List[Dict[str, Any]]) -> None:
        """On resume: keep exactly the epochs of the checkpoint (drops lines of a lost, unfinished epoch)."""
        self.history = [dict(h) for h in history]
        if self.enabled:
            def write(tmp: Path) -> None:
                tmp.write_text("".join(json.dumps(h) + "\n" for h in self.history))
            atomic_write(self.metrics_path, write)

    def epoch_end(self, record: Dict[str, Any]) -> None:
        """Record one finished epoch: text lines, a metrics.jsonl line and a refreshed progress.png."""
        self.history.append(dict(record))
        if not self.enabled:
            return
        append_line(self.metrics_path, json.dumps(record))
        dice = ", ".join(f"{d:.4f}" if d == d else "nan" for d in record["pseudo_dice"])
        self.message(f"epoch {record['epoch']}: train_loss {record['train_loss']:.4f} val_loss "
                     f"{record['val_loss']:.4f} pseudo-Dice [{dice}] ema {record['ema_pseudo_dice']:.4f} "
                     f"lr {record['lr']:.3g} time {record['epoch_time_s']:.1f}s"
                     + (f" ETA {record['eta_s'] / 60:.1f} min" if "eta_s" in record else ""))
        plot_progress(self.history, self.fold_dir / "progress.png")


def plot_progress(history: List[Dict[str, Any]], target: Path) -> None:
    """Three panels: losses with pseudo-Dice and its EMA, learning rate, epoch time (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 12))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1)
    ax = axes[0]
    ax.plot(epochs, [h["train_loss"] for h in history], color="b", label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], color="r", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["mean_pseudo_dice"] for h in history], color="g", ls="dotted", label="pseudo Dice")
    ax2.plot(epochs, [h["ema_pseudo_dice"] for h in history], color="g", label="pseudo Dice (EMA)")
    ax2.set_ylabel("pseudo Dice")
    ax2.legend(loc="upper right")
    axes[1].plot(epochs, [h["lr"] for h in history], color="b")
    axes[1].set_ylabel("learning rate")
    axes[2].plot(epochs, [h["epoch_time_s"] for h in history], color="b")
    axes[2].set_ylabel("epoch time (s)")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")

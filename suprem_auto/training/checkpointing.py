"""Training's checkpoints: weights_only-safe content (RNG states as tensors/lists) and newest-first resume. Reading
and writing the files is :mod:`suprem_auto.utils.checkpoint_format` (re-exported here)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from suprem_auto.utils.checkpoint_format import load_checkpoint, save_checkpoint  # noqa: F401 - re-exported

LATEST, BEST, FINAL = "checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth"


def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy and torch RNG states using only types ``torch.load(weights_only=True)`` accepts."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (missing parts are skipped)."""
    if "python" in state:
        version, values, gauss = state["python"]
        random.setstate((version, tuple(values), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def newest_checkpoint(fold_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from: final (training done), else latest, else best; None if there is none."""
    for name in (FINAL, LATEST, BEST):
        if (Path(fold_dir) / name).is_file():
            return Path(fold_dir) / name
    return None

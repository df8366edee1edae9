"""Checkpoint files, read and written in one place: ``torch.load(weights_only=True)`` with a numpy allow-list, one-line
errors naming the file, atomic writes, and the project's own checkpoint dict (``network_weights`` and friends, see
docs/ARCHITECTURE.md). Used by training (resume, final weights), inference (model folders) and pretrained (files of
other projects)."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from suprem_auto.utils.atomic import atomic_torch_save

PathLike = Union[str, os.PathLike]
#: the key that holds the network's state dict in our checkpoints (and in nnU-Net v2's)
WEIGHTS_KEY = "network_weights"
_SCALAR_TYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64, np.bool_)
_TORCH_ADVICE = ("weights_only", "add_safe_globals", "safe_globals(", "allowlist", "trust")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (unreadable, truncated, wrong layout or shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs pickled code to load; it is refused and nothing in it is executed."""


def numpy_scalar_globals() -> List[Any]:
    """The allow-list beside tensors: numpy's scalar rebuild function (under its numpy 2 and numpy 1 names),
    ``numpy.dtype`` and the dtype classes of plain numeric scalars (e.g. a ``best_acc`` or nnU-Net's logged
    losses). Nothing that runs code."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *[type(np.dtype(t)) for t in _SCALAR_TYPES]]


def _unsafe_detail(text: str) -> str:
    """What torch's weights-only unpickler refused ("GLOBAL __main__.Evil", "Unsupported operand 80"), without
    torch's advice on how to load the file anyway."""
    for line in text.splitlines():
        if "Unsupported" in line or "GLOBAL" in line:
            detail = line.strip()
            detail = detail.split("WeightsUnpickler error:", 1)[-1].strip()
            detail = detail.split(" was not an allowed global", 1)[0]
            return detail.split(". Please", 1)[0].rstrip(".").strip()
    return ""


def checkpoint_load_error(path: PathLike, exc: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint ``torch.load(weights_only=True)`` could not read.

    A file that needs pickled code or types outside the allow-list becomes ``UnsafeCheckpointError`` naming what was
    refused; torch's advice to re-run with ``weights_only=False`` or to allow-list the global is dropped, since it
    would turn the protection off. Anything else (truncated, corrupt) becomes ``CheckpointError`` with torch's
    first line, never cut short."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        detail = _unsafe_detail(text)
        return UnsafeCheckpointError(
            f"{path}: refused for safety: the file holds pickled code or types outside the allow-list of plain "
            f"tensors, numbers, strings, lists and dicts{' (' + detail + ')' if detail else ''}; nothing in it was "
            "run. Ask its author for a plain state dict or a .safetensors file")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and
                  not any(a in ln for a in _TORCH_ADVICE)), type(exc).__name__)
    return CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt?): {first}")


def safe_torch_load(source: Union[PathLike, bytes], name: str = "", map_location: str = "cpu",
                    mmap: bool = False) -> Any:
    """``torch.load(..., weights_only=True)`` of a file (or its bytes) with :func:`numpy_scalar_globals` allowed.

    Raises ``FileNotFoundError`` for a missing file, ``UnsafeCheckpointError`` (pickled code, nothing executed) or
    ``CheckpointError`` (truncated/corrupt); ``name`` is what the message calls the source (default: its path).
    """
    in_memory = isinstance(source, bytes)
    label = name or ("<bytes>" if in_memory else str(source))
    if not in_memory and not Path(source).is_file():
        raise FileNotFoundError(f"{label}: checkpoint does not exist")
    target = io.BytesIO(source) if in_memory else Path(source)
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            if mmap and not in_memory:
                return torch.load(target, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(target, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise checkpoint_load_error(label, exc) from None


def save_checkpoint(path: PathLike, content: Dict[str, Any]) -> Path:
    """Write one of our checkpoints atomically (a crash never leaves a truncated file)."""
    return atomic_torch_save(content, Path(path))


def load_checkpoint(path: PathLike, map_location: str = "cpu", mmap: bool = False) -> Dict[str, Any]:
    """Read one of our checkpoints: a dict with the network's state dict under ``network_weights``.

    Every problem is one ``CheckpointError`` line naming the file (missing, unsafe, corrupt, not our format).
    """
    try:
        checkpoint = safe_torch_load(path, map_location=map_location, mmap=mmap)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(WEIGHTS_KEY), dict):
        raise CheckpointError(f"{path}: checkpoint lacks '{WEIGHTS_KEY}'")
    return checkpoint

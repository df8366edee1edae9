"""Read nnU-Net v2 checkpoints safely: ``torch.load(weights_only=True)`` with an explicit numpy allow-list.

nnU-Net's trainer pickles plain Python objects plus numpy scalars (``_best_ema`` and the logged losses/Dice are
``np.float64``): rebuilding those needs ``numpy._core.multiarray.scalar`` (``numpy.core.multiarray.scalar`` when
the file was written with numpy 1.x), ``numpy.dtype`` and the dtype classes. Nothing else is allowed; a file that
needs any other global (pickled code) is refused and nothing in it runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

from suprem_auto.pretrained.checkpoint_io import checkpoint_load_error

PathLike = Union[str, os.PathLike]
NNUNET_CHECKPOINT_KEYS = ("network_weights", "init_args")
_SCALAR_TYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64, np.bool_)


def nnunet_safe_globals() -> List[Any]:
    """The allow-list: numpy's scalar rebuild function (under its numpy 2 and numpy 1 names), ``numpy.dtype`` and
    the dtype classes of plain numeric scalars."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *[type(np.dtype(t)) for t in _SCALAR_TYPES]]


def load_with_allow_list(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with :func:`nnunet_safe_globals` allowed.

    Raises ``UnsafeCheckpointError`` (pickled code, nothing executed), ``CheckpointError`` (truncated/corrupt) or
    ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    try:
        with torch.serialization.safe_globals(nnunet_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise checkpoint_load_error(path, exc) from None


def is_nnunet_checkpoint(obj: Any) -> bool:
    """True for a dict with nnU-Net's ``network_weights`` and ``init_args``."""
    return isinstance(obj, dict) and all(k in obj for k in NNUNET_CHECKPOINT_KEYS) and \
        isinstance(obj.get("network_weights"), dict)


def read_nnunet_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load an nnU-Net v2 ``checkpoint_*.pth``; a dict without ``network_weights`` + ``init_args`` is an error."""
    from suprem_auto.pretrained.checkpoint_io import CheckpointError

    obj = load_with_allow_list(path)
    if not is_nnunet_checkpoint(obj):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not an nnU-Net v2 checkpoint (needs 'network_weights' and 'init_args'; "
                              f"found {keys})")
    return obj

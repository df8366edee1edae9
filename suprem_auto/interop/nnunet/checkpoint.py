"""Read nnU-Net v2 checkpoints safely: ``torch.load(weights_only=True)`` with an explicit numpy allow-list.

nnU-Net's trainer pickles plain Python objects plus numpy scalars (``_best_ema`` and the logged losses/Dice are
``np.float64``): rebuilding those needs ``numpy._core.multiarray.scalar`` (``numpy.core.multiarray.scalar`` when
the file was written with numpy 1.x), ``numpy.dtype`` and the dtype classes. Nothing else is allowed; a file that
needs any other global (pickled code) is refused and nothing in it runs.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Union

from suprem_auto.utils.checkpoint_format import CheckpointError, numpy_scalar_globals, safe_torch_load

PathLike = Union[str, os.PathLike]
NNUNET_CHECKPOINT_KEYS = ("network_weights", "init_args")
#: the allow-list (numpy's scalar rebuild function under its numpy 2 and 1 names, ``numpy.dtype``, the dtype classes)
nnunet_safe_globals = numpy_scalar_globals


def load_with_allow_list(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with :func:`nnunet_safe_globals` allowed.

    Raises ``UnsafeCheckpointError`` (pickled code, nothing executed), ``CheckpointError`` (truncated/corrupt) or
    ``FileNotFoundError``.
    """
    return safe_torch_load(path)


def is_nnunet_checkpoint(obj: Any) -> bool:
    """True for a dict with nnU-Net's ``network_weights`` and ``init_args``."""
    return isinstance(obj, dict) and all(k in obj for k in NNUNET_CHECKPOINT_KEYS) and \
        isinstance(obj.get("network_weights"), dict)


def read_nnunet_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load an nnU-Net v2 ``checkpoint_*.pth``; a dict without ``network_weights`` + ``init_args`` is an error."""
    obj = load_with_allow_list(path)
    if not is_nnunet_checkpoint(obj):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not an nnU-Net v2 checkpoint (needs 'network_weights' and 'init_args'; "
                              f"found {keys})")
    return obj

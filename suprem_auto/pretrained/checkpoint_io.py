"""Read untrusted checkpoint files safely (``weights_only=True`` or safetensors) and find the state dict inside."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import torch

from suprem_auto.utils.checkpoint_format import (CheckpointError, UnsafeCheckpointError,  # noqa: F401 - re-exported
                                                 checkpoint_load_error, numpy_scalar_globals, safe_torch_load)

PathLike = Union[str, os.PathLike]

# Containers that hold the state dict, in the order they are tried.
CONTAINER_KEYS = ("network_weights", "net", "state_dict", "model", "student", "module")


def read_checkpoint(path: PathLike) -> Any:
    """Load ``path`` (.pth/.pt via ``torch.load(weights_only=True)``, or .safetensors) onto the CPU.

    Raises ``UnsafeCheckpointError`` for files that need arbitrary pickled objects (never executed, no fallback),
    ``CheckpointError`` for truncated/corrupt files, ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from None
    return safe_torch_load(path)


def unwrap_state_dict(obj: Any, path: PathLike) -> tuple[dict[str, torch.Tensor], str | None]:
    """Return (state dict, container key or None) from a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}, key
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and len(tensors) == len(obj):
        return tensors, None
    raise CheckpointError(f"{path}: no state dict found (top-level keys: {sorted(map(str, obj))[:10]})")


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip leading ``module.`` / ``_orig_mod.`` (repeatedly), then one leading ``backbone.``; anchored only.

    Returns the renamed dict and the prefixes that were removed (for the report).
    """
    out: dict[str, torch.Tensor] = {}
    removed: set[str] = set()
    for key, value in state_dict.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in ("module.", "_orig_mod."):
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
                    removed.add(prefix)
        if name.startswith("backbone."):
            name = name[len("backbone."):]
            removed.add("backbone.")
        if name in out:
            raise CheckpointError(f"key {key!r} collides with another key after prefix stripping")
        out[name] = value
    return out, sorted(removed)

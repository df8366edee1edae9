"""Read untrusted checkpoint files safely (``weights_only=True`` or safetensors) and find the state dict inside."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]

# Containers that hold the state dict, in the order they are tried.
CONTAINER_KEYS = ("network_weights", "net", "state_dict", "model", "student", "module")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (unreadable, truncated, wrong layout or shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs pickled code to load; it is refused and nothing in it is executed."""


def _numpy_scalar_globals() -> list[Any]:
    """The numpy objects needed to rebuild plain numpy scalars (e.g. ``best_acc``); nothing that runs code."""
    scalar = getattr(getattr(np, "_core", None), "multiarray", None)
    scalar = getattr(scalar, "scalar", None) or np.core.multiarray.scalar
    types = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return [scalar, np.dtype, *[type(np.dtype(t)) for t in types]]


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
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise checkpoint_load_error(path, e) from None


_TORCH_ADVICE = ("weights_only", "add_safe_globals", "safe_globals(", "allowlist", "trust")


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

"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash mid-write leaves the previous file (or none), never a truncated one.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``target``.

    ``suffix`` keeps writers that look at the extension (SimpleITK: ``.nii.gz``) happy.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(target: PathLike, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target, suffix=suffix) as tmp:
        write(tmp)
    return Path(target)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(target: PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically (numpy scalars and arrays are converted)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=_json_default, sort_keys=False)
            f.write("\n")
    return atomic_write(target, write)


def atomic_save_npy(target: PathLike, array: np.ndarray) -> Path:
    """Save a numpy array (.npy) atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return atomic_write(target, write)


def atomic_torch_save(obj: Any, target: PathLike) -> Path:
    """``torch.save`` atomically (checkpoints)."""
    import torch

    return atomic_write(target, lambda tmp: torch.save(obj, tmp))


def load_json(path: PathLike) -> Any:
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)


def load_json_or_raise(path: PathLike, error: type = ValueError, what: str = "file") -> Any:
    """Read a JSON file; a missing file or invalid JSON raises ``error`` with one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} is missing")
    try:
        return load_json(path)
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None

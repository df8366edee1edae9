"""Atomic file writes: write to a temporary file beside the target, flush it to disk, then rename over it.

A crash mid-write leaves the previous file (or none), never a truncated one. Files get the mode a plain ``open``
would give them (0666 less the user's umask), so a team sharing a folder can read each other's results. Temporary
files are named ``.<target>.<random>.tmp<suffix>``; ``remove_stale_temp_files`` clears those a killed process left.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

PathLike = Union[str, os.PathLike]

#: what ``atomic_path`` names its temporary files (dot, target name, dot, mkstemp's random part, ``.tmp``, suffix)
TEMP_FILE_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp(\.[A-Za-z0-9.]+)?$")


def current_umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def fsync_file(path: PathLike) -> None:
    """Flush a written file's data to disk (so a rename after a power cut never exposes an empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        os.chmod(tmp_path, default_file_mode())
        fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
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


def append_line(path: PathLike, line: str) -> None:
    """Append one line so that it lands whole or not at all: one ``write`` of the full line in O_APPEND mode,
    flushed to disk. A line a killed writer left half-written (no trailing newline) is closed first, so the new line
    never glues onto it; readers skip such a fragment (``read_complete_lines``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_complete_lines(path: PathLike) -> "list[str]":
    """The lines of a file appended with ``append_line``, without a half-written last line (no newline)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    return [ln for ln in lines[:-1] if ln.strip()]  # the piece after the last newline is empty or a fragment


def remove_stale_temp_files(folder: PathLike, recursive: bool = False) -> "list[Path]":
    """Delete the temporary files of atomic writes a killed process left in ``folder``; returns what was removed.
    Call it only where no other process is writing (e.g. holding the folder's run lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    removed = []
    for path in candidates:
        if path.is_file() and TEMP_FILE_PATTERN.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

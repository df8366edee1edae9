"""One rule for where a command may write or delete: never onto an input, never outside its root, and never
deleting what the command did not create.

Every command that writes files (``suprem_predict``, ``suprem_plan_and_preprocess``/``suprem_preprocess``
``--clean``, ``suprem_convert --overwrite``) asks these functions before it writes or deletes anything; a refusal
is an :class:`OutputRuleError` whose one-line message names the path and the rule.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]


class OutputRuleError(ValueError):
    """A write or delete the output rules refuse; the message names the path and why."""


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def is_within(path: PathLike, root: PathLike) -> bool:
    """True when ``path`` (symlinks and ``..`` resolved) is ``root`` or lies below it."""
    path, root = _resolved(path), _resolved(root)
    return path == root or root in path.parents


def check_inside_root(path: PathLike, root: PathLike, what: str = "output") -> Path:
    """Return ``path`` if it lies inside ``root``; otherwise refuse (e.g. a case id with ``..`` in it)."""
    if not is_within(path, root):
        raise OutputRuleError(f"{path}: {what} would be written outside {root}; refused")
    return Path(path)


def check_not_an_input(outputs: Iterable[PathLike], inputs: Iterable[PathLike], what: str = "output") -> None:
    """Refuse when any output path is one of the input files (same resolved path, symlink or hard link)."""
    by_path: Dict[Path, Path] = {}
    by_inode: Dict[Tuple[int, int], Path] = {}
    for source in inputs:
        by_path[_resolved(source)] = Path(source)
        try:
            st = os.stat(source)
            by_inode[(st.st_dev, st.st_ino)] = Path(source)
        except OSError:
            pass
    for out in outputs:
        source = by_path.get(_resolved(out))
        if source is None:
            try:
                st = os.stat(out)
                source = by_inode.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        if source is not None:
            raise OutputRuleError(f"{source}: {what} ({out}) would overwrite this input; refused, choose another "
                                  "output folder")


def check_deletable(folder: PathLike, protected: Sequence[PathLike] = (), allowed_entries: Optional[Iterable[str]]
                    = None, what: str = "folder") -> None:
    """Refuse to delete ``folder`` when it holds any ``protected`` path (an input, a data root) or, when
    ``allowed_entries`` is given, any entry the command would not have created itself."""
    folder = Path(folder)
    for path in protected:
        if is_within(path, folder):
            raise OutputRuleError(f"{folder}: {what} holds {path}, an input of this command; refusing to delete it")
    if allowed_entries is not None and folder.is_dir():
        allowed = set(allowed_entries)
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in allowed)
        if foreign:
            raise OutputRuleError(f"{folder}: {what} holds files this command did not create "
                                  f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); refusing to "
                                  "delete it, remove them yourself")

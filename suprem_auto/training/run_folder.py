"""A fold folder's ownership: the lock of the process training in it, the run it belongs to, moving aside.

``fold_<k>/train.lock``    held (POSIX record lock) by the one ``suprem_train`` working in the folder; it holds that
                           process's PID and host for the message a second process prints. The kernel drops the lock
                           when the process dies, so a killed run's lock is taken over without any clean-up.
``fold_<k>/run.json``      ``{"run_id", "started"}``: the run the folder's files belong to; every checkpoint carries
                           the same ``run_id``, and ``--c`` resumes only a checkpoint of this run.
``fold_<k>/previous_runs/<timestamp>/``   where a new run (no ``--c``) moves everything an earlier run left.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from suprem_auto.training import checkpointing
from suprem_auto.utils.atomic import atomic_write_json, load_json

LOCK_FILE = "train.lock"
RUN_FILE = "run.json"
PREVIOUS_RUNS = "previous_runs"
#: moved last: a move interrupted by a kill leaves the folder still marked (and resumable) as the old run
_MOVE_LAST = (checkpointing.BEST, checkpointing.LATEST, checkpointing.FINAL, RUN_FILE)


class FoldBusyError(RuntimeError):
    """Another live process holds the fold folder's lock."""


class FoldLock:
    """Exclusive lock of one fold folder for this process (``with FoldLock(fold_dir):``).

    POSIX record locks belong to the process: forked data workers do not inherit them, and the kernel releases them
    when the process dies. Only one ``FoldLock`` per folder may be open in a process (a second one would share the
    lock and release it on close).
    """

    def __init__(self, fold_dir: Path) -> None:
        self.path = Path(fold_dir) / LOCK_FILE
        self._fd: Optional[int] = None

    def acquire(self) -> "FoldLock":
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                continue  # a releasing holder removed the empty folder just now
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "unknown process"
                os.close(fd)
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise FoldBusyError(f"{self.path}: fold folder is in use by {holder}; wait for it to finish or stop "
                                    f"it (a lock of a dead process is taken over automatically)") from None
            if self._same_file(fd):
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"suprem_train PID {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file (and the fold folder when that leaves it empty) and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass  # not empty: the run wrote something
        finally:
            os.close(self._fd)  # closing drops the record lock
            self._fd = None

    def __enter__(self) -> "FoldLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_run(fold_dir: Path) -> Optional[Dict[str, Any]]:
    """The fold's ``run.json`` (None when there is none)."""
    path = Path(fold_dir) / RUN_FILE
    return load_json(path) if path.is_file() else None


def checkpoint_run_id(path: Path) -> Optional[str]:
    """The ``run_id`` a checkpoint was written by (None for checkpoints from before run ids)."""
    return checkpointing.load_checkpoint(path, map_location="cpu").get("run_id")


def run_checkpoint(fold_dir: Path, names: "tuple[str, ...]" = (checkpointing.FINAL, checkpointing.LATEST,
                                                                checkpointing.BEST)) -> Optional[Path]:
    """The first of ``names`` in the fold that belongs to the fold's current run. Without ``run.json`` (a folder
    from before run ids, or a checkpoint copied in by hand) every checkpoint counts as the current run's."""
    run = read_run(fold_dir)
    accepted = None if run is None else {run["run_id"]} | ({None} if run.get("adopted") else set())
    for name in names:
        path = Path(fold_dir) / name
        if path.is_file() and (accepted is None or checkpoint_run_id(path) in accepted):
            return path
    return None


def _artifacts(fold_dir: Path) -> List[Path]:
    """Everything in the fold folder but the lock and the earlier runs, in moving order."""
    entries = [p for p in Path(fold_dir).iterdir() if p.name not in (LOCK_FILE, PREVIOUS_RUNS)]
    last = {name: i for i, name in enumerate(_MOVE_LAST)}
    return sorted(entries, key=lambda p: (last.get(p.name, -1), p.name))


def move_previous_run(fold_dir: Path) -> Optional[Path]:
    """Move what an earlier run left into ``previous_runs/<timestamp>/``; returns that folder (None: nothing).
    Checkpoints and ``run.json`` go last, so a kill in between leaves the old run resumable, never half-new."""
    entries = _artifacts(fold_dir) if Path(fold_dir).is_dir() else []
    if not entries:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(fold_dir) / PREVIOUS_RUNS / stamp
    n = 1
    while target.exists():
        n += 1
        target = Path(fold_dir) / PREVIOUS_RUNS / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, target / entry.name)
    return target


def start_new_run(fold_dir: Path) -> "tuple[str, Optional[Path]]":
    """A new run in ``fold_dir``: earlier files moved aside, a fresh ``run.json``; returns (run_id, moved-to)."""
    moved = move_previous_run(fold_dir)
    run_id = uuid.uuid4().hex
    atomic_write_json(Path(fold_dir) / RUN_FILE, {"run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    return run_id, moved


def adopt_run(fold_dir: Path) -> str:
    """The run id ``--c`` continues: the fold's ``run.json``, else (a folder from before run ids) the newest
    checkpoint's id or a new one, recorded in a new ``run.json`` marked ``adopted`` (its checkpoints without an id
    count as this run's)."""
    run = read_run(fold_dir)
    if run is not None:
        return str(run["run_id"])
    newest = checkpointing.newest_checkpoint(fold_dir)
    run_id = (checkpoint_run_id(newest) if newest is not None else None) or uuid.uuid4().hex
    atomic_write_json(Path(fold_dir) / RUN_FILE, {"run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                  "adopted": True})
    return run_id

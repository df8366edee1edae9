"""Background worker processes that sample and augment batches; a worker's error is re-raised in the trainer.

The workers are watched: each stamps a shared heartbeat before every batch and while it waits for room in the queue.
Every read checks them all, so a dead worker is noticed within a read timeout (0.25 s) even while the others keep the
queue full, and one whose heartbeat is older than ``hang_timeout_s`` counts as hung. Either raises
:class:`DataWorkerError`."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from suprem_auto.training.data.sampler import PatchSampler

Batch = Dict[str, Any]


#: seconds without a heartbeat after which a worker counts as hung (one batch never takes that long)
DEFAULT_HANG_TIMEOUT_S = 300.0
_READ_TIMEOUT_S = 0.25


class DataWorkerError(RuntimeError):
    """A data worker failed; ``summary`` is one line, the message adds the worker's own traceback (if any)."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary
        self.details = details


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def default_num_workers(cap: int = 12) -> int:
    """One worker per core available to this process (``os.sched_getaffinity``), at most ``cap``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(cap, cores))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def _worker_loop(sampler: PatchSampler, transform: Callable[..., Batch], seed: int, out: "mp.Queue",
                 stop: "mp.synchronize.Event", worker_id: int, parent_pid: int, heartbeat: Any) -> None:
    def running() -> bool:
        heartbeat[worker_id] = time.monotonic()
        # a trainer killed by a signal never sets ``stop``: its workers notice that they were re-parented
        return not stop.is_set() and os.getppid() == parent_pid

    try:
        sampler.reseed(seed)
        _seed_everything(seed)
        while running():
            batch = transform(**sampler.sample_batch())
            while running():
                try:
                    out.put(("batch", worker_id, batch), timeout=0.5)
                    break
                except queue.Full:
                    continue
    except BaseException:  # report everything, including KeyboardInterrupt, to the parent
        out.put(("error", worker_id, traceback.format_exc()))
        return
    # Batches still buffered for a reader that is gone (or no longer reads) must not keep this process from exiting.
    out.cancel_join_thread()


class BatchStream:
    """An endless iterator of augmented batches, produced by ``num_workers`` processes (0: in this process)."""

    def __init__(self, sampler: PatchSampler, transform: Callable[..., Batch], num_workers: int, seed: int,
                 queue_size: int = 4, hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S) -> None:
        self.hang_timeout_s = hang_timeout_s
        self.sampler = sampler
        self.transform = transform
        self.num_workers = num_workers
        self.seed = seed
        self._processes: List[mp.Process] = []
        self._queue: Optional[mp.Queue] = None
        self._stop = None
        self._heartbeat: Any = None
        if num_workers == 0:
            sampler.reseed(seed)
            _seed_everything(seed)
        else:
            self._start(queue_size)

    def _start(self, queue_size: int) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._queue = ctx.Queue(maxsize=queue_size * self.num_workers)
        self._stop = ctx.Event()
        self._heartbeat = ctx.Array("d", [time.monotonic()] * self.num_workers, lock=False)
        for i in range(self.num_workers):
            p = ctx.Process(target=_worker_loop, daemon=True, name=f"suprem-data-{i}",
                            args=(self.sampler, self.transform, self.seed + 7919 * i, self._queue, self._stop, i,
                                  os.getpid(), self._heartbeat))
            p.start()
            self._processes.append(p)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        if self.num_workers == 0:
            return self.transform(**self.sampler.sample_batch())
        while True:
            try:
                kind, worker_id, payload = self._queue.get(timeout=_READ_TIMEOUT_S)
            except queue.Empty:
                kind = None
            if kind == "error":
                self.close()
                raise DataWorkerError(f"data worker {worker_id} failed: {_last_line(payload)}", payload)
            self._check_workers()
            if kind is not None:
                return payload

    def _check_workers(self) -> None:
        """Raise (after stopping the others) when a worker died or its heartbeat is older than the hang timeout."""
        for i, p in enumerate(self._processes):
            if not p.is_alive():
                code = p.exitcode
                reported = self._reported_error()  # its error may still wait behind batches in the queue
                self.close()
                if reported is not None:
                    worker_id, details = reported
                    raise DataWorkerError(f"data worker {worker_id} failed: {_last_line(details)}", details)
                raise DataWorkerError(f"data worker {i} died without a Python error (exit code {code}; a negative "
                                      f"code is a signal, -9 usually means out of memory: try fewer --num_workers "
                                      f"or a smaller batch)")
            silent = time.monotonic() - self._heartbeat[i]
            if silent > self.hang_timeout_s:
                pid = p.pid
                self.close()
                raise DataWorkerError(f"data worker {i} (PID {pid}) hung: no sign of life for {silent:.0f} s "
                                      f"(limit {self.hang_timeout_s:.0f} s)")

    def _reported_error(self) -> "Optional[tuple[int, str]]":
        """The first error message still in the queue (the workers are stopped first; batches are discarded)."""
        self._stop.set()
        for _ in range(10_000):
            try:
                kind, worker_id, payload = self._queue.get(timeout=0.2)
            except queue.Empty:
                return None
            if kind == "error":
                return worker_id, payload
        return None

    def close(self) -> None:
        """Stop and join the workers (idempotent)."""
        if self._stop is not None:
            self._stop.set()
        for p in self._processes:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
        self._processes = []
        if self._queue is not None:
            self._queue.cancel_join_thread()
            self._queue.close()
            self._queue = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

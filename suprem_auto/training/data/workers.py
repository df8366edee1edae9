"""Background worker processes that sample and augment batches; a worker's error is re-raised in the trainer."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import traceback
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from suprem_auto.training.data.sampler import PatchSampler

Batch = Dict[str, Any]


class DataWorkerError(RuntimeError):
    """A data worker failed; the message carries the worker's own traceback."""


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
                 stop: "mp.synchronize.Event", worker_id: int, parent_pid: int) -> None:
    def running() -> bool:
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
                 queue_size: int = 4) -> None:
        self.sampler = sampler
        self.transform = transform
        self.num_workers = num_workers
        self.seed = seed
        self._processes: List[mp.Process] = []
        self._queue: Optional[mp.Queue] = None
        self._stop = None
        if num_workers == 0:
            sampler.reseed(seed)
            _seed_everything(seed)
        else:
            self._start(queue_size)

    def _start(self, queue_size: int) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._queue = ctx.Queue(maxsize=queue_size * self.num_workers)
        self._stop = ctx.Event()
        for i in range(self.num_workers):
            p = ctx.Process(target=_worker_loop, daemon=True, name=f"suprem-data-{i}",
                            args=(self.sampler, self.transform, self.seed + 7919 * i, self._queue, self._stop, i,
                                  os.getpid()))
            p.start()
            self._processes.append(p)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        if self.num_workers == 0:
            return self.transform(**self.sampler.sample_batch())
        while True:
            try:
                kind, worker_id, payload = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._check_alive()
                continue
            if kind == "error":
                self.close()
                raise DataWorkerError(f"data worker {worker_id} failed:\n{payload}")
            return payload

    def _check_alive(self) -> None:
        dead = [(i, p.exitcode) for i, p in enumerate(self._processes) if not p.is_alive()]
        if dead:
            self.close()
            i, code = dead[0]
            raise DataWorkerError(f"data worker {i} died without a Python error (exit code {code}); "
                                  f"a negative code is a signal, -9 usually means out of memory: "
                                  f"try fewer --num_workers or a smaller batch")

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

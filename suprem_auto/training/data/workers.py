"""Background worker processes that sample and augment batches; a worker's error is re-raised in the trainer.

Each worker has its own pipe to the trainer, and the trainer closes its copy of the pipe's write end once the worker
has started. So a worker that dies in the middle of a batch (killed for memory, for instance) leaves an end of file
that the trainer reads as that worker's death; a single queue shared by all workers would leave a half-written
message that blocks the reader forever, and its lock held by the dead writer would block the other workers too.

The workers are watched: each stamps a shared heartbeat before every batch and while it waits for room in its
outgoing buffer. Every read checks them all, so a dead worker is noticed within a read timeout (0.25 s) even while the
others keep the trainer supplied, and one whose heartbeat is older than ``hang_timeout_s`` counts as hung. Either
raises :class:`DataWorkerError`."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from suprem_auto.training.data.sampler import PatchSampler

Batch = Dict[str, Any]
Message = Tuple[str, int, Any]


#: seconds without a heartbeat after which a worker counts as hung (one batch never takes that long)
DEFAULT_HANG_TIMEOUT_S = 300.0
_READ_TIMEOUT_S = 0.25
_CLOSED = object()  # tells a worker's sender thread that nothing more comes


class DataWorkerError(RuntimeError):
    """A data worker failed; ``summary`` is one line, the message adds the worker's own traceback (if any)."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary
        self.details = details

    @classmethod
    def reported(cls, worker_id: int, details: str) -> "DataWorkerError":
        """The error a worker sent: its traceback's last line as the summary."""
        return cls(f"data worker {worker_id} failed: {_last_line(details)}", details)


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


def _send_forever(outbox: "queue.Queue[Any]", channel: Connection) -> None:
    """Worker-side sender thread: pipe each message to the trainer in order (a send blocks while the trainer is busy)."""
    while True:
        message = outbox.get()
        if message is _CLOSED:
            return
        try:
            channel.send(message)
        except OSError:  # the trainer is gone
            return


def _worker_loop(sampler: PatchSampler, transform: Callable[..., Batch], seed: int, channel: Connection,
                 stop: "mp.synchronize.Event", worker_id: int, parent_pid: int, heartbeat: Any,
                 buffer_size: int) -> None:
    def running() -> bool:
        heartbeat[worker_id] = time.monotonic()
        # a trainer killed by a signal never sets ``stop``: its workers notice that they were re-parented
        return not stop.is_set() and os.getppid() == parent_pid

    def deliver(message: Any) -> bool:
        while running():
            try:
                outbox.put(message, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    outbox: "queue.Queue[Any]" = queue.Queue(maxsize=buffer_size)
    sender = threading.Thread(target=_send_forever, args=(outbox, channel), daemon=True, name="suprem-data-sender")
    sender.start()
    try:
        sampler.reseed(seed)
        _seed_everything(seed)
        while running():
            if not deliver(("batch", worker_id, transform(**sampler.sample_batch()))):
                break
    except BaseException:  # report everything, including KeyboardInterrupt, to the parent
        if deliver(("error", worker_id, traceback.format_exc())) and deliver(_CLOSED):
            while sender.is_alive() and running():  # the error must reach the trainer before this process ends
                sender.join(timeout=0.5)
    # A sender still blocked on a reader that no longer reads is a daemon thread: it does not keep this process alive.


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
        self._channels: List[Optional[Connection]] = []  # per worker; None once its end of file was read
        self._next_reader = 0
        self._stop = None
        self._heartbeat: Any = None
        if num_workers == 0:
            sampler.reseed(seed)
            _seed_everything(seed)
        else:
            self._start(queue_size)

    def _start(self, queue_size: int) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._stop = ctx.Event()
        self._heartbeat = ctx.Array("d", [time.monotonic()] * self.num_workers, lock=False)
        for i in range(self.num_workers):
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_loop, daemon=True, name=f"suprem-data-{i}",
                            args=(self.sampler, self.transform, self.seed + 7919 * i, writer, self._stop, i,
                                  os.getpid(), self._heartbeat, queue_size))
            p.start()
            writer.close()  # the worker holds the only write end: its death is an end of file here
            self._processes.append(p)
            self._channels.append(reader)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        if self.num_workers == 0:
            return self.transform(**self.sampler.sample_batch())
        while True:
            message = self._read_one()
            if message is not None and message[0] == "error":
                self.close()
                raise DataWorkerError.reported(message[1], message[2])
            self._check_workers()
            if message is not None:
                return message[2]

    def _read_one(self) -> Optional[Message]:
        """One message from a worker with data ready (taking turns), or None after the read timeout."""
        open_channels = [c for c in self._channels if c is not None]
        if not open_channels:
            time.sleep(_READ_TIMEOUT_S)
            return None
        ready = set(wait(open_channels, timeout=_READ_TIMEOUT_S))
        for offset in range(len(self._channels)):
            i = (self._next_reader + offset) % len(self._channels)
            channel = self._channels[i]
            if channel is None or channel not in ready:
                continue
            self._next_reader = i + 1
            try:
                return channel.recv()
            except (EOFError, OSError):  # the worker ended, perhaps in the middle of a message
                channel.close()
                self._channels[i] = None
                self._processes[i].join(timeout=1.0)  # let its death be seen by the check that follows
                if self._processes[i].is_alive():
                    self.close()
                    raise DataWorkerError(f"data worker {i} closed its pipe while still running")
        return None

    def _check_workers(self) -> None:
        """Raise (after stopping the others) when a worker died or its heartbeat is older than the hang timeout."""
        for i, p in enumerate(self._processes):
            if not p.is_alive():
                code = p.exitcode
                reported = self._reported_error(i)  # its error may still wait behind batches in its pipe
                self.close()
                if reported is not None:
                    raise DataWorkerError.reported(i, reported)
                raise DataWorkerError(f"data worker {i} died without a Python error (exit code {code}; a negative "
                                      f"code is a signal, -9 usually means out of memory: try fewer --num_workers "
                                      f"or a smaller batch)")
            silent = time.monotonic() - self._heartbeat[i]
            if silent > self.hang_timeout_s:
                pid = p.pid
                self.close()
                raise DataWorkerError(f"data worker {i} (PID {pid}) hung: no sign of life for {silent:.0f} s "
                                      f"(limit {self.hang_timeout_s:.0f} s)")

    def _reported_error(self, worker_id: int) -> Optional[str]:
        """The error message a dead worker left in its pipe, if any (batches before it are discarded)."""
        channel = self._channels[worker_id]
        if channel is None:
            return None
        for _ in range(10_000):  # the writer is dead: everything left is already in the pipe
            try:
                if not channel.poll(0):
                    return None
                kind, _, payload = channel.recv()
            except (EOFError, OSError):
                return None
            if kind == "error":
                return payload
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
        for channel in self._channels:
            if channel is not None:
                channel.close()
        self._channels = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

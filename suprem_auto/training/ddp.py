"""Distributed data parallel helpers for runs started with torchrun (RANK / WORLD_SIZE / LOCAL_RANK)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run; ``world_size == 1`` means no DDP."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(env: Optional[Mapping[str, str]] = None) -> DistributedContext:
    """Read torchrun's environment variables (absent: a single process)."""
    env = os.environ if env is None else env
    return DistributedContext(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                              local_rank=int(env.get("LOCAL_RANK", 0)))


def init_distributed(ctx: DistributedContext, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) if the run has several ranks."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    # long timeout: ranks > 0 wait at a barrier while rank 0 runs the final sliding-window validation
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=ctx.rank,
                            world_size=ctx.world_size, timeout=timedelta(hours=4))


def shutdown_distributed(ctx: DistributedContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_batch_size(global_batch_size: int, ctx: DistributedContext) -> int:
    """This rank's share of the global batch (the first ranks take the remainder)."""
    if global_batch_size < ctx.world_size:
        raise ValueError(f"batch size {global_batch_size} is smaller than the number of processes ({ctx.world_size})")
    base, extra = divmod(global_batch_size, ctx.world_size)
    return base + (1 if ctx.rank < extra else 0)


def rank_forced_foreground(global_batch_size: int, oversample: float, ctx: DistributedContext) -> int:
    """How many of this rank's samples must contain foreground, so the global batch keeps nnU-Net's rule
    (the last ``round(batch * oversample)`` samples of the global batch are forced)."""
    first_forced = global_batch_size - int(round(global_batch_size * oversample))
    start = sum(rank_batch_size(global_batch_size, DistributedContext(r, ctx.world_size)) for r in range(ctx.rank))
    stop = start + rank_batch_size(global_batch_size, ctx)
    return max(0, stop - max(start, first_forced))


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum a tensor over ranks (in place); identity without DDP."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()

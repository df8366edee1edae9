"""The one device rule: ``auto`` picks CUDA, then MPS, then the CPU; used by training, inference and segmentation."""
from __future__ import annotations

from typing import Optional, Union

import torch

DeviceLike = Union[str, torch.device]


def auto_device_name() -> str:
    """``cuda`` where CUDA is available, else ``mps`` where Apple's backend is, else ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(device: DeviceLike = "auto", local_rank: Optional[int] = None) -> torch.device:
    """A ``torch.device`` from ``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:<n>`` or a device object.

    A plain ``cuda`` becomes ``cuda:<local_rank>`` (one GPU per process under DDP) or the current CUDA device;
    ``cuda`` without CUDA raises ``RuntimeError``; an unknown name raises ``ValueError`` naming it.
    """
    if isinstance(device, torch.device):
        return device
    name = auto_device_name() if device == "auto" else str(device)
    kind = name.split(":", 1)[0]
    if kind not in ("cuda", "cpu", "mps"):
        raise ValueError(f"-device must be cuda, cpu, mps or auto, got '{device}'")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"-device {device} requested but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    return torch.device(name)

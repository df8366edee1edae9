"""Numeric precision and memory format of the training step and of inference: bf16 autocast only where the CPU does
it natively (one detection for both)."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager, Iterable, Optional, Set

import torch
from torch import nn

#: CPU flags (``/proc/cpuinfo``) that mean native bf16 matrix arithmetic (AVX-512 BF16 or Intel AMX)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> Set[str]:
    """The CPU feature flags of the first ``flags`` line (empty where there is no /proc/cpuinfo)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def torch_cpu_bf16_supported() -> bool:
    """Whether torch's oneDNN backend reports bf16 support on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_cpu_bf16(flags: Iterable[str], torch_supported: bool) -> bool:
    """bf16 is worth it on CPU only with native bf16 instructions AND torch's oneDNN bf16 path (elsewhere bf16
    convolutions are emulated and measured ~150x slower than fp32)."""
    return torch_supported and any(f in set(flags) for f in NATIVE_BF16_FLAGS)


def choose_precision(requested: str, device: torch.device, flags: Optional[Iterable[str]] = None,
                     torch_supported: Optional[bool] = None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for the training step.

    ``requested``: ``auto`` (CUDA: fp16 AMP; CPU: bf16 where native, else fp32), ``bf16``, ``fp32``.
    """
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got '{requested}'")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "fp16"
    if device.type != "cpu":
        return "fp32"
    flags = read_cpu_flags() if flags is None else flags
    supported = torch_cpu_bf16_supported() if torch_supported is None else torch_supported
    return "bf16" if native_cpu_bf16(flags, supported) else "fp32"


INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def inference_precision(requested: str, device: torch.device, flags: Optional[Iterable[str]] = None,
                        torch_supported: Optional[bool] = None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for prediction: ``auto`` is what training picks (CUDA: fp16; CPU: bf16
    where native, else fp32; other devices: fp32); ``fp16`` only on CUDA."""
    if requested not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got '{requested}'")
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision fp16 needs a CUDA device, not {device.type} (use bf16 or fp32)")
        return "fp16"
    return choose_precision(requested, device, flags, torch_supported)


def autocast_context(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of a precision (fp32: none)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def use_channels_last(requested: str, device: torch.device, network: nn.Module) -> bool:
    """channels_last_3d for 3D conv networks on CPU (measured 1.3-1.7x faster for the plain U-Net step, see
    benchmarks/RESULTS.md); ``requested``: auto, on, off."""
    if requested not in ("auto", "on", "off"):
        raise ValueError(f"channels_last must be auto, on or off, got '{requested}'")
    if requested != "auto":
        return requested == "on"
    has_conv3d = any(isinstance(m, nn.Conv3d) for m in network.modules())
    return device.type == "cpu" and has_conv3d


def to_memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 5D tensor in channels_last_3d when asked (other tensors unchanged)."""
    if channels_last and tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    return tensor

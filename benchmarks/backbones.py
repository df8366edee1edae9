"""Forward / backward time of each backbone at its planned patch on this machine (fp32 and bf16 autocast).

Usage: python benchmarks/backbones.py [--patch 96 96 96] [--batch-sizes 1 2] [--backbones ...] [--markdown]
``--warmup`` untimed steps (default 1), then ``--repeats`` timed steps (median reported). Inputs and weights are random.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from suprem_auto.networks import build_network

# nnU-Net-like 3d_fullres topology for a 96^3 patch at ~1.5 mm (what the default planner produces for CT).
PLAIN_UNET_96 = {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                 "kernel_sizes": [[3, 3, 3]] * 6, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
                 "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 2}
ARCHITECTURES = {"plain_unet": {"name": "plain_unet", "kwargs": PLAIN_UNET_96},
                 "suprem_unet": {"name": "suprem_unet", "kwargs": {}},
                 "segresnet": {"name": "segresnet", "kwargs": {}},
                 "swin_unetr": {"name": "swin_unetr", "kwargs": {}}}


def _loss(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    outs = out if isinstance(out, list) else [out]
    return sum(o.float().square().mean() for o in outs)


def time_step(net: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int, warmup: int,
              backward: bool = True) -> tuple[float, float]:
    """Median seconds of (forward, forward+backward) over ``repeats`` after ``warmup`` untimed steps."""
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    fwd, full = [], []
    for i in range(repeats + warmup):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with ctx():
            out = net(x)
        t1 = time.perf_counter()
        if backward:
            _loss(out).backward()
        t2 = time.perf_counter()
        if i >= warmup:
            fwd.append(t1 - t0)
            full.append(t2 - t0)
    return statistics.median(fwd), statistics.median(full)


def conv3d_dtype_check(channels: int = 32, size: int = 32) -> str:
    """One Conv3d(k3) layer, fp32 vs bf16 autocast: exposes CPUs/builds without a fast bf16 3D convolution."""
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, size, size, size)
    cells = []
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)  # warm-up
            xr = x.clone().requires_grad_()
            t0 = time.perf_counter()
            y = conv(xr)
            t1 = time.perf_counter()
        y.float().sum().backward()
        t2 = time.perf_counter()
        cells.append(f"{'bf16' if bf16 else 'fp32'} forward {t1 - t0:.3f} s, backward {t2 - t1:.3f} s")
    return f"Conv3d({channels},{channels},k3) at {size}^3: " + "; ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES),
                        help="which backbones to time")
    parser.add_argument("--patch", nargs=3, type=int, default=[96, 96, 96], help="patch size (z y x)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2], help="batch sizes to time")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="fp32, or bf16 autocast")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per setting (after one warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--forward-only", action="store_true", help="time forward passes only (no backward)")
    parser.add_argument("--conv-check", action="store_true",
                        help="first time a single Conv3d in fp32 and bf16 autocast (CPU bf16 support check)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, patch {args.patch}")
    if args.conv_check:
        print(conv3d_dtype_check())
    print("| backbone | params | batch | dtype | patch | forward s | forward+backward s |")
    print("|---|---|---|---|---|---|---|")
    settings = [(b, bs, dt) for b in args.backbones for bs in args.batch_sizes for dt in args.dtypes]
    net_cache: dict[str, torch.nn.Module] = {}
    for backbone, bs, dtype in tqdm(settings, desc="benchmark", leave=False):
        if backbone not in net_cache:
            net_cache.clear()
            net_cache[backbone] = build_network(ARCHITECTURES[backbone], 1, 3, False).to(args.device).train()
        net = net_cache[backbone]
        n_params = sum(p.numel() for p in net.parameters()) / 1e6
        x = torch.randn(bs, 1, *args.patch, device=args.device)
        fwd, full = time_step(net, x, dtype == "bf16", args.repeats, args.warmup, not args.forward_only)
        both = "-" if args.forward_only else f"{full:.2f}"
        tqdm.write(f"| {backbone} | {n_params:.2f}M | {bs} | {dtype} | {'x'.join(map(str, args.patch))} | "
                   f"{fwd:.2f} | {both} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

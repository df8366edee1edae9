"""Optimiser with encoder / decoder / head parameter groups, per-group lr multipliers and encoder freezing."""
from __future__ import annotations

from typing import Dict, Iterable, List

import torch
from torch import nn

from suprem_auto.training.config import TrainingConfig

GROUP_NAMES = ("encoder", "decoder", "head")


def named_parameter_groups(network: nn.Module) -> Dict[str, List[nn.Parameter]]:
    """The network's parameters split into encoder / decoder / head (suprem_auto.networks.parameter_groups)."""
    from suprem_auto.networks import parameter_groups

    return parameter_groups(network)


def build_optimizer(network: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over one param group per network part; each group carries its lr multiplier."""
    unknown = set(config.lr_multipliers) - set(GROUP_NAMES)
    if unknown:
        raise ValueError(f"lr_multipliers: unknown group(s) {sorted(unknown)}; known: {', '.join(GROUP_NAMES)}")
    groups = []
    for name, params in named_parameter_groups(network).items():
        if params:
            groups.append({"params": params, "group_name": name,
                           "lr_multiplier": float(config.lr_multipliers.get(name, 1.0)), "lr": config.lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}' (known: sgd, adamw)")


def apply_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, frozen: Iterable[str] = ()) -> None:
    """Set each group's lr to ``base_lr * multiplier``; frozen groups get lr 0 (no update, DDP-safe)."""
    frozen = set(frozen)
    for group in optimizer.param_groups:
        name = group.get("group_name")
        group["lr"] = 0.0 if name in frozen else base_lr * group.get("lr_multiplier", 1.0)

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
        multiplier = float(config.lr_multipliers.get(name, 1.0))
        if name == "encoder" and params and config.encoder_layer_decay != 1.0:
            stages = encoder_stages(network, params)
            for depth, stage_params in enumerate(stages):  # input side first
                factor = config.encoder_layer_decay ** (len(stages) - depth)
                groups.append({"params": stage_params, "group_name": name, "encoder_stage": depth,
                               "lr_multiplier": multiplier * factor, "lr": config.lr})
        elif params:
            groups.append({"params": params, "group_name": name, "lr_multiplier": multiplier, "lr": config.lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}' (known: sgd, adamw)")


def stage_key(param_name: str) -> str:
    """The encoder stage a parameter belongs to, from its name: the path up to its first component holding a digit
    (``encoder.stages.3.convs.0.conv.weight`` -> ``encoder.stages.3``, ``down_tr128.ops.0...`` -> ``down_tr128``,
    ``down_layers.2.1...`` -> ``down_layers.2``), else its first component (``convInit``)."""
    parts = param_name.split(".")
    for i, part in enumerate(parts):
        if any(ch.isdigit() for ch in part):
            return ".".join(parts[: i + 1])
    return parts[0]


def encoder_stages(network: nn.Module, encoder_params: List[nn.Parameter]) -> List[List[nn.Parameter]]:
    """The encoder's parameters by stage, in the order the network registers them (input side first for every
    shipped backbone; Swin UNETR's transformer stages come before its convolutional encoder blocks)."""
    wanted = {id(p) for p in encoder_params}
    stages: Dict[str, List[nn.Parameter]] = {}
    for name, param in network.named_parameters():
        if id(param) in wanted:
            stages.setdefault(stage_key(name), []).append(param)
    return list(stages.values())


def apply_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, frozen: Iterable[str] = ()) -> None:
    """Set each group's lr to ``base_lr * multiplier``; frozen groups get lr 0 (no update, DDP-safe)."""
    frozen = set(frozen)
    for group in optimizer.param_groups:
        name = group.get("group_name")
        group["lr"] = 0.0 if name in frozen else base_lr * group.get("lr_multiplier", 1.0)

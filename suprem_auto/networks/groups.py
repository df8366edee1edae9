"""Split a network's parameters into encoder / decoder / head groups (fine-tuning learning-rate policy, freezing).

The prefixes come from each backbone's registry entry (``suprem_auto.networks.registry``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from suprem_auto.networks.registry import backbone_of_network, get_backbone

if TYPE_CHECKING:
    from torch import nn


def architecture_of(net: "nn.Module") -> str:
    """Architecture name of a network built by ``build_network`` (or one of the registered backbone classes)."""
    return backbone_of_network(net).name


def head_prefixes(architecture: str) -> tuple:
    """Parameter-name prefixes of the segmentation head of ``architecture``."""
    return get_backbone(architecture).head_prefixes


def group_of(architecture: str, param_name: str) -> str:
    """'encoder', 'decoder' or 'head' for a parameter name of the given architecture."""
    return get_backbone(architecture).group_of(param_name)


def parameter_groups(net: "nn.Module") -> "dict[str, list[nn.Parameter]]":
    """``{"encoder": [...], "decoder": [...], "head": [...]}``; every parameter appears exactly once.

    For a ``UniversalModel`` the backbone is split as usual and the text-driven head counts as ``head``.
    """
    universal = hasattr(net, "organ_embedding") and hasattr(net, "backbone")
    entry = backbone_of_network(net.backbone if universal else net)
    groups: dict = {"encoder": [], "decoder": [], "head": []}
    for name, p in net.named_parameters():
        if universal:
            group = entry.group_of(name[len("backbone."):]) if name.startswith("backbone.") else "head"
        else:
            group = entry.group_of(name)
        groups[group].append(p)
    return groups

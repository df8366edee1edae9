"""Network construction from a plans ``architecture`` entry: ``build_network(architecture, in_ch, out_ch, ds)``."""
from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

from suprem_auto.networks.groups import parameter_groups
from suprem_auto.networks.registry import (Backbone, backbone_names, get_backbone, register_backbone,
                                           unregister_backbone)

if TYPE_CHECKING:
    from torch import nn

# The network classes are imported when first used: the registry (read by the torch-free plans schema) must not
# pull in torch, and MONAI (SegResNet, Swin UNETR) costs seconds.
_LAZY = {"PlainConvUNet": "suprem_auto.networks.plain_unet", "ResidualEncoderUNet": "suprem_auto.networks.resenc_unet",
         "UNet3D": "suprem_auto.networks.suprem_unet", "SuPreMSegResNet": "suprem_auto.networks.segresnet",
         "SuPreMSwinUNETR": "suprem_auto.networks.swin_unetr"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def architectures() -> tuple:
    """Names of the registered architectures (``suprem_auto.networks.registry``), in registration order."""
    return backbone_names()


def build_network(architecture: dict, num_input_channels: int, num_outputs: int,
                  deep_supervision: bool) -> "nn.Module":
    """Build the network named by ``architecture = {"name": ..., "kwargs": {...}}`` from its registry entry.

    Only backbones registered with ``deep_supervision=True`` (``plain_unet``, ``resenc_unet``) get the flag; the
    others ignore it. Every returned module has a settable ``deep_supervision`` attribute and ``architecture_name``.

    >>> import torch
    >>> from suprem_auto.networks import build_network
    >>> net = build_network({"name": "plain_unet", "kwargs": {"n_stages": 2, "features_per_stage": [4, 8],
    ...     "strides": [[1, 1, 1], [2, 2, 2]], "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
    ...     "n_conv_per_stage": 1, "n_conv_per_stage_decoder": 1}}, 1, 3, False)
    >>> tuple(net(torch.zeros(1, 1, 8, 8, 8)).shape)
    (1, 3, 8, 8, 8)
    """
    name = architecture.get("name")
    kwargs = dict(architecture.get("kwargs") or {})
    entry = get_backbone(name)
    unknown = sorted(set(kwargs) - entry.allowed_kwargs)
    if unknown:
        raise ValueError(f"architecture {name!r} does not take kwargs {unknown}")
    if entry.deep_supervision:
        kwargs["deep_supervision"] = deep_supervision
    net = entry.network_class()(num_input_channels, num_outputs, **kwargs)
    if not hasattr(net, "deep_supervision"):
        net.deep_supervision = False
    net.architecture_name = name
    return net


def network_class(name: str) -> type:
    """The module class of an architecture name (MONAI-based ones imported on first use)."""
    return get_backbone(name).network_class()


def _scaled(value: int, factor: float, multiple: int) -> int:
    """``value * factor`` rounded to a multiple of ``multiple``, at least max(4, multiple)."""
    return max(4, multiple, int(round(value * factor / multiple)) * multiple)


def scale_width(architecture: dict, factor: float) -> dict:
    """The architecture with its feature widths multiplied by ``factor`` (rounded to what the network accepts).

    Plain U-Net: every ``features_per_stage`` entry (at least 4); SegResNet: ``init_filters`` (a multiple of 8, its
    GroupNorm groups); SuPreM U-Net: ``base_width`` (released 32); Swin UNETR: ``feature_size`` (a multiple of 12,
    released 48). A narrowed SuPreM backbone cannot load the released checkpoints; it is for training from scratch or
    from our own pre-training at the same width.
    """
    if factor == 1:
        return architecture
    if factor <= 0:
        raise ValueError(f"network width factor must be > 0, got {factor}")
    name, kwargs = architecture.get("name"), dict(architecture.get("kwargs") or {})
    try:
        entry = get_backbone(name)
    except ValueError:
        raise ValueError(f"--network_width {factor:g}: unknown architecture {name!r}") from None
    if entry.width_arg is None:
        raise ValueError(f"--network_width {factor:g}: architecture {name!r} has no width argument")
    key, multiple = entry.width_arg, entry.width_multiple
    value = kwargs.get(key, inspect.signature(network_class(name)).parameters[key].default)
    if value is inspect.Parameter.empty:
        raise ValueError(f"--network_width {factor:g}: {name} needs {key} in its kwargs")
    kwargs[key] = ([_scaled(v, factor, multiple) for v in value] if isinstance(value, (list, tuple))
                   else _scaled(value, factor, multiple))
    return {**architecture, "kwargs": kwargs}


__all__ = ["Backbone", "architectures", "build_network", "get_backbone", "register_backbone",
           "unregister_backbone", "network_class", "scale_width",
           "parameter_groups", "PlainConvUNet", "ResidualEncoderUNet", "UNet3D", "SuPreMSegResNet", "SuPreMSwinUNETR"]

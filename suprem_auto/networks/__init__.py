"""Network construction from a plans ``architecture`` entry: ``build_network(architecture, in_ch, out_ch, ds)``."""
from __future__ import annotations

import inspect

from torch import nn

from suprem_auto.networks.groups import parameter_groups
from suprem_auto.networks.plain_unet import PlainConvUNet
from suprem_auto.networks.resenc_unet import ResidualEncoderUNet
from suprem_auto.networks.suprem_unet import UNet3D

# SegResNet and Swin UNETR come from MONAI, whose import costs seconds: they are imported when first used.
_LAZY = {"SuPreMSegResNet": "suprem_auto.networks.segresnet", "SuPreMSwinUNETR": "suprem_auto.networks.swin_unetr"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ARCHITECTURES = ("plain_unet", "suprem_unet", "segresnet", "swin_unetr", "resenc_unet")
_ALLOWED_KWARGS = {
    "plain_unet": {"n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                   "n_conv_per_stage_decoder"},
    "suprem_unet": {"base_width"},
    "segresnet": {"init_filters", "blocks_down", "blocks_up", "dropout_prob"},
    "swin_unetr": {"feature_size", "depths", "num_heads", "dropout_path_rate", "use_checkpoint", "patch_merging"},
    "resenc_unet": {"n_stages", "features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage",
                    "n_conv_per_stage_decoder"},
}


def build_network(architecture: dict, num_input_channels: int, num_outputs: int,
                  deep_supervision: bool) -> nn.Module:
    """Build the network named by ``architecture = {"name": ..., "kwargs": {...}}``.

    Only ``plain_unet`` and ``resenc_unet`` support deep supervision; the SuPreM backbones ignore the flag. Every returned module has a
    settable ``deep_supervision`` attribute and ``architecture_name``.
    """
    name = architecture.get("name")
    kwargs = dict(architecture.get("kwargs") or {})
    if name not in _ALLOWED_KWARGS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    unknown = sorted(set(kwargs) - _ALLOWED_KWARGS[name])
    if unknown:
        raise ValueError(f"architecture {name!r} does not take kwargs {unknown}")
    if name in ("plain_unet", "resenc_unet"):
        kwargs["deep_supervision"] = deep_supervision
    net: nn.Module = network_class(name)(num_input_channels, num_outputs, **kwargs)
    net.architecture_name = name
    return net


def network_class(name: str) -> type:
    """The module class of an architecture name (MONAI-based ones imported on first use)."""
    if name == "plain_unet":
        return PlainConvUNet
    if name == "suprem_unet":
        return UNet3D
    if name == "resenc_unet":
        return ResidualEncoderUNet
    if name == "segresnet":
        return __getattr__("SuPreMSegResNet")
    if name == "swin_unetr":
        return __getattr__("SuPreMSwinUNETR")
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")


# The width kwarg of each architecture and the multiple its values must be (SegResNet's GroupNorm has 8 groups;
# MONAI's Swin UNETR needs feature_size divisible by 12). Unset kwargs scale the constructor's default.
WIDTH_KWARGS = {"plain_unet": ("features_per_stage", 1), "resenc_unet": ("features_per_stage", 1), "segresnet": ("init_filters", 8),
                "suprem_unet": ("base_width", 4), "swin_unetr": ("feature_size", 12)}


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
    if name not in WIDTH_KWARGS:
        raise ValueError(f"--network_width {factor:g}: unknown architecture {name!r}")
    key, multiple = WIDTH_KWARGS[name]
    value = kwargs.get(key, inspect.signature(network_class(name)).parameters[key].default)
    if value is inspect.Parameter.empty:
        raise ValueError(f"--network_width {factor:g}: {name} needs {key} in its kwargs")
    kwargs[key] = ([_scaled(v, factor, multiple) for v in value] if isinstance(value, (list, tuple))
                   else _scaled(value, factor, multiple))
    return {**architecture, "kwargs": kwargs}


__all__ = ["ARCHITECTURES", "build_network", "network_class", "scale_width",
           "parameter_groups", "PlainConvUNet", "ResidualEncoderUNet", "UNet3D", "SuPreMSegResNet", "SuPreMSwinUNETR"]

"""Network construction from a plans ``architecture`` entry: ``build_network(architecture, in_ch, out_ch, ds)``."""
from __future__ import annotations

from torch import nn

from suprem_auto.networks.groups import parameter_groups
from suprem_auto.networks.plain_unet import PlainConvUNet, conv_feature_map_voxels
from suprem_auto.networks.suprem_unet import UNet3D

# SegResNet and Swin UNETR come from MONAI, whose import costs seconds: they are imported when first used.
_LAZY = {"SuPreMSegResNet": "suprem_auto.networks.segresnet", "SuPreMSwinUNETR": "suprem_auto.networks.swin_unetr"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ARCHITECTURES = ("plain_unet", "suprem_unet", "segresnet", "swin_unetr")
_ALLOWED_KWARGS = {
    "plain_unet": {"n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                   "n_conv_per_stage_decoder"},
    "suprem_unet": set(),
    "segresnet": {"init_filters", "blocks_down", "blocks_up", "dropout_prob"},
    "swin_unetr": {"feature_size", "depths", "num_heads", "dropout_path_rate", "use_checkpoint", "patch_merging"},
}


def build_network(architecture: dict, num_input_channels: int, num_outputs: int,
                  deep_supervision: bool) -> nn.Module:
    """Build the network named by ``architecture = {"name": ..., "kwargs": {...}}``.

    Only ``plain_unet`` supports deep supervision; the SuPreM backbones ignore the flag. Every returned module has a
    settable ``deep_supervision`` attribute and ``architecture_name``.
    """
    name = architecture.get("name")
    kwargs = dict(architecture.get("kwargs") or {})
    if name not in _ALLOWED_KWARGS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    unknown = sorted(set(kwargs) - _ALLOWED_KWARGS[name])
    if unknown:
        raise ValueError(f"architecture {name!r} does not take kwargs {unknown}")
    if name == "plain_unet":
        net: nn.Module = PlainConvUNet(num_input_channels, num_outputs, deep_supervision=deep_supervision, **kwargs)
    elif name == "suprem_unet":
        net = UNet3D(num_input_channels, num_outputs)
    elif name == "segresnet":
        from suprem_auto.networks.segresnet import SuPreMSegResNet

        net = SuPreMSegResNet(num_input_channels, num_outputs, **kwargs)
    else:
        from suprem_auto.networks.swin_unetr import SuPreMSwinUNETR

        net = SuPreMSwinUNETR(num_input_channels, num_outputs, **kwargs)
    net.architecture_name = name
    return net


def scale_width(architecture: dict, factor: float) -> dict:
    """The architecture with its feature widths multiplied by ``factor`` (each at least 4).

    Only ``plain_unet`` (features_per_stage) and ``segresnet`` (init_filters) have a free width; the SuPreM U-Net and
    Swin UNETR are fixed by their checkpoints, so a factor other than 1 raises ValueError for them.
    """
    if factor == 1:
        return architecture
    if factor <= 0:
        raise ValueError(f"network width factor must be > 0, got {factor}")
    name, kwargs = architecture.get("name"), dict(architecture.get("kwargs") or {})
    if name == "plain_unet" and "features_per_stage" in kwargs:
        kwargs["features_per_stage"] = [max(4, int(round(f * factor))) for f in kwargs["features_per_stage"]]
    elif name == "segresnet":
        kwargs["init_filters"] = max(4, int(round(kwargs.get("init_filters", 32) * factor)))
    else:
        raise ValueError(f"--network_width {factor:g}: architecture {name!r} has no adjustable width "
                         "(only plain_unet with features_per_stage, and segresnet)")
    return {**architecture, "kwargs": kwargs}


__all__ = ["ARCHITECTURES", "build_network", "scale_width", "conv_feature_map_voxels", "parameter_groups", "PlainConvUNet",
           "UNet3D", "SuPreMSegResNet", "SuPreMSwinUNETR"]

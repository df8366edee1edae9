"""Split a network's parameters into encoder / decoder / head groups (fine-tuning learning-rate policy, freezing)."""
from __future__ import annotations

from torch import nn

# Per architecture: (encoder prefixes, head prefixes); every other parameter belongs to the decoder.
GROUP_PREFIXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "plain_unet": (("encoder.",), ("decoder.seg_layers.",)),
    "resenc_unet": (("encoder.",), ("decoder.seg_layers.",)),
    "suprem_unet": (("down_tr",), ("out_tr.",)),
    "swin_unetr": (("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10."), ("out.",)),
    "segresnet": (("convInit.", "down_layers."), ("conv_final.2.",)),
}
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {k: v[1] for k, v in GROUP_PREFIXES.items()}


def architecture_of(net: nn.Module) -> str:
    """Architecture name of a network built by ``build_network`` (or one of our backbone classes)."""
    name = getattr(net, "architecture_name", None)
    if name in GROUP_PREFIXES:
        return name
    from suprem_auto.networks.plain_unet import PlainConvUNet
    from suprem_auto.networks.resenc_unet import ResidualEncoderUNet
    from suprem_auto.networks.segresnet import SuPreMSegResNet
    from suprem_auto.networks.suprem_unet import UNet3D
    from suprem_auto.networks.swin_unetr import SuPreMSwinUNETR
    for cls, arch in ((PlainConvUNet, "plain_unet"), (ResidualEncoderUNet, "resenc_unet"), (UNet3D, "suprem_unet"), (SuPreMSwinUNETR, "swin_unetr"),
                      (SuPreMSegResNet, "segresnet")):
        if isinstance(net, cls):
            return arch
    raise ValueError(f"cannot tell the architecture of {type(net).__name__}")


def group_of(architecture: str, param_name: str) -> str:
    """'encoder', 'decoder' or 'head' for a parameter name of the given architecture."""
    encoder, head = GROUP_PREFIXES[architecture]
    if param_name.startswith(head):
        return "head"
    if param_name.startswith(encoder):
        return "encoder"
    return "decoder"


def parameter_groups(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{"encoder": [...], "decoder": [...], "head": [...]}``; every parameter appears exactly once.

    For a ``UniversalModel`` the backbone is split as usual and the text-driven head counts as ``head``.
    """
    universal = hasattr(net, "organ_embedding") and hasattr(net, "backbone")
    arch = architecture_of(net.backbone if universal else net)
    groups: dict[str, list[nn.Parameter]] = {"encoder": [], "decoder": [], "head": []}
    for name, p in net.named_parameters():
        if universal:
            group = group_of(arch, name[len("backbone."):]) if name.startswith("backbone.") else "head"
        else:
            group = group_of(arch, name)
        groups[group].append(p)
    return groups

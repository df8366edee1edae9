"""The architecture registry: one :class:`Backbone` entry per network family, the single source every table reads.

``build_network``, width scaling, parameter groups (encoder / decoder / head), pre-trained loading (first layers
for channel adaptation, checkpoint layouts), the plans schema and the trainer registry all ask this module. Adding a
backbone is one :func:`register_backbone` call (plus a preset JSON if it has pinned preprocessing); entries may come
from outside the package. Other processes (the command-line tools) find outside entries through the entry-point
group ``suprem_auto.backbones`` (see ``docs/ARCHITECTURE.md``, "How to extend") or an imported ``-tr`` plugin module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, Union

if TYPE_CHECKING:  # the registry itself imports no torch: the plans schema reads it
    from torch import nn

ENTRY_POINT_GROUP = "suprem_auto.backbones"
Factory = Union[str, Callable[..., "nn.Module"]]


@dataclass(frozen=True)
class Backbone:
    """Everything the pipeline needs to know about one network family.

    ``factory``: a class or callable ``(num_input_channels, num_outputs, **kwargs) -> nn.Module``, or its import
    path ``"package.module:Name"`` (imported on first use). ``allowed_kwargs``: what a plans ``architecture.kwargs``
    may hold. ``width_arg`` / ``width_multiple``: the kwarg ``--network_width`` scales and the multiple its values
    are rounded to (None: not scalable). ``patch_divisor``: what every patch edge must be a multiple of (None: decided
    by the plans, e.g. the product of the strides). ``encoder_prefixes`` / ``head_prefixes``: parameter-name prefixes
    of the encoder and of the segmentation head; every other parameter is decoder. ``first_layers``: weights whose
    input-channel axis is adapted when a checkpoint had another channel count. ``layouts``: the checkpoint layouts
    (``pretrained/layouts.py``) holding this backbone, besides our own checkpoints; the first is the one of a bare
    state dict. ``checkpoint_keys`` / ``foreign_keys``: key prefixes that identify (or rule out) a bare state dict of
    this backbone. ``default_trainer``: the fine-tuning trainer made for it (a ``FineTuneTrainer`` with this
    backbone pinned), which ``-pretrained`` with its checkpoints picks; None: ``SupremTrainer`` with the plans'
    architecture. ``deep_supervision``: the constructor takes ``deep_supervision=``. ``short_budget_width``: the
    short-budget recipe may narrow it.
    """

    name: str
    factory: Factory
    allowed_kwargs: frozenset
    description: str = ""
    width_arg: Optional[str] = None
    width_multiple: int = 1
    patch_divisor: Optional[int] = None
    encoder_prefixes: Tuple[str, ...] = ()
    head_prefixes: Tuple[str, ...] = ()
    first_layers: Tuple[str, ...] = ()
    layouts: Tuple[str, ...] = ()
    checkpoint_keys: Tuple[str, ...] = ()
    foreign_keys: Tuple[str, ...] = ()
    default_trainer: Optional[str] = None
    deep_supervision: bool = False
    short_budget_width: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_kwargs", frozenset(self.allowed_kwargs))
        for field in ("encoder_prefixes", "head_prefixes", "first_layers", "layouts", "checkpoint_keys",
                      "foreign_keys"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise TypeError(f"Backbone {self.name!r}: {field} must be a tuple of strings, not one string")
            object.__setattr__(self, field, tuple(value))
        if self.width_arg is not None and self.width_arg not in self.allowed_kwargs:
            raise ValueError(f"Backbone {self.name!r}: width_arg {self.width_arg!r} is not in allowed_kwargs")

    def network_class(self) -> Callable[..., "nn.Module"]:
        """The class (or factory) that builds this backbone; an import path is imported now."""
        if not isinstance(self.factory, str):
            return self.factory
        module, _, attr = self.factory.partition(":")
        if not attr:
            raise ValueError(f"backbone {self.name!r}: factory {self.factory!r} must be 'package.module:Name'")
        return getattr(importlib.import_module(module), attr)

    def group_of(self, param_name: str) -> str:
        """'encoder', 'decoder' or 'head' for one of this backbone's parameter names."""
        if param_name.startswith(self.head_prefixes):
            return "head"
        if param_name.startswith(self.encoder_prefixes):
            return "encoder"
        return "decoder"

    def identifies(self, keys: list) -> bool:
        """Whether (prefix-stripped) state-dict keys look like this backbone's."""
        return (bool(self.checkpoint_keys) and any(k.startswith(self.checkpoint_keys) for k in keys)
                and not any(k.startswith(self.foreign_keys) for k in keys if self.foreign_keys))


_PLAIN_KWARGS = {"n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                 "n_conv_per_stage_decoder"}
_REGISTRY: Dict[str, Backbone] = {}
_entry_points_loaded = False


def register_backbone(backbone: Backbone, replace: bool = False) -> Backbone:
    """Add ``backbone`` to the registry (``replace``: overwrite an entry of the same name) and return it."""
    if not isinstance(backbone, Backbone):
        raise TypeError(f"register_backbone needs a Backbone, got {type(backbone).__name__}")
    if backbone.name in _REGISTRY and not replace and _REGISTRY[backbone.name] != backbone:
        raise ValueError(f"backbone {backbone.name!r} is already registered (pass replace=True to overwrite it)")
    _REGISTRY[backbone.name] = backbone
    return backbone


def unregister_backbone(name: str) -> None:
    """Remove an entry (e.g. one a test registered); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def load_entry_point_backbones() -> None:
    """Import what installed packages declare under the ``suprem_auto.backbones`` entry-point group, once.

    An entry point may name a :class:`Backbone` (registered here) or a module / function that registers its own."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must name itself, whatever it raised
            raise ValueError(f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP}: cannot load: "
                             f"{type(exc).__name__}: {exc}") from None
        if isinstance(obj, Backbone):
            register_backbone(obj)
        elif callable(obj) and not isinstance(obj, type):
            obj()


def get_backbone(name: object) -> Backbone:
    """The entry for an architecture name; unknown names (after the entry-point plugins) list the known ones."""
    if not isinstance(name, str):
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_REGISTRY)}")
    if name not in _REGISTRY:
        load_entry_point_backbones()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def backbone_names() -> Tuple[str, ...]:
    """Names of the registered backbones, in registration order."""
    return tuple(_REGISTRY)


def backbones() -> Tuple[Backbone, ...]:
    """The registered entries, in registration order."""
    return tuple(_REGISTRY.values())


def backbone_of_network(net: "nn.Module") -> Backbone:
    """The entry of a network built by ``build_network`` (its ``architecture_name``), else by its class."""
    name = getattr(net, "architecture_name", None)
    if name in _REGISTRY:
        return _REGISTRY[name]
    classes = [(entry, entry.network_class()) for entry in _REGISTRY.values()]
    for entry, cls in classes:
        if type(net) is cls:
            return entry
    for entry, cls in classes:
        if isinstance(cls, type) and isinstance(net, cls):
            return entry
    raise ValueError(f"cannot tell the architecture of {type(net).__name__}")


def backbone_of_checkpoint_keys(keys: list) -> Optional[str]:
    """The backbone whose ``checkpoint_keys`` the (prefix-stripped) keys match, or None."""
    for entry in _REGISTRY.values():
        if entry.identifies(keys):
            return entry.name
    return None


# The shipped backbones. SegResNet and Swin UNETR come from MONAI, whose import costs seconds: import paths keep
# them lazy. Width multiples: SegResNet's GroupNorm has 8 groups; MONAI's Swin UNETR needs feature_size % 12 == 0.
for _entry in (
    Backbone("plain_unet", "suprem_auto.networks.plain_unet:PlainConvUNet", _PLAIN_KWARGS,
             description="plain U-Net (nnU-Net PlainConvUNet)", width_arg="features_per_stage",
             encoder_prefixes=("encoder.",), head_prefixes=("decoder.seg_layers.",),
             first_layers=("encoder.stages.0.0.conv.weight",), layouts=("plain_unet_state_dict", "nnunet_v2"),
             checkpoint_keys=("encoder.stages.",), foreign_keys=("encoder.stem.",), deep_supervision=True,
             short_budget_width=True),
    Backbone("suprem_unet", "suprem_auto.networks.suprem_unet:UNet3D", {"base_width"},
             description="SuPreM U-Net", width_arg="base_width", width_multiple=4, patch_divisor=8,
             encoder_prefixes=("down_tr",), head_prefixes=("out_tr.",),
             first_layers=("down_tr64.ops.0.conv1.weight",),
             layouts=("unet3d_state_dict", "models_genesis", "suprem_universal"), checkpoint_keys=("down_tr64.",),
             default_trainer="SupremUNetTrainer"),
    Backbone("segresnet", "suprem_auto.networks.segresnet:SuPreMSegResNet",
             {"init_filters", "blocks_down", "blocks_up", "dropout_prob"},
             description="SuPreM SegResNet", width_arg="init_filters", width_multiple=8, patch_divisor=8,
             encoder_prefixes=("convInit.", "down_layers."), head_prefixes=("conv_final.2.",),
             first_layers=("convInit.conv.weight",), layouts=("segresnet_state_dict", "suprem_segresnet"),
             checkpoint_keys=("convInit.",), default_trainer="SegResNetTrainer", short_budget_width=True),
    Backbone("swin_unetr", "suprem_auto.networks.swin_unetr:SuPreMSwinUNETR",
             {"feature_size", "depths", "num_heads", "dropout_path_rate", "use_checkpoint", "patch_merging"},
             description="SuPreM Swin UNETR", width_arg="feature_size", width_multiple=12, patch_divisor=32,
             encoder_prefixes=("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10."),
             head_prefixes=("out.",),
             first_layers=("swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight",
                           "encoder1.layer.conv3.conv.weight"),
             layouts=("nv_swin_unetr_full", "nv_swin_ssl_encoder", "nv_swin_ssl_head", "dae_swin_unetr",
                      "suprem_universal"),
             checkpoint_keys=("swinViT.", "swin_vit.", "patch_embed.", "layers1.", "encoder.layers1.",
                              "encoder.patch_embed."),
             default_trainer="SwinUNETRTrainer"),
    Backbone("resenc_unet", "suprem_auto.networks.resenc_unet:ResidualEncoderUNet",
             _PLAIN_KWARGS - {"n_conv_per_stage"} | {"n_blocks_per_stage"},
             description="residual-encoder U-Net (nnU-Net ResidualEncoderUNet)", width_arg="features_per_stage",
             encoder_prefixes=("encoder.",), head_prefixes=("decoder.seg_layers.",),
             first_layers=("encoder.stem.convs.0.conv.weight",), layouts=("resenc_unet_state_dict", "nnunet_v2"),
             checkpoint_keys=("encoder.stem.",), deep_supervision=True, short_budget_width=True),
):
    register_backbone(_entry)
del _entry

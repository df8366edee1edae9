"""Recognise a checkpoint's layout from its keys and rename its tensors to our (MONAI / UNet3D) parameter names."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from suprem_auto.networks.registry import backbone_of_checkpoint_keys, get_backbone
from suprem_auto.pretrained.checkpoint_io import CheckpointError

UNIVERSAL_HEAD_PREFIXES = ("organ_embedding", "precls_conv.", "GAP.", "controller.", "text_to_vision.")

LAYOUT_DESCRIPTIONS = {
    "suprem_universal": "SuPreM / CLIP-Driven Universal Model release (backbone + text-driven head)",
    "suprem_segresnet": "SuPreM SegResNet release",
    "models_genesis": "Models Genesis U-Net (self-supervised)",
    "unet3d_state_dict": "UNet3D state dict",
    "nv_swin_unetr_full": "NVIDIA Swin UNETR full model (BTCV fine-tuned) / MONAI SwinUNETR state dict",
    "nv_swin_ssl_encoder": "NVIDIA Swin UNETR self-supervised encoder (model_swinvit.pt)",
    "nv_swin_ssl_head": "NVIDIA Swin UNETR SSLHead training output (swinViT + SSL heads)",
    "dae_swin_unetr": "DAE Swin UNETR pre-trained on 50,000 volumes (Valanarasu et al.)",
    "segresnet_state_dict": "MONAI SegResNet state dict",
    "suprem_auto_checkpoint": "suprem_auto trained model",
    "plain_unet_state_dict": "plain_unet state dict",
    "resenc_unet_state_dict": "resenc_unet state dict (nnU-Net ResidualEncoderUNet names)",
    "nnunet_v2": "nnU-Net v2 checkpoint (PlainConvUNet / ResidualEncoderUNet)",
}



def layout_description(layout: str) -> str:
    """What a layout is; a backbone's bare state dict (``<name>_state_dict``) needs no entry above."""
    if layout in LAYOUT_DESCRIPTIONS:
        return LAYOUT_DESCRIPTIONS[layout]
    return f"{layout[:-len('_state_dict')]} state dict" if layout.endswith("_state_dict") else layout


# Layouts whose file holds only the Swin encoder: decoder tensors stay randomly initialised.
ENCODER_ONLY_LAYOUTS = ("nv_swin_ssl_encoder", "nv_swin_ssl_head")


@dataclass
class Canonical:
    """A checkpoint renamed to our parameter names, plus what was dropped while renaming."""

    layout: str
    backbone: str
    tensors: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)  # original key -> reason
    key_form: str | None = None


def _has(keys: list[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def backbone_family(keys: list[str]) -> str | None:
    """Which registered architecture the (prefix-stripped) keys belong to (its ``checkpoint_keys``), or None."""
    return backbone_of_checkpoint_keys(keys)


def _detect(keys: list[str], family: str, top_keys: set[str], container: str | None) -> str:
    if {"network_weights", "trainer_name"} <= top_keys:
        return "suprem_auto_checkpoint"
    if _has(keys, *UNIVERSAL_HEAD_PREFIXES):
        return "suprem_universal"
    if family == "segresnet":
        return "suprem_segresnet" if container == "net" else "segresnet_state_dict"
    if family == "suprem_unet":
        return "models_genesis" if "optimizer_state_dict" in top_keys or container == "state_dict" else \
            "unet3d_state_dict"
    if family != "swin_unetr":  # a backbone's first layout is the one of its bare state dict
        return (get_backbone(family).layouts or (f"{family}_state_dict",))[0]
    if _has(keys, "encoder.layers1.0.0.", "encoder.patch_embed."):
        return "dae_swin_unetr"
    if _has(keys, "patch_embed.", "layers1."):
        return "nv_swin_ssl_encoder"
    if not _has(keys, "decoder1."):
        return "nv_swin_ssl_head"
    return "nv_swin_unetr_full"


_DAE_LAYER = re.compile(r"^encoder\.layers(\d)\.0\.0\.")
_DAE_EXTRA_CONV3 = re.compile(r"^encoder(2|3|4|10)\.layer\.conv3\.")


def _rename_swin(layout: str, key: str) -> tuple[str | None, str]:
    """New name for a Swin key (None = drop) and the reason when dropped."""
    if layout == "nv_swin_ssl_encoder":
        if key.startswith(("patch_embed.", "layers")):
            return "swinViT." + key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2."), ""
        return None, "not part of the Swin encoder (SSL norm / heads)"
    if layout == "nv_swin_ssl_head":
        if key.startswith("swin_vit."):
            key = "swinViT." + key[len("swin_vit."):]
        if key.startswith("swinViT."):
            return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2."), ""
        return None, "SSL head (rotation / contrastive / reconstruction)"
    if layout == "dae_swin_unetr":
        if key.startswith("encoder.patch_embed."):
            return "swinViT." + key[len("encoder."):], ""
        if _DAE_LAYER.match(key):
            return _DAE_LAYER.sub(lambda m: f"swinViT.layers{m.group(1)}.0.", key), ""
        if key.startswith(("encoder.mask_token", "encoder.norm.")):
            return None, "DAE pre-training only (mask token / final norm)"
        if _DAE_EXTRA_CONV3.match(key):
            return None, "MONAI 0.8 residual conv3 that current SwinUNETR does not have"
    return key, ""


def _nnunet_canonical(stripped: dict[str, torch.Tensor], top_keys: set[str], path: str) -> Canonical | None:
    """nnU-Net v2 names (its checkpoint, its aliases, or PlainConvUNet's ``convs``) renamed to ours; else None."""
    from suprem_auto.pretrained.nnunet_keys import from_nnunet_keys, nnunet_network_kind

    kind = nnunet_network_kind(stripped)
    nnunet_only = "init_args" in top_keys or any(".all_modules." in k or k.startswith("decoder.encoder.")
                                                 for k in stripped)
    if kind is None or (kind == "resenc_unet" and not nnunet_only):
        return None
    try:
        tensors, dropped = from_nnunet_keys(stripped, kind, path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return Canonical(layout="nnunet_v2", backbone=kind, tensors=tensors, dropped=dropped)


def canonicalise(stripped: dict[str, torch.Tensor], top_keys: set[str], container: str | None,
                 path: str, removed_prefixes: list[str], stored_architecture: str | None = None) -> Canonical:
    """Detect the layout of prefix-stripped tensors and rename them to our parameter names.

    ``stored_architecture``: the architecture name one of our own checkpoints records; it names the backbone (also
    one registered without ``checkpoint_keys``)."""
    keys = list(stripped)
    nnunet = _nnunet_canonical(stripped, top_keys, path)
    if nnunet is not None:
        return nnunet
    family = backbone_family(keys)
    if {"network_weights", "trainer_name"} <= top_keys and stored_architecture is not None:
        try:  # our own checkpoint says what it holds
            family = get_backbone(stored_architecture).name
        except ValueError as exc:
            raise CheckpointError(f"{path}: trained with an architecture not registered here: {exc}") from None
    if family is None:
        raise CheckpointError(f"{path}: unrecognised checkpoint layout (first keys: {keys[:4]})")
    layout = _detect(keys, family, top_keys, container)
    canon = Canonical(layout=layout, backbone=family, tensors={})
    if layout == "suprem_universal":
        canon.key_form = "backbone-prefixed" if "backbone." in removed_prefixes else "flat"
    for key, value in stripped.items():
        new, reason = _rename_swin(layout, key) if family == "swin_unetr" else (key, "")
        if new is None:
            canon.dropped[key] = reason
        else:
            canon.tensors[new] = value
    return canon


def num_classes_in(tensors: dict[str, torch.Tensor]) -> int | None:
    """Class count stored in the file: Universal embedding rows or the output conv's out channels."""
    for key in ("organ_embedding", "organ_embedding.weight", "out_tr.final_conv.weight", "out.conv.conv.weight",
                "conv_final.2.conv.weight"):
        if key in tensors:
            return int(tensors[key].shape[0])
    seg = sorted((k for k in tensors if k.startswith("decoder.seg_layers.") and k.endswith(".weight")),
                 key=lambda k: int(k.split(".")[2]))
    return int(tensors[seg[-1]].shape[0]) if seg else None

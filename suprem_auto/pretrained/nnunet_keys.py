"""nnU-Net v2 network state-dict names <-> ours.

nnU-Net's ``PlainConvUNet`` has our ``plain_unet`` structure; only the names differ:
``encoder.stages.<s>.0.convs.<i>.<conv|norm>.*`` -> ``encoder.stages.<s>.<i>.*`` and
``decoder.stages.<d>.convs.<i>.*`` -> ``decoder.stages.<d>.<i>.*``. Its ``ResidualEncoderUNet`` keeps its names
(our ``resenc_unet`` uses them). nnU-Net's state dicts also hold aliases of the same tensors
(``*.all_modules.<j>.*`` and ``decoder.encoder.*``); they are dropped.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Tuple

import torch

_ALIAS = re.compile(r"\.all_modules\.\d+\.")
_PLAIN_ENC = re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.convs\.(\d+)\.(.*)$")
_PLAIN_DEC = re.compile(r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.(.*)$")


def nnunet_network_kind(keys: Iterable[str]) -> Optional[str]:
    """``"resenc_unet"`` / ``"plain_unet"`` for nnU-Net-named keys (prefixes already stripped), else None."""
    keys = list(keys)
    if any(k.startswith("encoder.stem.convs.") or (k.startswith("encoder.stages.") and ".blocks." in k)
           for k in keys):
        return "resenc_unet"
    if any(_PLAIN_ENC.match(k) for k in keys):
        return "plain_unet"
    return None


def from_nnunet_keys(weights: Dict[str, torch.Tensor], kind: str, source: str = "checkpoint"
                     ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors under our names, {dropped nnU-Net key: reason}) for the network ``kind`` (plain_unet/resenc_unet).

    Raises ``ValueError`` naming ``source`` and the key for an encoder with separate pooling modules (nnU-Net's
    ``pool != 'conv'``), which our networks do not have.
    """
    out: Dict[str, torch.Tensor] = {}
    dropped: Dict[str, str] = {}
    for key, value in weights.items():
        if key.startswith("decoder.encoder."):
            dropped[key] = "alias of encoder.* (nnU-Net's decoder keeps a reference to the encoder)"
            continue
        if _ALIAS.search(key):
            dropped[key] = "alias of the same tensor under conv/norm (nnU-Net's all_modules)"
            continue
        new = key
        if kind == "plain_unet":
            enc = _PLAIN_ENC.match(key)
            dec = _PLAIN_DEC.match(key)
            if enc:
                stage, sub, conv, rest = enc.groups()
                if sub != "0":
                    raise ValueError(f"{source}: {key!r}: encoders with separate pooling layers are not supported")
                new = f"encoder.stages.{stage}.{conv}.{rest}"
            elif dec:
                stage, conv, rest = dec.groups()
                new = f"decoder.stages.{stage}.{conv}.{rest}"
        out[new] = value
    return out, dropped


def to_nnunet_keys(weights: Dict[str, torch.Tensor], kind: str) -> Dict[str, torch.Tensor]:
    """Our state dict under nnU-Net's primary names (no aliases): the inverse of :func:`from_nnunet_keys`."""
    if kind != "plain_unet":
        return dict(weights)
    out = {}
    for key, value in weights.items():
        parts = key.split(".")
        if key.startswith("encoder.stages."):
            key = ".".join(parts[:3] + ["0", "convs"] + parts[3:])
        elif key.startswith("decoder.stages."):
            key = ".".join(parts[:3] + ["convs"] + parts[3:])
        out[key] = value
    return out

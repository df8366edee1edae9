"""Synthetic checkpoints with the real container keys, prefixes, names, shapes and dtypes (random values).

Each builder returns ``(checkpoint_object, expected)`` where ``expected`` maps a *target network* parameter name to
the tensor in the file that must end up there. Names follow the research note (suprem.md section 2), written out
here independently of the loader's renaming code.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from monai.networks.nets import SegResNet, SwinUNETR

Shapes = "OrderedDict[str, tuple[tuple[int, ...], torch.dtype]]"


def _rand(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.int64:
        return torch.randint(0, 1000, shape, generator=gen, dtype=torch.int64)
    return torch.randn(shape, generator=gen).to(dtype)


def unet3d_backbone_shapes(in_channels: int = 1) -> Shapes:
    """The 104 UNet3D backbone entries (Models Genesis names), from the note's channel table."""
    shapes: "OrderedDict" = OrderedDict()

    def luconv(prefix: str, cin: int, cout: int) -> None:
        shapes[f"{prefix}.conv1.weight"] = ((cout, cin, 3, 3, 3), torch.float32)
        shapes[f"{prefix}.conv1.bias"] = ((cout,), torch.float32)
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn1.{n}"] = ((cout,), torch.float32)
        shapes[f"{prefix}.bn1.num_batches_tracked"] = ((), torch.int64)

    for name, (cin, mid, cout) in {"down_tr64": (in_channels, 32, 64), "down_tr128": (64, 64, 128),
                                   "down_tr256": (128, 128, 256), "down_tr512": (256, 256, 512)}.items():
        luconv(f"{name}.ops.0", cin, mid)
        luconv(f"{name}.ops.1", mid, cout)
    for name, (cin, cat, cout) in {"up_tr256": (512, 768, 256), "up_tr128": (256, 384, 128),
                                   "up_tr64": (128, 192, 64)}.items():
        shapes[f"{name}.up_conv.weight"] = ((cin, cin, 2, 2, 2), torch.float32)
        shapes[f"{name}.up_conv.bias"] = ((cin,), torch.float32)
        luconv(f"{name}.ops.0", cat, cout)
        luconv(f"{name}.ops.1", cout, cout)
    return shapes


def monai_state(module: torch.nn.Module, gen: torch.Generator, keep_buffers: tuple[str, ...] = ()) -> "OrderedDict":
    """Random tensors shaped like a MONAI module's state dict; buffers named in keep_buffers keep their values."""
    out: "OrderedDict" = OrderedDict()
    for k, v in module.state_dict().items():
        out[k] = v.clone() if k.endswith(keep_buffers) else _rand(tuple(v.shape), v.dtype, gen)
    return out


def swin_state(feature_size: int, out_channels: int, gen: torch.Generator) -> "OrderedDict":
    """Random MONAI SwinUNETR state dict (relative_position_index kept: it is deterministic in real files)."""
    net = SwinUNETR(in_channels=1, out_channels=out_channels, feature_size=feature_size)
    return monai_state(net, gen, keep_buffers=("relative_position_index",))


def universal_head_tensors(num_classes: int, feat: int, bottleneck: int, gen: torch.Generator) -> "OrderedDict":
    """The 12 Universal head tensors (word_embedding encoding) after the backbone, in file order."""
    shapes = [("precls_conv.0.weight", (feat,)), ("precls_conv.0.bias", (feat,)),
              ("precls_conv.2.weight", (8, feat, 1, 1, 1)), ("precls_conv.2.bias", (8,)),
              ("GAP.0.weight", (bottleneck,)), ("GAP.0.bias", (bottleneck,)),
              ("GAP.3.weight", (256, bottleneck, 1, 1, 1)), ("GAP.3.bias", (256,)),
              ("controller.weight", (153, 512, 1, 1, 1)), ("controller.bias", (153,)),
              ("text_to_vision.weight", (256, 512)), ("text_to_vision.bias", (256,))]
    return OrderedDict((k, _rand(s, torch.float32, gen) * 0.05) for k, s in shapes)


def _release(net: "OrderedDict") -> dict:
    return {"net": net, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 800},
            "epoch": 800}


def suprem_unet_release(gen: torch.Generator, num_classes: int = 32) -> tuple[dict, dict]:
    """supervised_suprem_unet_2100.pth: 117 entries (embedding, 104 module.backbone.*, 12 head)."""
    backbone = OrderedDict((k, _rand(s, d, gen)) for k, (s, d) in unet3d_backbone_shapes().items())
    net: "OrderedDict" = OrderedDict(
        [("module.organ_embedding", _rand((num_classes, 512), torch.float32, gen))])
    net.update((f"module.backbone.{k}", v) for k, v in backbone.items())
    head = universal_head_tensors(num_classes, 64, 512, gen)
    net.update((f"module.{k}", v) for k, v in head.items())
    return _release(net), dict(backbone)


def suprem_swin_release(gen: torch.Generator, feature_size: int = 48, num_classes: int = 32,
                        flat: bool = False) -> tuple[dict, dict]:
    """supervised_suprem_swinunetr_2100.pth (``module.backbone.``) or the Universal Model flat form (``module.``)."""
    state = swin_state(feature_size, 14, gen)
    backbone = OrderedDict((k, v) for k, v in state.items() if not k.startswith("out."))
    prefix = "module." if flat else "module.backbone."
    net: "OrderedDict" = OrderedDict(
        [("module.organ_embedding", _rand((num_classes, 512), torch.float32, gen))])
    net.update((prefix + k, v) for k, v in backbone.items())
    head = universal_head_tensors(num_classes, feature_size, 16 * feature_size, gen)
    net.update((f"module.{k}", v) for k, v in head.items())
    return _release(net), dict(backbone)


def suprem_segresnet_release(gen: torch.Generator, num_classes: int = 32) -> tuple[dict, dict]:
    """supervised_suprem_segresnet_2100.pth: 83 ``module.`` keys, conv_final.2.conv.weight (C,16,1,1,1)."""
    ref = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=1,
                    out_channels=num_classes)
    state = monai_state(ref, gen)
    expected = {k: v for k, v in state.items() if not k.startswith("conv_final.2.")}
    return _release(OrderedDict((f"module.{k}", v) for k, v in state.items())), expected


def genesis(gen: torch.Generator) -> tuple[dict, dict]:
    """Genesis_Chest_CT.pt: {'epoch','state_dict','optimizer_state_dict'}, module.<104> + 1-class out_tr."""
    backbone = OrderedDict((k, _rand(s, d, gen)) for k, (s, d) in unet3d_backbone_shapes().items())
    sd: "OrderedDict" = OrderedDict((f"module.{k}", v) for k, v in backbone.items())
    sd["module.out_tr.final_conv.weight"] = _rand((1, 64, 1, 1, 1), torch.float32, gen)
    sd["module.out_tr.final_conv.bias"] = _rand((1,), torch.float32, gen)
    return {"epoch": 620, "state_dict": sd, "optimizer_state_dict": {}}, dict(backbone)


def nv_swinvit(gen: torch.Generator, feature_size: int = 12) -> tuple[dict, dict]:
    """model_swinvit.pt (SSL encoder): module.patch_embed / layersK with mlp.fc1/fc2, norm, SSL heads."""
    state = swin_state(feature_size, 14, gen)
    sd: "OrderedDict" = OrderedDict()
    expected = {}
    for k, v in state.items():
        if k.startswith("swinViT."):
            src = "module." + k[len("swinViT."):].replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.",
                                                                                                ".mlp.fc2.")
            sd[src] = v
            expected[k] = v
    width = 16 * feature_size
    sd["module.norm.weight"] = _rand((width,), torch.float32, gen)
    sd["module.norm.bias"] = _rand((width,), torch.float32, gen)
    sd["module.rotation_head.weight"] = _rand((4, width), torch.float32, gen)
    sd["module.rotation_head.bias"] = _rand((4,), torch.float32, gen)
    return {"state_dict": sd}, expected


def nv_sslhead(gen: torch.Generator, feature_size: int = 12, old_name: bool = True) -> tuple[dict, dict]:
    """SSLHead training output: module.swin_vit.* (older code) or module.swinViT.*, plus SSL heads."""
    state = swin_state(feature_size, 14, gen)
    sd: "OrderedDict" = OrderedDict()
    expected = {}
    for k, v in state.items():
        if k.startswith("swinViT."):
            sd["module." + ("swin_vit." + k[len("swinViT."):] if old_name else k)] = v
            expected[k] = v
    width = 16 * feature_size
    sd["module.rotation_head.weight"] = _rand((4, width), torch.float32, gen)
    sd["module.contrastive_head.weight"] = _rand((512, width), torch.float32, gen)
    sd["module.conv.0.weight"] = _rand((width // 2, width, 3, 3, 3), torch.float32, gen)
    return {"state_dict": sd}, expected


def nv_btcv(gen: torch.Generator, feature_size: int = 12) -> tuple[dict, dict]:
    """swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt: {'epoch','best_acc'(numpy),'state_dict'} MONAI names."""
    state = swin_state(feature_size, 14, gen)
    expected = {k: v for k, v in state.items() if not k.startswith("out.")}
    return {"epoch": 5000, "best_acc": np.float64(0.8123), "state_dict": state}, expected


def dae_50000(gen: torch.Generator, feature_size: int = 12) -> tuple[dict, dict]:
    """DAE ssl_pretrained_weights.pth: {'model': encoder.patch_embed, encoder.layersK.0.0.*, mask_token, norm,
    extra MONAI 0.8 conv3 keys, MONAI-named decoder, out.*}."""
    state = swin_state(feature_size, 14, gen)
    sd: "OrderedDict" = OrderedDict()
    expected = {}
    for k, v in state.items():
        if k.startswith("swinViT.patch_embed."):
            sd["encoder." + k[len("swinViT."):]] = v
        elif k.startswith("swinViT.layers"):
            layer, rest = k[len("swinViT."):].split(".0.", 1)
            sd[f"encoder.{layer}.0.0.{rest}"] = v
        else:
            sd[k] = v
        if not k.startswith("out."):
            expected[k] = v
    sd["encoder.mask_token"] = _rand((1, 1, feature_size), torch.float32, gen)
    sd["encoder.norm.weight"] = _rand((16 * feature_size,), torch.float32, gen)
    sd["encoder.norm.bias"] = _rand((16 * feature_size,), torch.float32, gen)
    for name, width in (("encoder2", feature_size), ("encoder3", 2 * feature_size), ("encoder4", 4 * feature_size),
                        ("encoder10", 16 * feature_size)):
        sd[f"{name}.layer.conv3.conv.weight"] = _rand((width, width, 1, 1, 1), torch.float32, gen)
    return {"model": sd}, expected

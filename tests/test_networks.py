"""Backbones: published parameter counts, SuPreM-specific behaviour, plain_unet structure, parameter groups,
and the Universal Model head for direct inference."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import pretrained_fixtures as fx
from suprem_auto.networks import build_network, parameter_groups
from suprem_auto.networks.suprem_unet import ContBatchNorm3d
from suprem_auto.networks.swin_unetr import PatchMergingV090
from suprem_auto.networks.universal_head import UniversalModel
from suprem_auto.pretrained import label_names_for, load_pretrained

PLAIN = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3],
                                                                                 [3, 3, 3]],
         "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 1}


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _build(name: str, out: int, in_ch: int = 1, ds: bool = False, **kwargs) -> nn.Module:
    return build_network({"name": name, "kwargs": kwargs}, in_ch, out, ds)


@pytest.mark.parametrize("name, out, expected", [
    ("suprem_unet", 1, 19_073_665), ("suprem_unet", 25, 19_075_225), ("suprem_unet", 32, 19_075_680),
    ("segresnet", 32, 4_701_424), ("segresnet", 25, 4_701_305),
    ("swin_unetr", 14, 62_187_296), ("swin_unetr", 32, 62_188_178)])
def test_published_parameter_counts(name, out, expected):
    assert _count(_build(name, out)) == expected


def test_backbone_counts_without_heads():
    from suprem_auto.networks import SuPreMSwinUNETR, UNet3D
    assert _count(UNet3D(1, None)) == 19_073_600
    swin = SuPreMSwinUNETR(1, None)
    assert _count(swin) == 62_186_610 and len(swin.state_dict()) == 157


def test_patch_merging_uses_monai_090_order():
    c = 3
    merge = PatchMergingV090(dim=c)
    merge.norm, merge.reduction = nn.Identity(), nn.Identity()
    x = torch.arange(8 * c, dtype=torch.float32).reshape(1, 2, 2, 2, c)
    out = merge(x)[0, 0, 0, 0]
    order = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]
    for i, (d, h, w) in enumerate(order):
        assert torch.equal(out[i * c:(i + 1) * c], x[0, d, h, w]), i
    swin = _build("swin_unetr", 2, feature_size=12)
    assert all(isinstance(getattr(swin.swinViT, f"layers{k}")[0].downsample, PatchMergingV090) for k in range(1, 5))


def test_swin_and_segresnet_forward_small_inputs():
    swin = _build("swin_unetr", 3, feature_size=12).eval()
    with torch.no_grad():
        assert swin(torch.randn(1, 1, 64, 64, 64)).shape == (1, 3, 64, 64, 64)
        with pytest.raises(ValueError, match="divisible by 32"):
            swin(torch.randn(1, 1, 64, 64, 48))
        seg = _build("segresnet", 4).eval()
        assert seg(torch.randn(1, 1, 16, 24, 32)).shape == (1, 4, 16, 24, 32)


def test_unet_batchnorm_uses_batch_statistics_in_eval():
    net = _build("suprem_unet", 2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        before = net(x)
        for m in net.modules():
            if isinstance(m, ContBatchNorm3d):
                m.running_mean.fill_(123.0)
                m.running_var.fill_(1e-4)
        after = net(x)
    torch.testing.assert_close(before, after)
    bn = ContBatchNorm3d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        y = torch.randn(2, 3, 4, 4, 4) * 3 + 5
        mean = y.mean(dim=(0, 2, 3, 4), keepdim=True)
        var = y.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
        manual = (y - mean) / torch.sqrt(var + 1e-5) * bn.weight.view(1, 3, 1, 1, 1) + bn.bias.view(1, 3, 1, 1, 1)
        torch.testing.assert_close(bn(y), manual, rtol=1e-4, atol=1e-4)


def test_plain_unet_deep_supervision_and_switch():
    net = _build("plain_unet", 3, in_ch=2, ds=True, **PLAIN)
    outs = net(torch.randn(2, 2, 8, 16, 16))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 16, 16), (2, 3, 8, 8, 8), (2, 3, 4, 4, 4)]
    net.deep_supervision = False
    assert net(torch.randn(1, 2, 8, 16, 16)).shape == (1, 3, 8, 16, 16)


def test_plain_unet_2d_parameter_count():
    arch = {"n_stages": 2, "features_per_stage": [4, 8], "kernel_sizes": [[3, 3], [3, 3]],
            "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [2, 2], "n_conv_per_stage_decoder": [1]}
    net = _build("plain_unet", 3, in_ch=1, **arch)
    conv = lambda cin, cout, k: cin * cout * k + cout + 2 * cout  # conv + affine InstanceNorm
    expected = (conv(1, 4, 9) + conv(4, 4, 9) + conv(4, 8, 9) + conv(8, 8, 9)  # encoder
                + (8 * 4 * 4 + 4) + conv(8, 4, 9) + (4 * 3 + 3))  # transposed conv, decoder conv, seg layer
    assert _count(net) == expected
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    assert isinstance(net.encoder.stages[0][0].norm, nn.InstanceNorm2d) and net.encoder.stages[0][0].norm.affine


@pytest.mark.parametrize("name, kwargs, head, first", [
    ("plain_unet", PLAIN, "decoder.seg_layers.", "encoder.stages.0.0.conv.weight"),
    ("suprem_unet", {}, "out_tr.", "down_tr64.ops.0.conv1.weight"),
    ("segresnet", {}, "conv_final.2.", "convInit.conv.weight"),
    ("swin_unetr", {"feature_size": 12}, "out.", "swinViT.patch_embed.proj.weight")])
def test_parameter_groups_partition(name, kwargs, head, first):
    net = _build(name, 3, **kwargs)
    groups = parameter_groups(net)
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in groups["head"]} == {n for n in names.values() if n.startswith(head)}
    assert first in {names[id(p)] for p in groups["encoder"]}
    assert groups["decoder"]


def test_build_network_rejects_unknown():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network({"name": "resnet"}, 1, 2, False)
    with pytest.raises(ValueError, match="does not take kwargs"):
        build_network({"name": "segresnet", "kwargs": {"features": 3}}, 1, 2, False)


def _reference_dynamic_heads(model: UniversalModel, x: torch.Tensor) -> torch.Tensor:
    """Independent per-class computation of the Universal head with explicit matrices."""
    bottleneck, decoded = model.backbone.forward_features(x)
    task = torch.relu(model.organ_embedding @ model.text_to_vision.weight.T + model.text_to_vision.bias)
    image = model.GAP(bottleneck).flatten(1)  # (B, 256)
    feats = model.precls_conv(decoded)  # (B, 8, D, H, W)
    ctrl_w = model.controller.weight.flatten(1)
    out = torch.empty(x.shape[0], model.num_classes, *feats.shape[2:])
    for b in range(x.shape[0]):
        for c in range(model.num_classes):
            p = ctrl_w @ torch.cat([image[b], task[c]]) + model.controller.bias
            w1, w2, w3 = p[:64].view(8, 8), p[64:128].view(8, 8), p[128:136].view(1, 8)
            b1, b2, b3 = p[136:144], p[144:152], p[152:153]
            h = torch.relu(torch.einsum("oi,idhw->odhw", w1, feats[b]) + b1[:, None, None, None])
            h = torch.relu(torch.einsum("oi,idhw->odhw", w2, h) + b2[:, None, None, None])
            out[b, c] = (torch.einsum("oi,idhw->odhw", w3, h) + b3[:, None, None, None])[0]
    return torch.sigmoid(out)


def test_universal_unet_direct_inference(tmp_path):
    obj, expected = fx.suprem_unet_release(torch.Generator().manual_seed(1))
    path = tmp_path / "supervised_suprem_unet_2100.pth"
    torch.save(obj, path)
    model = UniversalModel("suprem_unet", 32)
    report = load_pretrained(model, "suprem_unet", path)
    assert len(report.loaded) == 117 and not report.reinitialised and not report.ignored
    assert report.label_map == "universal_32" and label_names_for(32)[0] == "spleen"
    assert torch.equal(model.organ_embedding, obj["net"]["module.organ_embedding"])
    assert torch.equal(model.controller.weight, obj["net"]["module.controller.weight"])
    groups = parameter_groups(model)
    assert len(groups["head"]) == 12 and sum(map(len, groups.values())) == len(list(model.parameters()))
    with torch.no_grad():
        for m in model.modules():  # random pretend-weights: keep activations in a sane range
            if isinstance(m, nn.Conv3d) and m.weight.shape[1] > 8:
                m.weight.mul_(0.05)
        x = torch.randn(2, 1, 16, 16, 16)
        y = model.eval()(x)
        assert y.shape == (2, 32, 16, 16, 16) and y.min() >= 0 and y.max() <= 1
        torch.testing.assert_close(y, _reference_dynamic_heads(model, x), rtol=1e-4, atol=1e-5)


def test_universal_swin_loads_all_170_and_refuses_other_class_count(tmp_path):
    obj, _ = fx.suprem_swin_release(torch.Generator().manual_seed(2), feature_size=48, num_classes=25)
    path = tmp_path / "supervised_suprem_swinunetr_2100.pth"
    torch.save(obj, path)
    model = UniversalModel("swin_unetr", 25)
    report = load_pretrained(model, "swin_unetr", path)
    assert len(report.loaded) == 170 and report.label_map == "abdomenatlas_1.1"
    assert label_names_for(25)[0] == "aorta"
    from suprem_auto.pretrained import CheckpointError
    with pytest.raises(CheckpointError, match="organ_embedding"):
        load_pretrained(UniversalModel("swin_unetr", 32), "swin_unetr", path)

"""Checkpoint loading: every layout of the research note, built as a synthetic file, loaded through the public API."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained_fixtures as fx
from suprem_auto.networks import build_network
from suprem_auto.networks.universal_head import UniversalModel
from suprem_auto.pretrained import (CheckpointError, PretrainedNotFound, UnsafeCheckpointError, load_pretrained,
                                    load_zoo, preprocessing_differences, resolve_pretrained)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _net(name: str, out: int = 5, in_ch: int = 1, **kwargs) -> torch.nn.Module:
    return build_network({"name": name, "kwargs": kwargs}, in_ch, out, False)


def _load(net, backbone, path, tmp_path, **kw):
    ckpt, entry = resolve_pretrained(path)
    assert ckpt == path
    return load_pretrained(net, backbone, ckpt, report_path=tmp_path / "load_report.json", **kw)


def _assert_mapped(net: torch.nn.Module, expected: dict, prefix: str = "") -> None:
    state = net.state_dict()
    for key, src in expected.items():
        assert torch.equal(state[prefix + key], src), key


def test_suprem_unet_release(tmp_path, gen):
    obj, expected = fx.suprem_unet_release(gen)
    assert len(obj["net"]) == 117
    path = _save(obj, tmp_path / "supervised_suprem_unet_2100.pth")
    net = _net("suprem_unet", out=4)
    head_before = net.out_tr.final_conv.weight.detach().clone()
    report = _load(net, "suprem_unet", path, tmp_path)
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (104, 104)
    assert report.layout == "suprem_universal" and report.num_classes_in_file == 32
    assert report.label_map == "universal_32"
    assert set(report.reinitialised) == {"out_tr.final_conv.weight", "out_tr.final_conv.bias"}
    assert len(report.ignored) == 13  # organ_embedding + 12 Universal head tensors
    _assert_mapped(net, expected)
    assert torch.equal(net.out_tr.final_conv.weight, head_before)
    on_disk = json.loads((tmp_path / "load_report.json").read_text())
    assert on_disk["backbone_tensors_loaded"] == 104 and on_disk["groups"]["down_tr64"]["loaded"] == 14
    assert "104/104" in report.summary()


def test_suprem_swin_release_real_size_and_wrong_feature_size(tmp_path, gen):
    obj, expected = fx.suprem_swin_release(gen, feature_size=48)
    assert len(obj["net"]) == 170
    path = _save(obj, tmp_path / "supervised_suprem_swinunetr_2100.pth")
    net = _net("swin_unetr", out=3)
    report = _load(net, "swin_unetr", path, tmp_path)
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (157, 157)
    assert report.key_form == "backbone-prefixed"
    assert set(report.reinitialised) == {"out.conv.conv.weight", "out.conv.conv.bias"}
    _assert_mapped(net, expected)
    small = _net("swin_unetr", out=3, feature_size=24)
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'swinViT\.patch_embed\.proj\.weight'"):
        load_pretrained(small, "swin_unetr", path)


def test_universal_swin_flat_form(tmp_path, gen):
    obj, expected = fx.suprem_swin_release(gen, feature_size=12, flat=True)
    assert any(k.startswith("module.swinViT.") for k in obj["net"])
    path = _save(obj, tmp_path / "supervised_clip_driven_universal_swin_unetr_2100.pth")
    net = _net("swin_unetr", out=3, feature_size=12)
    report = _load(net, "swin_unetr", path, tmp_path)
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (157, 157)
    assert report.key_form == "flat"
    _assert_mapped(net, expected)


def test_suprem_segresnet_release(tmp_path, gen):
    obj, expected = fx.suprem_segresnet_release(gen)
    assert len(obj["net"]) == 83
    path = _save(obj, tmp_path / "supervised_suprem_segresnet_2100.pth")
    net = _net("segresnet", out=7)
    report = _load(net, "segresnet", path, tmp_path)
    assert len(report.loaded) == 81 and report.backbone_tensors_total == 81
    assert set(report.reinitialised) == {"conv_final.2.conv.weight", "conv_final.2.conv.bias"}
    assert report.num_classes_in_file == 32
    _assert_mapped(net, expected)  # conv_final.0 GroupNorm is kept


def test_head_loaded_only_when_asked_and_shapes_match(tmp_path, gen):
    obj, expected = fx.suprem_segresnet_release(gen, num_classes=32)
    path = _save(obj, tmp_path / "seg.pth")
    net = _net("segresnet", out=32)
    report = load_pretrained(net, "segresnet", path, allow_head=True)
    assert len(report.loaded) == 83 and not report.reinitialised
    assert torch.equal(net.conv_final[2].conv.weight, obj["net"]["module.conv_final.2.conv.weight"])


def test_models_genesis(tmp_path, gen):
    obj, expected = fx.genesis(gen)
    path = _save(obj, tmp_path / "self_supervised_models_genesis_unet_620.pt")
    net = _net("suprem_unet", out=2)
    report = _load(net, "suprem_unet", path, tmp_path)
    assert report.layout == "models_genesis" and report.num_classes_in_file == 1
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (104, 104)
    _assert_mapped(net, expected)


@pytest.mark.parametrize("builder, layout", [(fx.nv_swinvit, "nv_swin_ssl_encoder"),
                                             (fx.nv_sslhead, "nv_swin_ssl_head")])
def test_nv_encoder_only_layouts(tmp_path, gen, builder, layout):
    obj, expected = builder(gen)
    path = _save(obj, tmp_path / "model_swinvit.pt")
    net = _net("swin_unetr", out=3, feature_size=12)
    report = _load(net, "swin_unetr", path, tmp_path)
    assert report.layout == layout
    assert report.backbone_tensors_loaded == 126 and len(expected) == 126
    random = [k for k, why in report.reinitialised.items() if why.startswith("random")]
    assert len(random) == 31 and not any(k.startswith("swinViT.") for k in random)
    assert any("rotation_head" in k for k in report.ignored)
    _assert_mapped(net, expected)


def test_nv_btcv_with_numpy_best_acc(tmp_path, gen):
    obj, expected = fx.nv_btcv(gen)
    assert len(obj["state_dict"]) == 159
    path = _save(obj, tmp_path / "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt")
    net = _net("swin_unetr", out=3, feature_size=12)
    report = _load(net, "swin_unetr", path, tmp_path)
    assert report.layout == "nv_swin_unetr_full" and report.num_classes_in_file == 14
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (157, 157)
    _assert_mapped(net, expected)


def test_dae_50000(tmp_path, gen):
    obj, expected = fx.dae_50000(gen)
    path = _save(obj, tmp_path / "self_supervised_nv_swin_unetr_50000.pth")
    net = _net("swin_unetr", out=3, feature_size=12)
    report = _load(net, "swin_unetr", path, tmp_path)
    assert report.layout == "dae_swin_unetr"
    assert (report.backbone_tensors_loaded, report.backbone_tensors_total) == (157, 157)
    assert {"encoder.mask_token", "encoder.norm.weight", "encoder2.layer.conv3.conv.weight"} <= set(report.ignored)
    _assert_mapped(net, expected)


def test_safetensors_and_own_checkpoint(tmp_path, gen):
    from safetensors.torch import save_file
    arch = {"n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 1}
    trained = _net("plain_unet", out=3, **arch)
    ckpt = {"network_weights": trained.state_dict(), "trainer_name": "Trainer", "epoch": 3}
    path = _save(ckpt, tmp_path / "checkpoint_final.pth")
    same = _net("plain_unet", out=3, **arch)
    report = load_pretrained(same, "plain_unet", path)
    assert report.layout == "suprem_auto_checkpoint" and not report.reinitialised
    _assert_mapped(same, trained.state_dict())
    other = _net("plain_unet", out=5, **arch)
    report = load_pretrained(other, "plain_unet", path)
    assert set(report.reinitialised) == {f"decoder.seg_layers.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    st = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(st))
    again = _net("plain_unet", out=3, **arch)
    assert load_pretrained(again, "plain_unet", st, allow_head=True).reinitialised == {}
    _assert_mapped(again, trained.state_dict())


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        load_pretrained(_net("segresnet"), "segresnet", path)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as f:  # a plain pickle (not a torch zip) too
        pickle.dump(_RunsCode(marker), f)
    with pytest.raises(CheckpointError):
        load_pretrained(_net("segresnet"), "segresnet", tmp_path / "plain.pkl")
    assert not marker.exists()


def test_other_backbone_refused_naming_layout(tmp_path, gen):
    obj, _ = fx.suprem_unet_release(gen)
    path = _save(obj, tmp_path / "unet.pth")
    with pytest.raises(CheckpointError, match="suprem_unet checkpoint.*suprem_universal.*network is segresnet"):
        load_pretrained(_net("segresnet"), "segresnet", path)


def test_truncated_file(tmp_path, gen):
    obj, _ = fx.genesis(gen)
    path = _save(obj, tmp_path / "genesis.pt")
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*truncated"):
        load_pretrained(_net("suprem_unet"), "suprem_unet", cut)


def test_missing_backbone_key_is_named(tmp_path, gen):
    obj, _ = fx.genesis(gen)
    del obj["state_dict"]["module.up_tr64.ops.1.bn1.running_var"]
    path = _save(obj, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="up_tr64.ops.1.bn1.running_var"):
        load_pretrained(_net("suprem_unet"), "suprem_unet", path)


@pytest.mark.parametrize("name, first", [("suprem_unet", "down_tr64.ops.0.conv1.weight"),
                                         ("segresnet", "convInit.conv.weight")])
def test_two_input_channels_preserve_channel_sum(tmp_path, gen, name, first):
    obj, expected = (fx.genesis if name == "suprem_unet" else fx.suprem_segresnet_release)(gen)
    path = _save(obj, tmp_path / "ckpt.pth")
    net = _net(name, in_ch=2)
    report = load_pretrained(net, name, path)
    assert first in report.adapted
    w = net.state_dict()[first]
    assert w.shape[1] == 2
    torch.testing.assert_close(w.sum(1, keepdim=True), expected[first])
    torch.testing.assert_close(w[:, 0], w[:, 1])


def test_swin_two_channels_adapt_all_first_layers(tmp_path, gen):
    obj, expected = fx.nv_btcv(gen)
    path = _save(obj, tmp_path / "btcv.pt")
    net = _net("swin_unetr", in_ch=2, feature_size=12)
    report = load_pretrained(net, "swin_unetr", path)
    assert set(report.adapted) == {"swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight",
                                   "encoder1.layer.conv3.conv.weight"}
    for key in report.adapted:
        torch.testing.assert_close(net.state_dict()[key].sum(1, keepdim=True), expected[key])


def test_resolve_by_name_and_missing_file(tmp_path):
    with pytest.raises(PretrainedNotFound, match="supervised_suprem_unet_2100.pth.*github.com/MrGiovanni/SuPreM"):
        resolve_pretrained("suprem_unet", env={})
    (tmp_path / "supervised_suprem_segresnet_2100.pth").write_bytes(b"x")
    path, entry = resolve_pretrained("suprem_segresnet", env={"SUPREM_WEIGHTS": str(tmp_path)})
    assert path == tmp_path / "supervised_suprem_segresnet_2100.pth" and entry.backbone == "segresnet"
    path, entry = resolve_pretrained("suprem_segresnet", weights_dir=tmp_path, env={})
    assert entry.plans_preset == "suprem_segresnet"
    with pytest.raises(PretrainedNotFound, match="not a zoo name"):
        resolve_pretrained(tmp_path / "nope.pth", env={})


def test_zoo_lists_readme_checkpoints():
    zoo = load_zoo()
    files = {e.file_name for e in zoo.values()}
    assert {"supervised_suprem_unet_2100.pth", "supervised_suprem_swinunetr_2100.pth",
            "supervised_suprem_segresnet_2100.pth", "self_supervised_models_genesis_unet_620.pt",
            "self_supervised_nv_swin_unetr_5050.pt", "self_supervised_nv_swin_unetr_50000.pth",
            "supervised_clip_driven_universal_swin_unetr_2100.pth",
            "supervised_clip_driven_universal_unet_2100.pth"} <= files
    for e in zoo.values():
        if e.loadable:
            assert e.backbone in ("suprem_unet", "swin_unetr", "segresnet") and e.plans_preset


def _plans(scheme: str, spacing: list[float], ras: bool, params: dict | None = None, channels: int = 1) -> dict:
    norm = [{"scheme": scheme, "use_mask": False, "params": params or {}}] * channels
    return {"reorient_to_ras": ras, "configurations": {"3d_fullres": {"spacing": spacing, "normalization": norm}}}


def test_preprocessing_differences():
    entry = load_zoo()["suprem_unet"]
    match = _plans("window", [1.5, 1.5, 1.5], True, {"lower": -175, "upper": 250, "out_min": 0, "out_max": 1})
    assert preprocessing_differences(entry, match) == []
    diffs = preprocessing_differences(entry, _plans("zscore", [3.0, 1.0, 1.0], False, channels=2))
    kinds = sorted(d.split(":")[0] for d in diffs)
    assert kinds == ["channels", "modality", "orientation", "spacing", "window"]
    other_window = _plans("window", [1.5, 1.5, 1.5], True, {"lower": -250, "upper": 250, "out_min": 0, "out_max": 1})
    assert [d.split(":")[0] for d in preprocessing_differences(entry, other_window)] == ["window"]


def test_list_pretrained_cli(capsys):
    from suprem_auto.cli.list_pretrained import main
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "suprem_swinunetr" in out and "supervised_suprem_segresnet_2100.pth" in out and "62.19M" in out
    assert "unimiss" not in out
    main(["--all", "--json"])
    assert any(e["name"] == "unimiss_tiny" for e in json.loads(capsys.readouterr().out))

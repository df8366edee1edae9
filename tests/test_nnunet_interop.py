"""nnU-Net v2 interoperability: its model folders predict through suprem_predict -m, its checkpoints fine-tune."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunet_fixtures as fx
from conftest import HIPPO, hippo_cases, hippo_image

from suprem_auto.cli.predict import main as predict_main
from suprem_auto.networks import build_network
from suprem_auto.pretrained import CheckpointError, UnsafeCheckpointError, load_pretrained


def _dataset_json(n_channels: int = 1) -> dict:
    ds = json.loads((HIPPO / "dataset.json").read_text())
    ds["channel_names"] = {str(c): "MRI" for c in range(n_channels)}
    return ds


def _inputs(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    for case in hippo_cases(n):
        shutil.copy(hippo_image(case), folder)
    return folder


def _our_network(kind: str, n_classes: int, n_channels: int = 1, features=(8, 16, 32)) -> torch.nn.Module:
    kw = fx.arch_kwargs(kind, features)
    name = "resenc_unet" if kind == "resenc" else "plain_unet"
    keys = ["n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage_decoder",
            "n_blocks_per_stage" if kind == "resenc" else "n_conv_per_stage"]
    return build_network({"name": name, "kwargs": {k: kw[k] for k in keys}}, n_channels, n_classes, False)


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_nnunet_model_folder_predicts_in_input_geometry(tmp_path, kind, capsys):
    folder = fx.model_folder(tmp_path / "results", kind, _dataset_json())
    (folder / "crossval_results_folds_0").mkdir()
    (folder / "crossval_results_folds_0" / "postprocessing.pkl").write_bytes(b"not unpickled")
    inputs = _inputs(tmp_path, 2)
    out = tmp_path / "out"
    rc = predict_main(["-m", str(folder), "-i", str(inputs), "-o", str(out), "--disable_tta",
                       "--disable_progress_bar", "--precision", "fp32"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "postprocessing.pkl: not read" in captured.err
    for image_file in sorted(inputs.iterdir()):
        image = sitk.ReadImage(str(image_file))
        seg = sitk.ReadImage(str(out / image_file.name.replace("_0000", "")))
        assert seg.GetSize() == image.GetSize()
        assert np.allclose(seg.GetSpacing(), image.GetSpacing()) and np.allclose(seg.GetOrigin(), image.GetOrigin())
        assert np.allclose(seg.GetDirection(), image.GetDirection())
        values = set(np.unique(sitk.GetArrayFromImage(seg)).tolist())
        assert values <= {0, 1, 2} and len(values) > 1  # random weights still give a non-constant map


def test_nnunet_postprocessing_json_is_applied(tmp_path):
    from suprem_auto.interop.nnunet import nnunet_predictor

    folder = fx.model_folder(tmp_path / "results", "plain", _dataset_json())
    (folder / "postprocessing.json").write_text(json.dumps({
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
        "postprocessing_kwargs": [{"labels_or_regions": [1, 2], "background_label": 0}]}))
    predictor = nnunet_predictor(folder, use_mirroring=False, progress=False, precision="fp32")
    assert predictor.postprocessing["apply"]["keep_largest_foreground_component"] is True
    assert predictor.mirror_axes == ()
    assert predictor.nnunet_gaussian  # overlapping tiles weighted with nnU-Net's importance map
    assert predictor.plans["configurations"]["3d_fullres"]["architecture"]["name"] == "plain_unet"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_nnunet_checkpoint_is_refused(tmp_path, capsys):
    folder = fx.model_folder(tmp_path / "results", "plain", _dataset_json())
    marker = tmp_path / "pwned"
    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["logging"]["evil"] = _Payload(marker)
    torch.save(ckpt, ckpt_path)
    out = tmp_path / "out"
    rc = predict_main(["-m", str(folder), "-i", str(_inputs(tmp_path, 1)), "-o", str(out), "--disable_progress_bar"])
    err = capsys.readouterr().err
    assert rc != 0 and "refused for safety" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not list(out.glob("*.nii.gz"))
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(_our_network("plain", 3), "plain_unet", ckpt_path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_pretrained_other_class_count_reinitialises_only_the_head(tmp_path, kind):
    from suprem_auto.interop.nnunet import from_nnunet_keys

    folder = fx.model_folder(tmp_path / "results", kind, _dataset_json())
    path = folder / "fold_0" / "checkpoint_final.pth"
    net = _our_network(kind, n_classes=5)
    report = load_pretrained(net, "resenc_unet" if kind == "resenc" else "plain_unet", path,
                             report_path=tmp_path / "load_report.json")
    assert report.layout == "nnunet_v2"
    source, _ = from_nnunet_keys(torch.load(path, weights_only=False)["network_weights"],
                                 "resenc_unet" if kind == "resenc" else "plain_unet")
    state = net.state_dict()
    head = {k for k in state if k.startswith("decoder.seg_layers.")}
    assert set(report.reinitialised) == head
    for key, value in state.items():
        if key not in head:
            assert torch.equal(value, source[key]), key
    same = _our_network(kind, n_classes=3)
    load_pretrained(same, "resenc_unet" if kind == "resenc" else "plain_unet", path)
    assert all(torch.equal(same.state_dict()[k], source[k]) for k in head)  # same class count: head kept


def test_pretrained_two_input_channels_adapt_first_layer(tmp_path):
    folder = fx.model_folder(tmp_path / "results", "resenc", _dataset_json())
    path = folder / "fold_0" / "checkpoint_final.pth"
    net = _our_network("resenc", n_classes=3, n_channels=2)
    report = load_pretrained(net, "resenc_unet", path)
    first = "encoder.stem.convs.0.conv.weight"
    src = torch.load(path, weights_only=False)["network_weights"][first]
    assert first in report.adapted
    assert torch.allclose(net.state_dict()[first].sum(1), src.sum(1), atol=1e-6)
    two = fx.model_folder(tmp_path / "two", "plain", _dataset_json(n_channels=2))
    one = _our_network("plain", n_classes=3, n_channels=1)
    report = load_pretrained(one, "plain_unet", two / "fold_0" / "checkpoint_final.pth")
    first, nn_first = "encoder.stages.0.0.conv.weight", "encoder.stages.0.0.convs.0.conv.weight"
    src = torch.load(two / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"][nn_first]
    assert "input channels 2 -> 1" in report.adapted[first]
    assert torch.allclose(one.state_dict()[first], src.sum(1, keepdim=True), atol=1e-6)


def test_stage_count_mismatch_reported_key_by_key(tmp_path):
    folder = fx.model_folder(tmp_path / "results", "plain", _dataset_json(), features=(8, 16, 32, 64))
    path = folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(CheckpointError) as info:
        load_pretrained(_our_network("plain", 3), "plain_unet", path)
    message = str(info.value)
    assert "encoder.stages.3.0.conv.weight: in the file" in message
    assert "decoder.transpconvs.0.weight: file (64, 32, 2, 2, 2), network (32, 16, 2, 2, 2)" in message
    assert "\n" not in message

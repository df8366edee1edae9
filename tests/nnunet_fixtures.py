"""nnU-Net v2 model folders and checkpoints built in tests, with nnU-Net's real names (no nnunetv2 needed).

Key names, shapes and aliases were printed from dynamic_network_architectures 0.4.4 (``PlainConvUNet``,
``ResidualEncoderUNet``) and the checkpoint dict from nnU-Net v2.8's trainer: ``network_weights`` holds every
tensor under its primary name plus the ``all_modules.<j>`` and ``decoder.encoder.*`` aliases; the logged values are
numpy float64 scalars; ``init_args`` holds plans, configuration, fold, dataset_json and a ``torch.device``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def arch_kwargs(kind: str, features: Sequence[int] = (8, 16, 32), patch_dims: int = 3) -> Dict:
    """nnU-Net ``arch_kwargs`` for a small network (``kind``: "plain" or "resenc")."""
    n = len(features)
    kw = {"n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3] * patch_dims] * n, "strides": [[1] * patch_dims] + [[2] * patch_dims] * (n - 1),
          "n_conv_per_stage_decoder": [1] * (n - 1) if kind == "resenc" else [2] * (n - 1), "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    kw["n_blocks_per_stage" if kind == "resenc" else "n_conv_per_stage"] = \
        [1, 3, 4, 6, 6, 6][:n] if kind == "resenc" else [2] * n
    return kw


def _conv_block(out: Dict[str, torch.Tensor], prefix: str, shape: List[int], gen: torch.Generator,
                bias: bool = True) -> None:
    """conv + InstanceNorm under nnU-Net's names and its all_modules aliases (same tensors)."""
    w = torch.randn(shape, generator=gen) * (2.0 / np.prod(shape[1:])) ** 0.5
    out[prefix + "conv.weight"] = w
    if bias:
        out[prefix + "conv.bias"] = torch.randn(shape[0], generator=gen) * 0.1
    out[prefix + "norm.weight"] = 1 + 0.1 * torch.randn(shape[0], generator=gen)
    out[prefix + "norm.bias"] = 0.1 * torch.randn(shape[0], generator=gen)
    out[prefix + "all_modules.0.weight"] = w
    if bias:
        out[prefix + "all_modules.0.bias"] = out[prefix + "conv.bias"]
    out[prefix + "all_modules.1.weight"] = out[prefix + "norm.weight"]
    out[prefix + "all_modules.1.bias"] = out[prefix + "norm.bias"]


def network_weights(kind: str, kw: Dict, in_channels: int, num_classes: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A random nnU-Net state dict of ``PlainConvUNet`` ("plain") or ``ResidualEncoderUNet`` ("resenc")."""
    gen = torch.Generator().manual_seed(seed)
    feats, kernels, strides = kw["features_per_stage"], kw["kernel_sizes"], kw["strides"]
    enc: Dict[str, torch.Tensor] = {}
    width = in_channels
    if kind == "resenc":
        _conv_block(enc, "encoder.stem.convs.0.", [feats[0], in_channels, *kernels[0]], gen)
        width = feats[0]
    for s, f in enumerate(feats):
        if kind == "plain":
            for i in range(kw["n_conv_per_stage"][s]):
                _conv_block(enc, f"encoder.stages.{s}.0.convs.{i}.", [f, width if i == 0 else f, *kernels[s]], gen)
        else:
            for b in range(kw["n_blocks_per_stage"][s]):
                p, cin = f"encoder.stages.{s}.blocks.{b}.", width if b == 0 else f
                _conv_block(enc, p + "conv1.", [f, cin, *kernels[s]], gen)
                _conv_block(enc, p + "conv2.", [f, f, *kernels[s]], gen)
                strided = b == 0 and any(st != 1 for st in strides[s])
                if strided or cin != f:
                    _conv_block(enc, p + f"skip.{1 if strided else 0}.", [f, cin] + [1] * len(kernels[s]), gen,
                                bias=False)
        width = f
    out = dict(enc)
    out.update({"decoder." + k: v for k, v in enc.items()})
    n = len(feats)
    for d in range(n - 1):
        below, skip = feats[n - 1 - d], feats[n - 2 - d]
        out[f"decoder.transpconvs.{d}.weight"] = torch.randn([below, skip, *strides[n - 1 - d]], generator=gen) * 0.1
        out[f"decoder.transpconvs.{d}.bias"] = torch.randn(skip, generator=gen) * 0.1
    for d in range(n - 1):
        skip = feats[n - 2 - d]
        for i in range(kw["n_conv_per_stage_decoder"][d]):
            _conv_block(out, f"decoder.stages.{d}.convs.{i}.", [skip, 2 * skip if i == 0 else skip,
                                                                  *kernels[n - 2 - d]], gen)
    for d in range(n - 1):
        skip = feats[n - 2 - d]
        out[f"decoder.seg_layers.{d}.weight"] = torch.randn([num_classes, skip] + [1] * len(kernels[0]),
                                                            generator=gen) * 0.5
        out[f"decoder.seg_layers.{d}.bias"] = torch.randn(num_classes, generator=gen) * 0.1
    return out


def plans_json(kind: str, kw: Dict, dataset_name: str, patch_size: Sequence[int] = (24, 32, 24),
               normalization: str = "ZScoreNormalization") -> Dict:
    """An nnU-Net v2 ``plans.json`` with one ``3d_fullres`` configuration (1 mm hippocampus MRI)."""
    resample = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetResEncUNetMPlans" if kind == "resenc" else "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [36, 50, 35],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 9, "patch_size": list(patch_size), "median_image_size_in_voxels": [36.0, 50.0, 35.0],
            "spacing": [1.0, 1.0, 1.0], "normalization_schemes": [normalization], "use_mask_for_norm": [False],
            "resampling_fn_data": resample, "resampling_fn_seg": resample, "resampling_fn_probabilities": resample,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": RESENC if kind == "resenc" else PLAIN, "arch_kwargs": kw,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False}},
        "experiment_planner_used": "nnUNetPlannerResEncM" if kind == "resenc" else "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 486420.2, "mean": 22360.3, "median": 24.4, "min": 0.0, "percentile_00_5": 28.0,
            "percentile_99_5": 277682.0, "std": 60656.1}},
    }


def checkpoint(weights: Dict[str, torch.Tensor], plans: Dict, dataset_json: Dict, fold: int = 0) -> Dict:
    """The dict nnU-Net's trainer saves as ``checkpoint_final.pth`` (numpy scalars where it has them)."""
    return {"network_weights": weights, "optimizer_state": {"state": {}, "param_groups": [
                {"lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-05, "params": [0, 1]}]},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.41)], "ema_fg_dice": [np.float64(0.41)],
                        "dice_per_class_or_region": [[np.float64(0.5), np.float64(0.32)]],
                        "train_losses": [np.mean(np.array([-0.3, -0.2]))], "val_losses": [np.float64(-0.25)],
                        "lrs": [0.01], "epoch_start_timestamps": [1.7e9], "epoch_end_timestamps": [1.7e9 + 60]},
            "_best_ema": np.float64(0.41), "current_epoch": 1000,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset_json,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}


def model_folder(results: Path, kind: str, dataset_json: Dict, folds: Sequence[int] = (0,),
                 features: Sequence[int] = (8, 16, 32)) -> Path:
    """``results/<Dataset>/nnUNetTrainer__<plans>__3d_fullres`` with plans.json, dataset.json and the folds."""
    kw = arch_kwargs(kind, features)
    plans = plans_json(kind, kw, "Dataset004_Hippocampus")
    folder = results / "Dataset004_Hippocampus" / f"nnUNetTrainer__{plans['plans_name']}__3d_fullres"
    num_classes = len(dataset_json["labels"])
    for fold in folds:
        (folder / f"fold_{fold}").mkdir(parents=True)
        weights = network_weights(kind, kw, len(dataset_json["channel_names"]), num_classes, seed=fold)
        torch.save(checkpoint(weights, plans, dataset_json, fold), folder / f"fold_{fold}" / "checkpoint_final.pth")
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder

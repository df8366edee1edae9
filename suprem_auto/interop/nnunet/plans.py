"""nnU-Net v2 ``plans.json`` + ``dataset.json`` -> our plans dict for one configuration.

What is carried over: spacing, patch and batch size, transpose_forward/backward, normalization per channel
(``CTNormalization`` with the fingerprint's foreground percentiles, mean and std; ``ZScoreNormalization`` with
``use_mask_for_norm``; ``NoNormalization``; ``RescaleTo01Normalization``; ``RGBTo01Normalization``), resampling
orders and the separate-z rule (``order_z``, ``force_separate_z``, nnU-Net's anisotropy threshold 3), and the
network (``PlainConvUNet`` -> ``plain_unet``, ``ResidualEncoderUNet`` -> ``resenc_unet``).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from suprem_auto.planning.schema import PLANS_FORMAT_VERSION, PlansError, validate_plans

logger = logging.getLogger(__name__)
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD
DEFAULT_RESAMPLING_FN = "resample_data_or_seg_to_shape"
_NETWORKS = {"PlainConvUNet": "plain_unet", "ResidualEncoderUNet": "resenc_unet"}
_BLOCK_KWARGS = {"plain_unet": "n_conv_per_stage", "resenc_unet": "n_blocks_per_stage"}


def resolved_configuration(plans: Dict[str, Any], name: str, source: str) -> Dict[str, Any]:
    """A configuration with its ``inherits_from`` chain merged in (parents first)."""
    configs = plans.get("configurations") or {}
    chain: List[str] = []
    current = name
    while current is not None:
        if current not in configs:
            known = ", ".join(configs) or "none"
            raise PlansError(f"{source}: field 'configurations.{current}' is missing (known: {known})")
        if current in chain:
            raise PlansError(f"{source}: field 'configurations.{current}.inherits_from' loops")
        chain.append(current)
        current = configs[current].get("inherits_from")
    merged: Dict[str, Any] = {}
    for entry in reversed(chain):
        merged.update(configs[entry])
    return merged


def _normalization(config: Dict[str, Any], intensity: Dict[str, Any], n_channels: int, field: str,
                   source: str) -> List[Dict[str, Any]]:
    schemes = config.get("normalization_schemes")
    masks = config.get("use_mask_for_norm") or [False] * n_channels
    if not isinstance(schemes, list) or len(schemes) != n_channels:
        raise PlansError(f"{source}: field '{field}.normalization_schemes' must list one scheme per channel "
                         f"({n_channels}), got {schemes!r}")
    out = []
    for c, scheme in enumerate(schemes):
        use_mask = bool(masks[c]) if c < len(masks) else False
        if scheme == "CTNormalization":
            props = intensity.get(str(c)) or {}
            missing = [k for k in ("percentile_00_5", "percentile_99_5", "mean", "std") if k not in props]
            if missing:
                raise PlansError(f"{source}: field 'foreground_intensity_properties_per_channel.{c}' lacks {missing} "
                                 "needed by CTNormalization")
            out.append({"scheme": "ct", "use_mask": False, "params": {
                "lower": float(props["percentile_00_5"]), "upper": float(props["percentile_99_5"]),
                "mean": float(props["mean"]), "std": float(props["std"])}})
        elif scheme == "ZScoreNormalization":
            out.append({"scheme": "zscore", "use_mask": use_mask, "params": {}})
        elif scheme == "NoNormalization":
            out.append({"scheme": "none", "use_mask": False, "params": {}})
        elif scheme == "RescaleTo01Normalization":
            out.append({"scheme": "rescale_0_1", "use_mask": False, "params": {}})
        elif scheme == "RGBTo01Normalization":
            out.append({"scheme": "window", "use_mask": False,
                        "params": {"lower": 0.0, "upper": 255.0, "out_min": 0.0, "out_max": 1.0}})
        else:
            raise PlansError(f"{source}: field '{field}.normalization_schemes[{c}]' is {scheme!r}, which suprem_auto "
                             "does not implement (known: CTNormalization, ZScoreNormalization, NoNormalization, "
                             "RescaleTo01Normalization, RGBTo01Normalization)")
    return out


def _resampling(config: Dict[str, Any], field: str) -> Dict[str, Any]:
    data_kw = config.get("resampling_fn_data_kwargs") or {}
    seg_kw = config.get("resampling_fn_seg_kwargs") or {}
    prob_kw = config.get("resampling_fn_probabilities_kwargs") or {}
    for key in ("resampling_fn_data", "resampling_fn_seg", "resampling_fn_probabilities"):
        fn = config.get(key, DEFAULT_RESAMPLING_FN)
        if fn != DEFAULT_RESAMPLING_FN:
            logger.warning("%s.%s is %s: suprem_auto resamples with its own spline resampling "
                           "(as %s), so results can differ slightly", field, key, fn, DEFAULT_RESAMPLING_FN)
    return {"data_order": int(data_kw.get("order", 3)), "seg_order": int(seg_kw.get("order", 1)),
            "probabilities_order": int(prob_kw.get("order", 1)), "order_z": int(data_kw.get("order_z", 0)),
            "force_separate_z": data_kw.get("force_separate_z"), "anisotropy_threshold": ANISOTROPY_THRESHOLD}


def _import_name(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1] if value is not None else "None"


def _architecture(config: Dict[str, Any], field: str, source: str) -> Dict[str, Any]:
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise PlansError(f"{source}: field '{field}.architecture.network_class_name' is missing (plans of nnU-Net "
                         "v2.4 or newer are needed; re-plan with nnUNetv2_plan_experiment)")
    class_name = _import_name(arch["network_class_name"])
    name = _NETWORKS.get(class_name)
    if name is None:
        raise PlansError(f"{source}: field '{field}.architecture.network_class_name' is {arch['network_class_name']!r};"
                         f" supported: {', '.join(_NETWORKS)}")
    kw = arch.get("arch_kwargs") or {}
    afield = f"{field}.architecture.arch_kwargs"
    checks = {"conv_op": ("Conv2d", "Conv3d"), "norm_op": ("InstanceNorm2d", "InstanceNorm3d"),
              "nonlin": ("LeakyReLU",), "dropout_op": ("None",)}
    for key, allowed in checks.items():
        if _import_name(kw.get(key)) not in allowed:
            raise PlansError(f"{source}: field '{afield}.{key}' is {kw.get(key)!r}; supported: {', '.join(allowed)}")
    if kw.get("conv_bias", True) is not True:
        raise PlansError(f"{source}: field '{afield}.conv_bias' must be true (our networks use conv biases)")
    norm_kw = kw.get("norm_op_kwargs") or {}
    if float(norm_kw.get("eps", 1e-5)) != 1e-5 or not norm_kw.get("affine", True):
        raise PlansError(f"{source}: field '{afield}.norm_op_kwargs' must be eps 1e-5, affine (got {norm_kw})")
    slope = (kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)
    if float(slope) != 0.01:
        raise PlansError(f"{source}: field '{afield}.nonlin_kwargs.negative_slope' must be 0.01, got {slope}")
    block_key = _BLOCK_KWARGS[name]
    try:
        kwargs = {"n_stages": int(kw["n_stages"]), "features_per_stage": [int(v) for v in kw["features_per_stage"]],
                  "kernel_sizes": [[int(k) for k in ks] for ks in kw["kernel_sizes"]],
                  "strides": [[int(s) for s in st] for st in kw["strides"]],
                  block_key: kw[block_key], "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"]}
    except KeyError as exc:
        raise PlansError(f"{source}: field '{afield}.{exc.args[0]}' is missing") from None
    for key in (block_key, "n_conv_per_stage_decoder"):
        kwargs[key] = int(kwargs[key]) if isinstance(kwargs[key], int) else [int(v) for v in kwargs[key]]
    return {"name": name, "kwargs": kwargs}


def convert_plans(nn_plans: Dict[str, Any], dataset_json: Dict[str, Any], configuration: str,
                  source: str = "plans.json") -> Dict[str, Any]:
    """Our validated plans dict holding the one configuration ``configuration`` of an nnU-Net v2 plans dict."""
    field = f"configurations.{configuration}"
    config = resolved_configuration(nn_plans, configuration, source)
    n_channels = len(dataset_json.get("channel_names") or dataset_json.get("modality") or {})
    if n_channels == 0:
        raise PlansError(f"{source}: the model's dataset.json has no channel_names")
    intensity = nn_plans.get("foreground_intensity_properties_per_channel") or {}
    for key in ("spacing", "patch_size"):
        if key not in config:
            raise PlansError(f"{source}: field '{field}.{key}' is missing")
    ours = {
        "data_identifier": config.get("data_identifier") or f"{nn_plans.get('plans_name')}_{configuration}",
        "spacing": [float(s) for s in config["spacing"]], "patch_size": [int(p) for p in config["patch_size"]],
        "batch_size": int(config.get("batch_size", 2)),
        "median_image_size_in_voxels": [float(v) for v in config.get("median_image_size_in_voxels", [])],
        "normalization": _normalization(config, intensity, n_channels, field, source),
        "resampling": _resampling(config, field),
        "architecture": _architecture(config, field, source),
        "batch_dice": bool(config.get("batch_dice", False)),
    }
    plans = {
        "format_version": PLANS_FORMAT_VERSION, "plans_name": str(nn_plans.get("plans_name") or "nnUNetPlans"),
        "dataset_name": str(nn_plans.get("dataset_name") or "nnunet_dataset"), "preset": None,
        "reorient_to_ras": False,
        "transpose_forward": [int(a) for a in nn_plans.get("transpose_forward", [0, 1, 2])],
        "transpose_backward": [int(a) for a in nn_plans.get("transpose_backward", [0, 1, 2])],
        "original_median_spacing_after_transp": nn_plans.get("original_median_spacing_after_transp"),
        "original_median_shape_after_transp": nn_plans.get("original_median_shape_after_transp"),
        "foreground_intensity_properties_per_channel": intensity or {str(c): {} for c in range(n_channels)},
        "configurations": {configuration: ours},
        "source": {"framework": "nnU-Net v2", "experiment_planner": nn_plans.get("experiment_planner_used")},
    }
    return validate_plans(plans, source)

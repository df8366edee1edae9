"""The plans file: versioned JSON, validated on load with errors naming the bad field."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

from suprem_auto.utils.atomic import atomic_write_json, load_json_or_raise

PLANS_FORMAT_VERSION = 1
NORMALIZATION_SCHEMES = ("ct", "zscore", "window", "none", "rescale_0_1")
PLAIN_UNET_KWARGS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                     "n_conv_per_stage_decoder")
RESENC_UNET_KWARGS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage",
                      "n_conv_per_stage_decoder")
PathLike = Union[str, Path]


class PlansError(ValueError):
    """Invalid plans; the message names the file and the field."""


def _fail(source: Any, field: str, problem: str) -> None:
    raise PlansError(f"{source}: field '{field}' {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_int_list(source: Any, field: str, value: Any, length: int | None = None, minimum: int = 1) -> None:
    if not isinstance(value, list) or not all(_is_int(v) and v >= minimum for v in value):
        _fail(source, field, f"must be a list of integers >= {minimum}, got {value!r}")
    if length is not None and len(value) != length:
        _fail(source, field, f"must have {length} entries, got {len(value)}")


def _validate_normalization(source: Any, field: str, entries: Any) -> None:
    if not isinstance(entries, list) or not entries:
        _fail(source, field, "must be a non-empty list (one entry per input channel)")
    for i, entry in enumerate(entries):
        f = f"{field}[{i}]"
        if not isinstance(entry, dict):
            _fail(source, f, "must be an object")
        if entry.get("scheme") not in NORMALIZATION_SCHEMES:
            _fail(source, f + ".scheme", f"must be one of {NORMALIZATION_SCHEMES}, got {entry.get('scheme')!r}")
        params = entry.get("params", {})
        if not isinstance(params, dict):
            _fail(source, f + ".params", "must be an object")
        required = {"ct": ("lower", "upper", "mean", "std"), "window": ("lower", "upper")}.get(entry["scheme"], ())
        for key in required:
            if not _is_number(params.get(key)):
                _fail(source, f"{f}.params.{key}", f"must be a number for scheme '{entry['scheme']}'")
        if entry["scheme"] == "window" and params["upper"] <= params["lower"]:
            _fail(source, f + ".params.upper", "must be greater than params.lower")
        if not isinstance(entry.get("use_mask", False), bool):
            _fail(source, f + ".use_mask", "must be true or false")


def _validate_architecture(source: Any, field: str, arch: Any, patch_size: list) -> None:
    from suprem_auto.networks.registry import backbone_names, get_backbone  # the architecture registry

    name = arch.get("name") if isinstance(arch, dict) else arch
    try:
        get_backbone(name if isinstance(arch, dict) else None)
    except ValueError:
        _fail(source, field + ".name", f"must be one of {backbone_names()}, got {name!r}")
    kwargs = arch.get("kwargs")
    if not isinstance(kwargs, dict):
        _fail(source, field + ".kwargs", "must be an object")
    if arch["name"] not in ("plain_unet", "resenc_unet"):
        return
    for key in PLAIN_UNET_KWARGS if arch["name"] == "plain_unet" else RESENC_UNET_KWARGS:
        if key not in kwargs:
            _fail(source, f"{field}.kwargs.{key}", "is missing")
    n = kwargs["n_stages"]
    if not _is_int(n) or n < 1:
        _fail(source, f"{field}.kwargs.n_stages", f"must be a positive integer, got {n!r}")
    _check_int_list(source, f"{field}.kwargs.features_per_stage", kwargs["features_per_stage"], n)
    for key in ("kernel_sizes", "strides"):
        value = kwargs[key]
        if not isinstance(value, list) or len(value) != n:
            _fail(source, f"{field}.kwargs.{key}", f"must list one entry per stage ({n})")
        for i, v in enumerate(value):
            _check_int_list(source, f"{field}.kwargs.{key}[{i}]", v, len(patch_size))
    divisor = [1] * len(patch_size)
    for stride in kwargs["strides"]:
        divisor = [d * s for d, s in zip(divisor, stride)]
    if any(p % d for p, d in zip(patch_size, divisor)):
        _fail(source, f"{field}.kwargs.strides", f"give a total downsampling {divisor} that does not divide the "
                                                 f"patch size {patch_size}")


def _validate_configuration(source: Any, name: str, config: Any, num_channels: int | None) -> None:
    base = f"configurations.{name}"
    if not isinstance(config, dict):
        _fail(source, base, "must be an object")
    for key in ("data_identifier", "spacing", "patch_size", "batch_size", "normalization", "resampling",
                "architecture"):
        if key not in config:
            _fail(source, f"{base}.{key}", "is missing")
    if not isinstance(config["data_identifier"], str) or not config["data_identifier"]:
        _fail(source, f"{base}.data_identifier", "must be a non-empty string")
    patch = config["patch_size"]
    _check_int_list(source, f"{base}.patch_size", patch)
    if len(patch) not in (2, 3):
        _fail(source, f"{base}.patch_size", f"must have 2 or 3 entries, got {len(patch)}")
    spacing = config["spacing"]
    if not isinstance(spacing, list) or len(spacing) != len(patch) or not all(_is_number(s) and s > 0 for s in spacing):
        _fail(source, f"{base}.spacing", f"must be {len(patch)} positive numbers, got {spacing!r}")
    if not _is_int(config["batch_size"]) or config["batch_size"] < 1:
        _fail(source, f"{base}.batch_size", f"must be a positive integer, got {config['batch_size']!r}")
    _validate_normalization(source, f"{base}.normalization", config["normalization"])
    if num_channels is not None and len(config["normalization"]) != num_channels:
        _fail(source, f"{base}.normalization", f"has {len(config['normalization'])} entries for {num_channels} channels")
    resampling = config["resampling"]
    if not isinstance(resampling, dict):
        _fail(source, f"{base}.resampling", "must be an object")
    for key in ("data_order", "seg_order", "probabilities_order"):
        if not _is_int(resampling.get(key)) or not 0 <= resampling[key] <= 5:
            _fail(source, f"{base}.resampling.{key}", f"must be an integer 0..5, got {resampling.get(key)!r}")
    if resampling.get("force_separate_z") not in (None, True, False):
        _fail(source, f"{base}.resampling.force_separate_z", "must be null, true or false")
    _validate_architecture(source, f"{base}.architecture", config["architecture"], patch)
    if not isinstance(config.get("batch_dice", False), bool):
        _fail(source, f"{base}.batch_dice", "must be true or false")


def validate_plans(plans: Any, source: Any = "plans") -> Dict[str, Any]:
    """Check a plans dict; raises :class:`PlansError` naming the first bad field. Returns the dict."""
    if not isinstance(plans, dict):
        raise PlansError(f"{source}: plans must be a JSON object")
    if plans.get("format_version") != PLANS_FORMAT_VERSION:
        _fail(source, "format_version", f"must be {PLANS_FORMAT_VERSION}, got {plans.get('format_version')!r}")
    for key in ("plans_name", "dataset_name"):
        if not isinstance(plans.get(key), str) or not plans[key]:
            _fail(source, key, "must be a non-empty string")
    if plans.get("preset") is not None and not isinstance(plans["preset"], str):
        _fail(source, "preset", "must be null or a preset name")
    if not isinstance(plans.get("reorient_to_ras"), bool):
        _fail(source, "reorient_to_ras", "must be true or false")
    forward, backward = plans.get("transpose_forward"), plans.get("transpose_backward")
    if not isinstance(forward, list) or sorted(forward) != [0, 1, 2]:
        _fail(source, "transpose_forward", f"must be a permutation of [0, 1, 2], got {forward!r}")
    if not isinstance(backward, list) or sorted(backward) != [0, 1, 2] or [forward[b] for b in backward] != [0, 1, 2]:
        _fail(source, "transpose_backward", f"must be the inverse of transpose_forward, got {backward!r}")
    intensity = plans.get("foreground_intensity_properties_per_channel")
    if not isinstance(intensity, dict):
        _fail(source, "foreground_intensity_properties_per_channel", "must be an object")
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or not configs:
        _fail(source, "configurations", "must be a non-empty object")
    num_channels = len(intensity) if intensity else None
    for name, config in configs.items():
        _validate_configuration(source, name, config, num_channels)
    _validate_stages(source, configs)
    return plans


def _validate_stages(source: Any, configs: Dict[str, Any]) -> None:
    """Cascade links: ``previous_stage`` names another 3D configuration, ``next_stage`` (a name or a list) names
    configurations whose ``previous_stage`` points back (nnU-Net needs the link both ways)."""
    for name, config in configs.items():
        previous = config.get("previous_stage")
        if previous is not None:
            field = f"configurations.{name}.previous_stage"
            if previous not in configs or previous == name:
                _fail(source, field, f"must name another configuration, got {previous!r}")
            if len(configs[previous]["patch_size"]) != 3 or len(config["patch_size"]) != 3:
                _fail(source, field, "links 3D configurations only")
        nxt = config.get("next_stage")
        if nxt is not None:
            field = f"configurations.{name}.next_stage"
            names = [nxt] if isinstance(nxt, str) else nxt
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                _fail(source, field, f"must be a configuration name or a list of names, got {nxt!r}")
            for n in names:
                if n not in configs or configs[n].get("previous_stage") != name:
                    _fail(source, field, f"names '{n}', which is not a configuration with previous_stage '{name}'")


def load_plans(path: PathLike) -> Dict[str, Any]:
    """Read and validate a plans JSON file."""
    path = Path(path)
    return validate_plans(load_json_or_raise(path, PlansError, "plans file"), path)


def save_plans(plans: Dict[str, Any], path: PathLike) -> Path:
    """Validate and write plans atomically."""
    validate_plans(plans, path)
    return atomic_write_json(path, plans)

"""``load_pretrained``: load a (possibly foreign) checkpoint into one of our networks, strictly, with a report.

Backbone tensors are strict (missing key or shape mismatch = error naming the key). Allowed adaptations: a head of a
different class count stays freshly initialised; more input channels tile the first layer's weights divided by the
factor. Everything is logged in the returned ``LoadReport`` (and ``report_path`` as JSON).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from suprem_auto.networks.groups import architecture_of
from suprem_auto.networks.registry import get_backbone
from suprem_auto.pretrained.checkpoint_io import (CheckpointError, read_checkpoint, strip_prefixes,
                                                  unwrap_state_dict)
from suprem_auto.pretrained.label_maps import label_map_name_for
from suprem_auto.pretrained.layouts import (ENCODER_ONLY_LAYOUTS, UNIVERSAL_HEAD_PREFIXES, Canonical, canonicalise,
                                            layout_description, num_classes_in)
from suprem_auto.pretrained.report import LoadReport

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)

def _tile_input_channels(src: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    """Repeat a first-layer weight along the input-channel axis and divide by the repeat factor."""
    factor = target_shape[1] // src.shape[1]
    reps = [1, factor] + [1] * (src.dim() - 2)
    return src.repeat(*reps) / factor


def _can_tile(src: torch.Tensor, target: torch.Tensor) -> bool:
    return (src.dim() == target.dim() and src.shape[0] == target.shape[0] and src.shape[2:] == target.shape[2:]
            and target.shape[1] > src.shape[1] and target.shape[1] % src.shape[1] == 0)


def _adapt_input_channels(src: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """A first-layer weight for another input-channel count, keeping the sum over input channels (so one image fed
    to every channel gives the same response), and how; None when the other dimensions differ.

    More channels, a multiple: tiled and divided by the factor. Fewer, a divisor: channels ``c`` with the same
    ``c % n_out`` summed. Otherwise: every channel gets the channel sum divided by the new count."""
    if src.dim() != target.dim() or src.shape[0] != target.shape[0] or src.shape[2:] != target.shape[2:]:
        return None
    n_in, n_out = src.shape[1], target.shape[1]
    if _can_tile(src, target):
        return _tile_input_channels(src, target.shape), f"weights tiled and divided by {n_out // n_in}"
    if n_in % n_out == 0:
        folded = src.reshape(src.shape[0], n_in // n_out, n_out, *src.shape[2:]).sum(1)
        return folded, f"channels c with equal c % {n_out} summed"
    mean = src.sum(1, keepdim=True) / n_out
    return mean.expand(-1, n_out, *([-1] * (src.dim() - 2))).clone(), f"channel sum spread over {n_out} channels"


def structure_differences(network: nn.Module, arch: str, canon: Canonical) -> list[str]:
    """Every backbone tensor of ``network`` that is missing from the file or has another shape (head and first
    layer excluded: those adapt), and every file tensor the network lacks, one entry per key."""
    target = network.state_dict()
    entry = get_backbone(arch)
    problems = []
    for key, value in target.items():
        if key.startswith(entry.head_prefixes):
            continue
        src = canon.tensors.get(key)
        if src is None:
            problems.append(f"{key}: missing in the file (network {tuple(value.shape)})")
        elif src.shape != value.shape and not (key in entry.first_layers and _adapt_input_channels(src, value)):
            problems.append(f"{key}: file {tuple(src.shape)}, network {tuple(value.shape)}")
    problems += [f"{key}: in the file {tuple(v.shape)}, not in the network" for key, v in canon.tensors.items()
                 if key not in target and not key.startswith(entry.head_prefixes)]
    return problems


def _group(src_key: str, kind: str) -> str:
    return "universal_head" if kind == "universal_head" else src_key.split(".")[0]


def _match(network: nn.Module, universal: bool, arch: str, canon: Canonical, allow_head: bool, path: Path,
           report: LoadReport) -> dict[str, torch.Tensor]:
    """Decide tensor by tensor what to load; returns the tensors to load (network names)."""
    target = network.state_dict()
    entry = get_backbone(arch)
    prefix = "backbone." if universal else ""
    own = canon.layout in ("suprem_auto_checkpoint", "nnunet_v2")
    new_state: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    for tkey, tval in target.items():
        if universal and not tkey.startswith(prefix):
            src_key, kind = tkey, "universal_head"
        else:
            src_key = tkey[len(prefix):]
            kind = "head" if src_key.startswith(entry.head_prefixes) else "backbone"
        group = _group(src_key, kind)
        report.backbone_tensors_total += kind == "backbone"
        src = canon.tensors.get(src_key)
        if kind == "head":
            consumed.add(src_key)
            if src is None:
                why = "head not in checkpoint"
            elif not (allow_head or own):
                why = "head re-initialised for fine-tuning (pretrained head not requested)"
            elif src.shape != tval.shape:
                why = f"class count differs (file {src.shape[0]}, network {tval.shape[0]})"
            else:
                new_state[tkey] = src.to(tval.dtype)
                report.loaded.append(tkey)
                report.count(group, "loaded")
                continue
            report.reinitialised[tkey] = why
            report.count(group, "reinitialised")
            continue
        if src is None:
            if canon.layout in ENCODER_ONLY_LAYOUTS and not src_key.startswith("swinViT."):
                report.reinitialised[tkey] = "random: the checkpoint holds only the Swin encoder"
                report.count(group, "reinitialised")
                continue
            raise CheckpointError(f"{path}: missing tensor {src_key!r} needed by {arch} (layout {canon.layout})")
        if src.shape != tval.shape:
            adapted = _adapt_input_channels(src, tval) if src_key in entry.first_layers else None
            if adapted is not None:
                n_in, n_out = src.shape[1], tval.shape[1]
                src = adapted[0]
                report.adapted[tkey] = f"input channels {n_in} -> {n_out}: {adapted[1]}"
                report.count(group, "adapted")
            else:
                raise CheckpointError(f"{path}: shape mismatch for {src_key!r}: file {tuple(src.shape)}, "
                                      f"network {tuple(tval.shape)} (layout {canon.layout}); a network narrowed with "
                                      f"--network_width only loads checkpoints trained at the same width")
        if src_key.endswith("relative_position_index") and not torch.equal(src, tval):
            raise CheckpointError(f"{path}: {src_key!r} differs from the network's (different window size?)")
        new_state[tkey] = src.to(tval.dtype)
        consumed.add(src_key)
        report.loaded.append(tkey)
        report.count(group, "loaded")
        report.backbone_tensors_loaded += kind == "backbone"
    for key in canon.tensors:
        if key not in consumed:
            why = ("Universal Model text-driven head (not part of this network)"
                   if key.startswith(UNIVERSAL_HEAD_PREFIXES) else "not a tensor of this network")
            report.ignored[key] = why
            report.count(_group(key, ""), "ignored")
    for key, why in canon.dropped.items():
        report.ignored[key] = why
        report.count(key.split(".")[0], "ignored")
    return new_state


def load_pretrained(network: nn.Module, backbone: str, checkpoint_path: PathLike,
                    report_path: PathLike | None = None, allow_head: bool = False) -> LoadReport:
    """Load ``checkpoint_path`` into ``network`` (built for architecture ``backbone``) and return the report.

    Heads (``out_tr``, ``out``, ``conv_final.2``, ``decoder.seg_layers``) are loaded only when ``allow_head`` is set
    (or the file is a suprem_auto checkpoint) and their shapes match; otherwise they keep their fresh initialisation.
    A ``UniversalModel`` target loads the Universal head strictly as well.

    Example (a released SuPreM U-Net file, fine-tuned for 3 classes)::

        from suprem_auto.networks import build_network
        from suprem_auto.pretrained import load_pretrained
        net = build_network({"name": "suprem_unet", "kwargs": {}}, 1, 3, deep_supervision=False)
        report = load_pretrained(net, "suprem_unet", "supervised_suprem_unet_2100.pth", "load_report.json")
        print(report.summary())      # loaded / re-initialised / adapted / ignored, per module group
    """
    from suprem_auto.networks.universal_head import UniversalModel

    path = Path(checkpoint_path)
    universal = isinstance(network, UniversalModel)
    arch = architecture_of(network.backbone if universal else network)
    if backbone != arch:
        raise ValueError(f"load_pretrained: backbone {backbone!r} given, but the network is a {arch}")
    obj = read_checkpoint(path)  # its allow-list has the numpy scalars nnU-Net pickles
    state_dict, container = unwrap_state_dict(obj, path)
    stripped, removed = strip_prefixes(state_dict)
    stored = obj.get("architecture") if isinstance(obj, dict) else None
    canon = canonicalise(stripped, set(map(str, obj)) if isinstance(obj, dict) else set(), container, str(path),
                         removed, stored.get("name") if isinstance(stored, dict) else None)
    if canon.backbone != arch:
        raise CheckpointError(f"{path}: looks like a {canon.backbone} checkpoint (layout {canon.layout}: "
                              f"{layout_description(canon.layout)}), but the network is {arch}")
    if canon.layout == "nnunet_v2" and not universal:
        problems = structure_differences(network, arch, canon)
        if problems:
            raise CheckpointError(f"{path}: the nnU-Net network differs from this plan's {arch} (other stage count "
                                  f"or kernel sizes?) at {len(problems)} tensors: " + "; ".join(problems))
    n_classes = num_classes_in(canon.tensors)
    report = LoadReport(checkpoint=str(path), layout=canon.layout, layout_description=layout_description(canon.layout),
                        source_backbone=canon.backbone, target_backbone=arch, container_key=container,
                        key_form=canon.key_form, num_classes_in_file=n_classes,
                        label_map=label_map_name_for(n_classes) if canon.layout == "suprem_universal"
                        or canon.layout == "suprem_segresnet" else None)
    if isinstance(obj, dict) and isinstance(stored, dict):  # one of ours: read what it was trained on
        from suprem_auto.pretrained.source_preprocessing import source_preprocessing

        report.source_preprocessing = source_preprocessing(path, obj)
    new_state = _match(network, universal, arch, canon, allow_head, path, report)
    merged = {**network.state_dict(), **new_state}
    network.load_state_dict(merged, strict=True)
    for line in report.summary().splitlines():
        logger.info(line)
    if report_path is not None:
        report.write(report_path)
    return report

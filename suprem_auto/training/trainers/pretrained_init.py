"""Initialise a trainer's network from a pre-trained checkpoint (zoo name or path) and report what happened."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch import nn


def resolve_checkpoint(name_or_path: str, weights_dir: Optional[Path] = None) -> Tuple[Path, Any]:
    """(file, zoo entry or None) for a zoo name or a file path (suprem_auto.pretrained.resolve_pretrained)."""
    from suprem_auto.pretrained import resolve_pretrained

    return resolve_pretrained(name_or_path, weights_dir=weights_dir)


def backbone_of_checkpoint(name_or_path: str, weights_dir: Optional[Path] = None) -> Optional[str]:
    """The architecture a checkpoint was trained with: the zoo entry's backbone, or the ``architecture`` stored in
    one of our own checkpoints; None when it cannot be told without loading it into a network."""
    path, entry = resolve_checkpoint(name_or_path, weights_dir)
    backbone = getattr(entry, "backbone", None) if entry is not None else None
    if backbone:
        return str(backbone)
    from suprem_auto.training.checkpointing import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except ValueError:
        return None
    arch = ckpt.get("architecture") if isinstance(ckpt, dict) else None
    return arch.get("name") if isinstance(arch, dict) else None


def load_into(network: nn.Module, backbone: str, name_or_path: str, plans: Dict[str, Any], configuration: str,
              report_path: Path, weights_dir: Optional[Path] = None,
              dataset_json: Optional[Dict[str, Any]] = None) -> Tuple[str, List[str]]:
    """Load the checkpoint into ``network``; returns (report summary, preprocessing warnings: a zoo entry's
    documented pre-training, or what one of our own checkpoints records, against this run's plans)."""
    from suprem_auto.pretrained import load_pretrained

    path, entry = resolve_checkpoint(name_or_path, weights_dir)
    report = load_pretrained(network, backbone, path, report_path=report_path)
    if entry is not None:
        from suprem_auto.pretrained import preprocessing_differences

        return report.summary(), list(preprocessing_differences(entry, plans, configuration))
    if report.source_preprocessing is None:  # a release file or an older checkpoint without its plans
        return report.summary(), []
    from suprem_auto.pretrained.source_preprocessing import describe_preprocessing, differences_from_source

    target = describe_preprocessing(plans, configuration, dataset_json or {})
    return report.summary(), differences_from_source(report.source_preprocessing, target)

"""Load a SuPreM / Universal Model release (backbone + text-driven head) for direct inference."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from suprem_auto.pretrained.checkpoint_io import CheckpointError, read_checkpoint, strip_prefixes, unwrap_state_dict
from suprem_auto.pretrained.layouts import canonicalise, num_classes_in
from suprem_auto.pretrained.zoo import ZooEntry, resolve_pretrained

PathLike = Union[str, os.PathLike]
DEFAULT_MODEL = "suprem_unet"


@dataclass
class OrganModel:
    """A Universal Model with its released weights: one sigmoid channel per class name (no background)."""

    network: "object"
    backbone: str
    class_names: List[str]
    checkpoint: Path
    entry: Optional[ZooEntry]


def load_organ_model(name_or_path: PathLike = DEFAULT_MODEL, weights_dir: Optional[PathLike] = None) -> OrganModel:
    """Resolve a zoo name (file from ``weights_dir`` / ``$SUPREM_WEIGHTS``; a missing file raises
    ``PretrainedNotFound`` naming the file and its download page) or a path, and load backbone and head strictly.

    The class count (and with it the label names) is read from the file: 32 (Universal template) or 25
    (AbdomenAtlas 1.1). A file without a Universal head is refused with ``CheckpointError``.
    """
    from suprem_auto.networks.universal_head import UniversalModel
    from suprem_auto.pretrained.label_maps import label_names_for
    from suprem_auto.pretrained.loader import load_pretrained

    path, entry = resolve_pretrained(name_or_path, weights_dir)
    obj = read_checkpoint(path)
    state, container = unwrap_state_dict(obj, path)
    stripped, removed = strip_prefixes(state)
    canon = canonicalise(stripped, set(map(str, obj)) if isinstance(obj, dict) else set(), container, str(path),
                         removed)
    if canon.layout != "suprem_universal" or canon.backbone not in ("suprem_unet", "swin_unetr"):
        raise CheckpointError(f"{path}: layout {canon.layout} ({canon.backbone}) has no Universal Model head; "
                              "suprem_segment needs a SuPreM U-Net / Swin UNETR or Universal Model release")
    num_classes = num_classes_in(canon.tensors)
    try:
        names = label_names_for(int(num_classes or 0))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    network = UniversalModel(canon.backbone, len(names))
    load_pretrained(network, canon.backbone, path, allow_head=True)
    return OrganModel(network.eval(), canon.backbone, names, Path(path), entry)

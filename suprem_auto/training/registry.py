"""Trainer names -> classes, plus declared name suffixes (``_<N>epochs``, ``_NoDA``, ``_NoMirroring``) that change
one option without a new class."""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple, Type

from suprem_auto.training.trainers.base import BaseTrainer
from suprem_auto.training.trainers.suprem import (SegResNetTrainer, SupremTrainer, SupremUNetTrainer,
                                                  SwinUNETRTrainer)

DEFAULT_TRAINER = "SupremTrainer"


def trainer_classes() -> Dict[str, Type[BaseTrainer]]:
    """Registered trainers by name."""
    return {cls.__name__: cls for cls in (SupremTrainer, SupremUNetTrainer, SegResNetTrainer, SwinUNETRTrainer)}


_SUFFIXES = [
    (re.compile(r"_(\d+)epochs$"), "_<N>epochs: train N epochs", lambda m: {"num_epochs": int(m.group(1))}),
    (re.compile(r"_NoDA$"), "_NoDA: no data augmentation", lambda m: {"augmentation": False, "mirror_axes": None}),
    (re.compile(r"_NoMirroring$"), "_NoMirroring: no mirroring (training and inference)",
     lambda m: {"mirror_axes": None}),
]


def resolve_trainer(name: str) -> Tuple[Type[BaseTrainer], Dict[str, Any]]:
    """Class and config changes for ``name`` = a registered trainer plus any declared suffixes, e.g.
    ``SupremTrainer_5epochs`` or ``SegResNetTrainer_NoDA_50epochs``."""
    classes = trainer_classes()
    changes: Dict[str, Any] = {}
    rest = name
    while rest not in classes:
        for pattern, _, make in _SUFFIXES:
            match = pattern.search(rest)
            if match:
                changes = {**make(match), **changes}
                rest = rest[: match.start()]
                break
        else:
            raise ValueError(f"unknown trainer '{name}'; known: {', '.join(classes)} "
                             f"(optionally with suffixes _<N>epochs, _NoDA, _NoMirroring)")
    return classes[rest], changes


def trainer_for_backbone(backbone: Optional[str]) -> str:
    """The trainer to use for a checkpoint of ``backbone`` when -tr is not given."""
    for name, cls in trainer_classes().items():
        if cls.backbone is not None and cls.backbone == backbone:
            return name
    return DEFAULT_TRAINER


def describe_trainers() -> str:
    """Help text listing the trainers and the suffixes."""
    lines = [f"  {name}: {cls.description}" for name, cls in trainer_classes().items()]
    lines.append("  name suffixes (combinable, e.g. SupremTrainer_5epochs): " + "; ".join(d for _, d, _ in _SUFFIXES))
    return "\n".join(lines)

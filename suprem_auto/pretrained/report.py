"""The load report: what a checkpoint load did, per tensor and per module group."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Union

from suprem_auto.utils.atomic import atomic_write_json


@dataclass
class LoadReport:
    """Outcome of ``load_pretrained``; ``loaded`` etc. use the network's parameter names."""

    checkpoint: str
    layout: str
    layout_description: str
    source_backbone: str
    target_backbone: str
    container_key: str | None
    key_form: str | None
    num_classes_in_file: int | None
    label_map: str | None
    backbone_tensors_loaded: int = 0
    backbone_tensors_total: int = 0
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    source_preprocessing: dict | None = None  # what one of our checkpoints records of its pre-training data

    def count(self, group: str, what: str) -> None:
        self.groups.setdefault(group, {"loaded": 0, "reinitialised": 0, "adapted": 0, "ignored": 0})[what] += 1

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: Union[str, os.PathLike]) -> None:
        atomic_write_json(path, self.to_dict())

    def summary(self) -> str:
        """A few human-readable lines for the training log."""
        lines = [f"pretrained {self.checkpoint}: layout {self.layout} ({self.layout_description}), "
                 f"{self.source_backbone} -> {self.target_backbone}",
                 f"  backbone tensors loaded {self.backbone_tensors_loaded}/{self.backbone_tensors_total}; "
                 f"re-initialised {len(self.reinitialised)}; adapted {len(self.adapted)}; ignored {len(self.ignored)}"]
        if self.num_classes_in_file is not None:
            lines.append(f"  classes in file: {self.num_classes_in_file}"
                         + (f" (label map {self.label_map})" if self.label_map else ""))
        for key, why in self.adapted.items():
            lines.append(f"  adapted {key}: {why}")
        reasons: dict[str, int] = {}
        for why in self.reinitialised.values():
            reasons[why] = reasons.get(why, 0) + 1
        for why, n in reasons.items():
            lines.append(f"  re-initialised {n} tensor(s): {why}")
        return "\n".join(lines)

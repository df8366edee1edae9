"""The concrete trainers: the nnU-Net recipe from scratch and one fine-tuning trainer per backbone whose registry
entry names a ``default_trainer`` (``suprem_auto.networks.registry``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Type

from suprem_auto.networks.registry import Backbone, get_backbone
from suprem_auto.training.config import TrainingConfig
from suprem_auto.training.finetune_policy import get_policy
from suprem_auto.training.trainers.base import BaseTrainer
from suprem_auto.training.trainers.pretrained_init import load_into


class SupremTrainer(BaseTrainer):
    """nnU-Net v2 recipe with the plans' architecture (plain U-Net by default); -pretrained loads weights as is."""

    description = ("nnU-Net v2 recipe (SGD 0.01 Nesterov 0.99, poly 0.9, Dice+CE, deep supervision, "
                   "1000x250 iterations) with the plans' architecture")

    def initialize_from_pretrained(self, name_or_path: str, weights_dir: Optional[Path] = None) -> None:
        """Load pre-trained weights (zoo name, SuPreM file or one of our checkpoints) into the network."""
        if self.network is None:
            self.initialize()
        summary, warnings = load_into(self.network, self.architecture["name"], name_or_path, self.effective_plans(),
                                      self.configuration, self.fold_dir / "load_report.json", weights_dir,
                                      self.dataset_json)
        for line in summary.splitlines():
            self.log.message(line)
        for warning in warnings:
            self.log.message(f"WARNING (preprocessing differs from the checkpoint's): {warning}")


class FineTuneTrainer(SupremTrainer):
    """A backbone's fine-tuning trainer: the default fine-tuning policy (``training/finetune_policy.py``, chosen by
    measurement; SuPreM's own AdamW 1e-4 recipe is the policy ``suprem``) without deep supervision.

    ``--finetune_policy`` picks another policy; ``freeze_encoder_fraction`` / ``freeze_encoder_epochs`` keep the
    encoder at lr 0 for a share of the run, ``encoder_layer_decay`` and ``lr_multipliers`` scale the groups' rates.
    """

    description = "default fine-tuning policy, no deep supervision"

    @classmethod
    def default_config(cls) -> TrainingConfig:
        policy = get_policy(None)
        return TrainingConfig(deep_supervision=False).replace(**(policy.changes if policy is not None else {}))


_FINETUNE_TRAINERS: Dict[Backbone, Type[FineTuneTrainer]] = {}


def finetune_trainer(backbone: str) -> Type[FineTuneTrainer]:
    """The fine-tuning trainer of a registered backbone: a ``FineTuneTrainer`` subclass named after the entry's
    ``default_trainer`` with ``backbone`` pinned (made once per registry entry, so the class stays the same)."""
    entry = get_backbone(backbone)
    if entry.default_trainer is None:
        raise ValueError(f"backbone {backbone!r} declares no default_trainer (it trains with SupremTrainer)")
    if entry not in _FINETUNE_TRAINERS:
        _FINETUNE_TRAINERS[entry] = type(entry.default_trainer, (FineTuneTrainer,), {
            "__module__": __name__, "__qualname__": entry.default_trainer, "backbone": entry.name,
            "__doc__": f"{FineTuneTrainer.__doc__.splitlines()[0]} With the {entry.name} backbone.",
            "description": f"{entry.description or entry.name} backbone + {FineTuneTrainer.description}"})
    return _FINETUNE_TRAINERS[entry]


# The shipped backbones' trainers, importable by name (their registry entries declare these names).
SupremUNetTrainer = finetune_trainer("suprem_unet")
SegResNetTrainer = finetune_trainer("segresnet")
SwinUNETRTrainer = finetune_trainer("swin_unetr")

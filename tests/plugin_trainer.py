"""A user's trainer outside the package, as ``suprem_train -tr tests.plugin_trainer:MyTrainer`` imports it.

It is what docs/ARCHITECTURE.md ("How to extend", "A new trainer") shows: a subclass of one of our trainers that
changes its default hyper-parameters and adds to one hook. Not a test module (no ``test_`` prefix).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from suprem_auto.training.config import TrainingConfig
from suprem_auto.training.trainers import SupremTrainer
from suprem_auto.utils.atomic import append_line

EPOCHS_FILE = "plugin_epochs.txt"


class MyTrainer(SupremTrainer):
    """nnU-Net recipe with half the learning rate and no deep supervision; notes every finished epoch."""

    description = "plugin: SupremTrainer at lr 0.005 without deep supervision"

    @classmethod
    def default_config(cls) -> TrainingConfig:
        return super().default_config().replace(lr=0.005, deep_supervision=False)

    def on_epoch_end(self, epoch: int, train_losses: Sequence[float], val_results: Sequence[Dict[str, torch.Tensor]],
                     epoch_time: float) -> None:
        super().on_epoch_end(epoch, train_losses, val_results, epoch_time)
        if self.dist.is_main:
            append_line(self.fold_dir / EPOCHS_FILE, f"{epoch} {sum(train_losses) / max(len(train_losses), 1):.6f}")


class NotATrainer:
    """Has the right shape of name but is no BaseTrainer: ``-tr`` must refuse it."""

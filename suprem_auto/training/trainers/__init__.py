"""Trainer classes: BaseTrainer (hooks + nnU-Net recipe) and the registered concrete trainers."""
from suprem_auto.training.trainers.base import BaseTrainer
from suprem_auto.training.trainers.suprem import (FineTuneTrainer, SegResNetTrainer, SupremTrainer, SupremUNetTrainer,
                                                  SwinUNETRTrainer)

__all__ = ["BaseTrainer", "FineTuneTrainer", "SegResNetTrainer", "SupremTrainer", "SupremUNetTrainer",
           "SwinUNETRTrainer"]

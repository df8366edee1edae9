"""Checkpoints of a fold as hooks of :class:`BaseTrainer` (a mixin): what is saved, how a run resumes exactly, how
weights are loaded for ``--val``; files are written atomically and read with ``weights_only=True``."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from suprem_auto.pretrained.source_preprocessing import describe_preprocessing
from suprem_auto.training import checkpointing
from suprem_auto.training.budget import schedule_from_json


class CheckpointHooks:
    """hyperparameters.json, checkpoint content, save / resume / load_weights."""

    def hyperparameters(self) -> Dict[str, Any]:
        """Exact values of this run (written to hyperparameters.json)."""
        return {"trainer_name": self.trainer_name, "trainer_class": type(self).__name__,
                "configuration": self.configuration, "plans_name": self.plans.get("plans_name"),
                "fold": str(self.fold), "pretrained": self.pretrained, "patch_size": self.patch_size,
                "global_batch_size": self.global_batch_size,
                "world_size": self.dist.world_size, "device": str(self.device), "architecture": self.architecture,
                "num_input_channels": self.num_input_channels, "num_outputs": self.num_outputs,
                "torch_version": torch.__version__, "precision": self.precision,
                "channels_last": self.channels_last, "recipe": self.recipe,
                "finetune_policy": self.finetune_policy,
                "compute_threads": self.compute_threads, "num_workers": self.num_workers,
                "budget_plan": self.schedule.to_json() if self.schedule is not None and self.schedule.budgeted
                else None,
                "config": self.config.to_json()}

    def checkpoint_content(self) -> Dict[str, Any]:
        weights = {k: v.contiguous() for k, v in self.network.state_dict().items()}  # plain layout on disk
        return {"network_weights": weights,
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": {"name": self.config.lr_schedule, "epoch": self.current_epoch},
                "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
                "epoch": self.current_epoch, "trainer_name": self.trainer_name,
                "configuration": self.configuration, "plans_name": self.plans.get("plans_name"),
                "architecture": self.architecture, "num_input_channels": self.num_input_channels,
                "num_outputs": self.num_outputs,
                "inference_allowed_mirroring_axes": list(self.config.mirror_axes or []),
                "config": self.config.to_json(),
                "logging": {"history": self.log.history, "ema": self.ema, "best_ema": self.best_ema},
                "rng_state": checkpointing.capture_rng_state(),
                "budget_plan": self._plan_for_checkpoint(), "run_id": getattr(self, "run_id", None),
                "preprocessing": self.preprocessing_summary}

    @functools.cached_property
    def preprocessing_summary(self) -> Dict[str, Any]:
        """What this run trains on (dataset, spacing, normalisation, channels, labels), stored in every checkpoint
        so a later fine-tuning run can say how its data differs; fixed for the run, so worked out once."""
        return describe_preprocessing(self.effective_plans(), self.configuration, self.dataset_json)

    def _plan_for_checkpoint(self) -> Optional[Dict[str, Any]]:
        if self.schedule is None:
            return None
        self.schedule.elapsed_s = self.clock.elapsed_s
        return self.schedule.to_json()

    def save(self, name: str) -> None:
        if self.dist.is_main:
            checkpointing.save_checkpoint(self.fold_dir / name, self.checkpoint_content())

    def resume(self, path: Path) -> None:
        """Restore everything needed to continue exactly where ``path`` was written."""
        if self.network is None:
            self.initialize()
        ckpt = checkpointing.load_checkpoint(path, map_location=str(self.device))
        self.network.load_state_dict(ckpt["network_weights"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state"):
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
        self.current_epoch = int(ckpt["epoch"])
        logging = ckpt.get("logging", {})
        self.ema, self.best_ema = logging.get("ema"), logging.get("best_ema")
        self.log.restore(logging.get("history", []))
        stored = ckpt.get("budget_plan")
        if stored and stored.get("kind") != "epochs":  # epochs are rebuilt from the config (--c --epochs N)
            schedule = schedule_from_json(stored)
            self.schedule = schedule
            self.clock.continue_from(schedule.elapsed_s)
            self.config = self.config.replace(
                budget_s=getattr(schedule, "budget_s", None) if schedule.time_based else None,
                iterations=getattr(schedule, "planned_iterations", None) if not schedule.time_based else None,
                lr=schedule.lr, lr_schedule=schedule.schedule)
            self.log.message(f"resumed budget {schedule.describe()} ({schedule.elapsed_s:.0f}s used)")
        if "rng_state" in ckpt:
            checkpointing.restore_rng_state(ckpt["rng_state"])
        self.log.message(f"resumed from {path.name} at epoch {self.current_epoch}")

    def load_weights(self, path: Path) -> None:
        """Load only network weights (for --val or inference) from one of our checkpoints."""
        if self.network is None:
            self.initialize()
        self.network.load_state_dict(checkpointing.load_checkpoint(path, str(self.device))["network_weights"])

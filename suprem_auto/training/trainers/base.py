"""BaseTrainer: nnU-Net v2's training recipe as a sequence of small, overridable hook methods.

Life cycle (driven by ``training/run.py``): ``initialize()`` (network, optimiser, loss) -> ``resume()`` (``--c``),
``initialize_from_pretrained()`` (``-pretrained``) or ``load_weights()`` (``--val``) -> ``run_training()``
(``on_train_start``; per epoch: ``on_epoch_start``, ``train_step`` until the schedule ends the epoch,
``validation_step`` x the schedule's validation iterations, ``on_epoch_end``; then ``on_train_end``, which writes
``checkpoint_final.pth``) -> ``perform_final_validation()``.

``run_training`` is the only loop: the run's schedule (``training/budget.py``: epochs, ``--iterations`` or a
``--budget`` clock) gives the lr before every step and says when an epoch and the run end.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from suprem_auto.dataset import parse_labels
from suprem_auto.planning.view import ConfigurationPlan, plans_view
from suprem_auto.training import augmentation, cascade, checkpointing, ddp, precision, reserve
from suprem_auto.training.budget import ClockSchedule, RunClock, RunSchedule, schedule_for
from suprem_auto.training.config import TrainingConfig, mirror_axes_for_patch
from suprem_auto.training.data.workers import BatchStream, default_num_workers
from suprem_auto.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
from suprem_auto.training.metrics import dice_from_counts, region_tp_fp_fn, tp_fp_fn
from suprem_auto.training.region_loss import DiceBCELoss
from suprem_auto.training.optim import apply_learning_rate, build_optimizer
from suprem_auto.training.progress import RunLog
from suprem_auto.training.trainers.checkpoint_hooks import CheckpointHooks
from suprem_auto.training.trainers.data_hooks import DataHooks
from suprem_auto.training.trainers.final_validation import FinalValidationHooks
from suprem_auto.training.trainers.width_hooks import WidthHooks
from suprem_auto.utils.atomic import atomic_write_json


class BaseTrainer(DataHooks, FinalValidationHooks, CheckpointHooks, WidthHooks):
    """Trains one fold of one configuration. Subclasses change :meth:`default_config` or override hooks.

    Build it through :func:`suprem_auto.training.run.build_trainer` (folders, plans, overrides, recipe) and run it
    with :func:`suprem_auto.training.run.train_fold` (lock, run folder, resume)::

        from suprem_auto.paths import resolve_roots
        from suprem_auto.training.run import build_trainer, train_fold
        roots = resolve_roots(raw="raw", preprocessed="preprocessed", results="results")
        trainer = build_trainer("4", "3d_fullres", 0, roots, device="cpu", overrides={"iterations": 50})
        train_fold(trainer)          # checkpoints, log and validation in trainer.fold_dir

    The loop (:meth:`run_training`) asks the run's schedule (``training/budget.py``) for the learning rate and when
    an epoch or the run ends; subclasses change hooks such as :meth:`train_step` or :meth:`on_epoch_end`
    (docs/ARCHITECTURE.md, "A new trainer").
    """

    #: architecture this trainer requires (None: whatever the plans configuration names)
    backbone: Optional[str] = None
    #: one line for ``suprem_train -h``
    description: str = "nnU-Net v2 recipe"

    @classmethod
    def default_config(cls) -> TrainingConfig:
        """The trainer's hyper-parameters before CLI overrides."""
        return TrainingConfig()

    def __init__(self, plans: Dict[str, Any], configuration: str, fold: Union[int, str], dataset_json: Dict[str, Any],
                 preprocessed_dataset: Path, fold_dir: Path, config: TrainingConfig, device: torch.device,
                 trainer_name: str, raw_dataset: Optional[Path] = None,
                 dist_ctx: Optional[ddp.DistributedContext] = None, echo: bool = True) -> None:
        self.plans = plans
        self.configuration = configuration
        #: the typed plan of this configuration (an unknown one raises PlansError, a ValueError, naming the known)
        self.configuration_plan: ConfigurationPlan = plans_view(plans).configuration(configuration)
        self.fold = fold
        self.dataset_json = dataset_json
        self.labels = parse_labels(dataset_json)  # with regions: one sigmoid output per region
        self.preprocessed_dataset = Path(preprocessed_dataset)
        self.raw_dataset = raw_dataset
        self.fold_dir = Path(fold_dir)
        self.config = config
        self.device = device
        self.trainer_name = trainer_name
        self.dist = dist_ctx or ddp.DistributedContext()
        self.log = RunLog(self.fold_dir, enabled=self.dist.is_main, echo=echo)
        planned_patch = list(self.configuration_plan.patch_size)
        self.patch_size: List[int] = list(config.patch_size or planned_patch)
        planned_dims = len(planned_patch)
        if len(self.patch_size) != planned_dims or planned_dims not in (2, 3):
            raise ValueError(f"configuration '{configuration}': patch {self.patch_size} must have "
                             f"{planned_dims} sizes like the plans' {planned_patch} (2D or 3D)")
        # 2D: slices along axis 0, in-plane mirroring only (the default (0, 1, 2) becomes nnU-Net's (0, 1))
        self.config = config = config.replace(mirror_axes=mirror_axes_for_patch(config.mirror_axes, planned_dims))
        self.global_batch_size: int = int(config.batch_size or self.configuration_plan.batch_size)
        self.num_input_channels = len(dataset_json["channel_names"])
        # cascade (3d_cascade_fullres): one more input channel per foreground label, the previous stage's labels
        self.previous_stage_labels = cascade.previous_stage_labels(self.configuration_plan, self.labels)
        self.num_input_channels += len(self.previous_stage_labels or ())
        self.num_outputs = self.labels.num_segmentation_heads
        self.current_epoch = 0
        self.best_ema: Optional[float] = None
        self.ema: Optional[float] = None
        self.network: Optional[nn.Module] = None       # plain module (weights saved from here)
        self.forward_module: Optional[nn.Module] = None  # DDP / compiled wrapper used for forward passes
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.grad_scaler: Optional[torch.amp.GradScaler] = None
        self.loss: Optional[nn.Module] = None
        self._streams: List[BatchStream] = []
        self.pretrained: Optional[str] = None  # name or path of the initial weights (recorded only)
        self.recipe: Optional[Dict[str, Any]] = None  # short-budget recipe changes applied (recorded only)
        self.finetune_policy: Optional[Dict[str, Any]] = None  # fine-tuning policy applied (recorded only)
        self.precision = "fp32"                          # set by initialize(): fp32, bf16 or fp16
        self.channels_last = False
        self.clock = RunClock()  # a budget's clock starts when the trainer is built
        self.schedule: Optional[RunSchedule] = None  # from the config when training starts, or restored by resume()
        self._validation_workload: Optional[reserve.ValidationWorkload] = None
        self.final_validation_planned = True  # train_fold(run_validation=False) clears it: nothing to reserve

    # ----------------------------------------------------------------- set-up hooks
    @property
    def architecture(self) -> Dict[str, Any]:
        """The architecture entry used (the plans' one, or the trainer's backbone with default kwargs, at
        ``--network_width``)."""
        return plans_view(self.effective_plans()).configuration(self.configuration).architecture.to_json()

    def effective_plans(self) -> Dict[str, Any]:
        """The plans with this trainer's backbone, width and patch, as copied to the results folder for inference:
        applied and validated in one place (:func:`suprem_auto.planning.apply_overrides`). The batch size stays the
        planned one, so folds trained with different ``--batch_size`` share one plans.json."""
        from suprem_auto.planning.overrides import apply_overrides

        return apply_overrides(self.plans, self.configuration,
                               {"backbone": self.backbone, "network_width": self.config.network_width,
                                "patch_size": [int(p) for p in self.patch_size]},
                               source=f"plans '{self.plans.get('plans_name')}' with this run's options")

    def build_network(self) -> nn.Module:
        from suprem_auto.networks import build_network

        return build_network(self.architecture, self.num_input_channels, self.num_outputs,
                             self.config.deep_supervision)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.network, self.config)

    def build_loss(self) -> nn.Module:
        """Dice + CE on softmax outputs, or Dice + BCE per region on sigmoid outputs when dataset.json declares
        regions (``ce_weight`` weighs the BCE); both take the integer label map as target."""
        batch_dice = self.configuration_plan.batch_dice
        if self.labels.has_regions:
            base = DiceBCELoss(self.labels.regions, batch_dice=batch_dice, dice_weight=self.config.dice_weight,
                               bce_weight=self.config.ce_weight, ignore_label=self.labels.ignore_label)
        else:
            base = DiceCELoss(batch_dice=batch_dice, dice_weight=self.config.dice_weight,
                              ce_weight=self.config.ce_weight, ignore_label=self.labels.ignore_label)
        if not getattr(self.network, "deep_supervision", False):
            return base
        num_outputs = self._count_outputs()
        return DeepSupervisionLoss(base, deep_supervision_weights(num_outputs, 1e-6 if self.dist.enabled else 0.0))

    def training_transforms(self):
        return cascade.with_previous_stage(
            augmentation.training_transforms(self.patch_size, self.config.mirror_axes, self.config.augmentation),
            self.previous_stage_labels)

    def validation_transforms(self):
        return cascade.with_previous_stage(augmentation.validation_transforms(), self.previous_stage_labels)

    def initialize(self) -> None:
        """Build network, optimiser, grad scaler and loss on the device (wrapped for DDP / compile); idempotent."""
        if self.network is not None:
            return
        torch.manual_seed(self.config.seed)
        ddp.init_distributed(self.dist, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(self.compute_threads)
        self.network = self.build_network().to(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.network = nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
        self.channels_last = (not self.is_2d  # channels_last_3d is a 5D format
                              and precision.use_channels_last(self.config.channels_last, self.device, self.network))
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        self.optimizer = self.configure_optimizer()
        self.precision = precision.choose_precision(self.config.precision, self.device)
        if self.precision == "fp16" and not (self.config.amp and self.device.type == "cuda"):
            self.precision = "fp32"
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.loss = self.build_loss()
        self.forward_module = self._wrap(self.network)

    @property
    def compute_threads(self) -> int:
        """Torch threads on CPU: the configured number (``--num_threads``), else ``OMP_NUM_THREADS`` when the
        environment sets it (a scheduler or a user running several jobs side by side: more threads than cores
        make OpenMP threads spin against each other, measured 5-10x slower), else the cores minus the workers plus
        one. Augmentation workers fill their queue and then wait, so one core is shared (on 2 cores: 2 threads + 1
        worker trained 1.2x faster than 1 + 1, benchmarks/RESULTS.md)."""
        if self.config.num_threads:
            return self.config.num_threads
        from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if from_env.isdigit() and int(from_env) > 0:
            return int(from_env)
        return max(1, default_num_workers(cap=256) - self.num_workers + 1)

    @property
    def num_workers(self) -> int:
        """Augmentation workers: the configured number, else one per core (at most 12) on GPU and a quarter of
        the cores on CPU, where the network itself needs the cores."""
        if self.config.num_workers is not None:
            return self.config.num_workers
        if self.device.type == "cpu":
            return max(1, default_num_workers(cap=256) // 4)
        return default_num_workers(cap=12)

    def _wrap(self, network: nn.Module) -> nn.Module:
        module = network
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(network, device_ids=[self.dist.local_rank]
                                             if self.device.type == "cuda" else None)
        if self.config.compile:
            module = torch.compile(module)
        return module

    def _count_outputs(self) -> int:
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad():
            out = self.network(torch.zeros((1, self.num_input_channels, *self.patch_size), device=self.device))
        self.network.train(was_training)
        return len(out) if isinstance(out, (list, tuple)) else 1

    # ----------------------------------------------------------------- data
    def _to_device(self, batch: Dict[str, Any]) -> "tuple[torch.Tensor, torch.Tensor]":
        data = torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32))
        target = torch.from_numpy(np.ascontiguousarray(batch["seg"]).astype(np.int64))
        data = precision.to_memory_format(data.to(self.device, non_blocking=True), self.channels_last)
        return data, target.to(self.device, non_blocking=True)

    def _autocast(self):
        return precision.autocast_context(self.precision, self.device)

    # ----------------------------------------------------------------- steps
    def _forward(self, data: torch.Tensor):
        try:
            return self.forward_module(data)
        except Exception as exc:
            if not self.config.compile or self.forward_module is None or not hasattr(self.forward_module, "_orig_mod"):
                raise
            self.log.message(f"WARNING: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             f"continuing without compilation")
            self.forward_module = self.forward_module._orig_mod
            return self.forward_module(data)

    def train_step(self, batch: Dict[str, Any]) -> float:
        """One optimiser step; returns the loss."""
        data, target = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            output = self._forward(data)
            loss = self.loss(output, target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss and TP/FP/FN per foreground class (or per region) on one validation batch (highest-resolution
        output)."""
        data, target = self._to_device(batch)
        with self._autocast():
            output = self._forward(data)
            loss = self.loss(output, target)
        top = output[0] if isinstance(output, (list, tuple)) else output
        if self.labels.has_regions:
            tp, fp, fn = region_tp_fp_fn(top.float(), target, self.labels.regions, self.labels.ignore_label)
        else:
            tp, fp, fn = tp_fp_fn(top.float(), target, self.labels.ignore_label)
        return {"loss": loss.detach().cpu().double(), "tp": tp, "fp": fp, "fn": fn}

    # ----------------------------------------------------------------- epoch hooks
    def learning_rate(self, epoch: int) -> float:
        """The lr of the next step, as the run's schedule answers it (per epoch, iteration or share of the time)."""
        return self.ensure_schedule().learning_rate(epoch, self.clock.elapsed_s)

    def ensure_schedule(self) -> RunSchedule:
        """The run's schedule (epochs, --iterations or --budget), built from the config on first use."""
        if self.schedule is None:
            self.schedule = schedule_for(self.config)
        return self.schedule

    def frozen_groups(self, epoch: int) -> List[str]:
        """Parameter groups at lr 0 now: the encoder for its first ``freeze_encoder_epochs`` epochs or the first
        ``freeze_encoder_fraction`` of the run (a share of the epochs, iterations or training time)."""
        if epoch < self.config.freeze_encoder_epochs:
            return ["encoder"]
        if self.config.freeze_encoder_fraction > 0 and \
                self.ensure_schedule().run_progress(epoch, self.clock.elapsed_s) < self.config.freeze_encoder_fraction:
            return ["encoder"]
        return []

    def _patch_source(self) -> str:
        """Who changed the planned patch: the short-budget recipe (training/budget_patch.py) or a flag."""
        recipe = self.recipe or {}
        if "patch_size" in recipe.get("changes", {}) and "patch_size" not in recipe.get("overridden_by_flags", []):
            return "short-budget recipe: a smaller 2D crop buys more iterations"
        return "--patch_size"

    def on_train_start(self) -> None:
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            atomic_write_json(self.fold_dir / "hyperparameters.json", self.hyperparameters())
        budgeted = self.ensure_schedule().budgeted
        length = ("epochs planned over the budget" if budgeted
                  else f"epochs {self.current_epoch}->{self.config.num_epochs}")
        planned = list(self.configuration_plan.patch_size)
        patch = (f"patch {self.patch_size}" if self.patch_size == planned
                 else f"patch {self.patch_size} (planned {planned}; {self._patch_source()})")
        self.log.message(f"{self.trainer_name}: fold {self.fold}, configuration {self.configuration}, "
                         f"{patch}, batch {self.global_batch_size}, device {self.device} "
                         f"({self.precision}{', channels_last_3d' if self.channels_last else ''}), "
                         f"ranks {self.dist.world_size}, {length}")
        if (not budgeted and self.config.lr_schedule == "warmup_cosine"
                and self.config.warmup_epochs >= self.config.num_epochs):
            self.log.message(f"WARNING: warm-up ({self.config.warmup_epochs} epochs) is not shorter than the run "
                             f"({self.config.num_epochs} epochs): the peak lr is never reached (--warmup_epochs)")

    def on_epoch_start(self, epoch: int) -> None:
        frozen = self.frozen_groups(epoch)
        apply_learning_rate(self.optimizer, self.learning_rate(epoch), frozen)
        self.network.train()

    def on_epoch_end(self, epoch: int, train_losses: Sequence[float], val_results: Sequence[Dict[str, torch.Tensor]],
                     epoch_time: float) -> None:
        """Reduce metrics over ranks, update the EMA, log, and save latest / best checkpoints."""
        totals = torch.stack([torch.tensor(sum(train_losses), dtype=torch.float64),
                              torch.tensor(float(len(train_losses)), dtype=torch.float64),
                              sum(r["loss"] for r in val_results), torch.tensor(float(len(val_results)),
                                                                                dtype=torch.float64)])
        counts = torch.stack([sum(r[k] for r in val_results) for k in ("tp", "fp", "fn")])
        if self.dist.enabled:  # NCCL reduces device tensors only
            totals = ddp.all_reduce_sum(totals.to(self.device), self.dist).cpu()
            counts = ddp.all_reduce_sum(counts.to(self.device), self.dist).cpu()
        dice = dice_from_counts(counts[0], counts[1], counts[2])
        finite = [d for d in dice if not math.isnan(d)]
        mean_dice = float(np.mean(finite)) if finite else 0.0
        m = self.config.ema_momentum
        self.ema = mean_dice if self.ema is None else m * self.ema + (1 - m) * mean_dice
        record = {"epoch": epoch, "train_loss": float(totals[0] / totals[1]), "val_loss": float(totals[2] / totals[3]),
                  "pseudo_dice": dice, "mean_pseudo_dice": mean_dice, "ema_pseudo_dice": self.ema,
                  "lr": max(g["lr"] for g in self.optimizer.param_groups), "epoch_time_s": epoch_time,
                  "frozen": self.frozen_groups(epoch),
                  "eta_s": self.eta_seconds(epoch, epoch_time)}
        if self.schedule is not None:  # where the epoch ends on the iteration and time axes
            record.update(iteration=self.schedule.iteration, elapsed_s=self.clock.elapsed_s,
                          sec_per_iteration=self.schedule.sec_per_iteration, precision=self.precision)
        self.log.epoch_end(record)
        self.current_epoch = epoch + 1
        if self.best_ema is None or self.ema > self.best_ema:
            self.best_ema = self.ema
            self.save(checkpointing.BEST)
            self.log.message(f"new best EMA pseudo-Dice {self.ema:.4f}")
        self.save(checkpointing.LATEST)

    def eta_seconds(self, epoch: int, epoch_time: float) -> float:
        """Seconds left: what the schedule says (budget time left, iterations left), else the epochs left at this
        epoch's time."""
        left = self.ensure_schedule().time_left_s(epoch, self.clock.elapsed_s)
        if left is not None:
            return max(0.0, left)
        return epoch_time * (self.config.num_epochs - epoch - 1)

    def write_schedule(self) -> None:
        """``budget_plan.json`` in the fold folder (rank 0, --budget / --iterations): the schedule as it stands."""
        if self.dist.is_main and self.schedule is not None and self.schedule.budgeted:
            self.schedule.elapsed_s = self.clock.elapsed_s
            atomic_write_json(self.fold_dir / "budget_plan.json", self.schedule.to_json())

    def on_train_end(self) -> None:
        schedule = self.ensure_schedule()
        if schedule.budgeted:
            last_lr = max(g["lr"] for g in self.optimizer.param_groups)
            budget = getattr(schedule, "budget_s", None)
            self.log.message(f"budget: {schedule.iteration} iterations in {self.current_epoch} epochs, "
                             f"{self.clock.elapsed_s:.0f}s elapsed" + (f" of {budget:.0f}s" if budget else "")
                             + f", last lr {last_lr:.3g}")
            self.record_width_outcome(schedule.iteration, schedule.sec_per_iteration)
            if schedule.iteration == 0 and isinstance(schedule, ClockSchedule):
                self.log.message(f"WARNING: the budget left no time to train (set-up {schedule.train_start_s:.0f}s, "
                                 f"{schedule.reserve_s:.0f}s reserved for the end of the run): give a longer --budget")
        self.save(checkpointing.FINAL)
        self.write_schedule()
        self.log.message(f"training done: {self.current_epoch} epochs, best EMA pseudo-Dice "
                         f"{self.best_ema if self.best_ema is not None else float('nan'):.4f}")

    # ----------------------------------------------------------------- main loop
    def run_training(self) -> None:
        """The one training loop, for every schedule (epochs, --iterations, --budget): epochs until the schedule
        says the run is done (resumable), then checkpoint_final.pth."""
        if self.network is None:
            self.initialize()
        schedule = self.ensure_schedule()
        self.on_train_start()
        schedule.begin(self.clock.elapsed_s)
        if isinstance(schedule, ClockSchedule) and self.final_validation_planned and self.end_of_run_cases():
            self._validation_workload = self.final_validation_workload()
        self.estimate_final_validation()
        self.log.message(schedule.describe())
        if str(self.fold) == "all":
            if not self.final_validation_runs():
                check = len(self.postprocessing_check_cases())
                self.log.message("fold all: no final validation after training (its validation cases are the "
                                 "training cases); --val_on_train runs it anyway"
                                 + (f"; {check} training cases will be predicted to choose the post-processing on "
                                    f"(--postprocessing_cases)" if check else ""))
            self.log.message(f"fold all: pseudo-Dice on {self.config.val_iters_per_epoch} batches of training cases "
                             f"per epoch (a fit curve, not a validation); --val_iters sets more")
        self.write_schedule()
        if not self._rank0_answers(schedule.run_done(self.current_epoch, self.clock.elapsed_s))[0]:
            train_stream, val_stream = self.build_streams()
            try:
                while True:
                    self.run_epoch(self.current_epoch, train_stream, val_stream)
                    if self._rank0_answers(schedule.run_done(self.current_epoch, self.clock.elapsed_s))[0]:
                        break
            finally:
                self.close_streams()
        self.on_train_end()

    def run_epoch(self, epoch: int, train_stream: BatchStream, val_stream: BatchStream) -> None:
        """One epoch: before every step the schedule gives the lr and says whether the epoch (or run) ends; then
        the pseudo-Dice validation iterations and :meth:`on_epoch_end`."""
        schedule = self.ensure_schedule()
        start, epoch_start_s = time.monotonic(), self.clock.elapsed_s
        self.on_epoch_start(epoch)
        losses: List[float] = []
        bar = tqdm(total=getattr(schedule, "iters_per_epoch", None), desc=f"epoch {epoch}",
                   disable=not self.dist.is_main, leave=False, dynamic_ncols=True)
        while True:
            elapsed = self.clock.elapsed_s
            done = bool(losses) and schedule.epoch_done(len(losses), elapsed - epoch_start_s, elapsed)
            done, lr = self._rank0_answers(done, self.learning_rate(epoch))
            if done:
                break
            apply_learning_rate(self.optimizer, lr, self.frozen_groups(epoch))
            step_start = time.monotonic()
            losses.append(self.train_step(next(train_stream)))
            schedule.record_step(time.monotonic() - step_start)
            bar.update(1)
            left = schedule.time_left_s(epoch, self.clock.elapsed_s) if schedule.time_based else None
            bar.set_postfix_str(f"loss {losses[-1]:.4f}" + (f", {left:.0f}s left" if left is not None else ""))
        bar.close()
        end_start = time.monotonic()
        self.network.eval()
        val_results = [self.validation_step(next(val_stream)) for _ in range(schedule.val_iterations(len(losses)))]
        self.on_epoch_end(epoch, losses, val_results, time.monotonic() - start)
        schedule.record_epoch_end(time.monotonic() - end_start)
        self.estimate_final_validation()
        self.write_schedule()

    def _rank0_answers(self, *answers: float) -> List[float]:
        """The schedule's answers as rank 0 gave them (distributed clock schedules: every rank's clock differs a
        little, but all must take the same lr and end epochs together); unchanged otherwise."""
        if not (self.dist.enabled and self.ensure_schedule().time_based):
            return [float(a) for a in answers]
        values = torch.tensor([float(a) if self.dist.is_main else 0.0 for a in answers], dtype=torch.float64)
        return [float(v) for v in ddp.all_reduce_sum(values.to(self.device), self.dist).cpu()]

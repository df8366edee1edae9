"""Training hyper-parameters as one declared dataclass, overridable from the CLI and recorded per run."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union


@dataclass
class TrainingConfig:
    """Every hyper-parameter a trainer uses. Defaults are nnU-Net v2's recipe; subclasses change them.

    ``None`` for ``batch_size``/``patch_size`` means "take it from the plans configuration".
    """

    num_epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters_per_epoch: int = 50
    batch_size: Optional[int] = None
    patch_size: Optional[List[int]] = None
    optimizer: str = "sgd"                  # "sgd" (Nesterov) or "adamw"
    lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    lr_schedule: str = "poly"               # "poly", "warmup_cosine" or "warmup_poly"
    poly_exponent: float = 0.9
    warmup_epochs: int = 0
    lr_multipliers: Dict[str, float] = field(default_factory=lambda: {"encoder": 1.0, "decoder": 1.0, "head": 1.0})
    freeze_encoder_epochs: int = 0
    freeze_encoder_fraction: float = 0.0    # encoder at lr 0 for this share of the run (epochs, iterations or time)
    encoder_layer_decay: float = 1.0        # encoder stage k of n (0 = input side) gets lr x decay ** (n - k)
    finetune_policy: Optional[str] = None   # -pretrained: the policy laid over the recipe (training/finetune_policy)
    oversample_foreground: float = 0.33
    grad_clip: float = 12.0
    deep_supervision: bool = True
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    ema_momentum: float = 0.9
    augmentation: bool = True
    mirror_axes: Optional[List[int]] = field(default_factory=lambda: [0, 1, 2])  # 2D: (0, 1), mirror_axes_for_patch
    num_workers: Optional[int] = None       # None: a quarter of the cores on CPU, one per core (<= 12) on GPU
    num_threads: Optional[int] = None       # torch threads on CPU; None: cores - workers + 1 (BaseTrainer)
    network_width: float = 1.0              # multiplies the backbone's width argument (networks.scale_width)
    width_candidates: Optional[List[float]] = None  # --budget: widths to time on this machine (training/width_choice)
    augmentation_min_passes: Optional[float] = None  # --budget: augment only if the run sees each training sample
                                                     # this often (training/augmentation_choice); None: as set
    seed: int = 12345
    amp: bool = True                        # only takes effect on CUDA
    compile: bool = False
    precision: str = "auto"                 # "auto" (CUDA: fp16 AMP; CPU: bf16 where native, else fp32), bf16, fp32
    channels_last: str = "auto"             # channels_last_3d memory format: "auto" (on for CPU), "on", "off"
    budget_s: Optional[float] = None        # wall-time budget (training/budget.py); None: epochs as configured
    iterations: Optional[int] = None        # fixed number of iterations laid out like a budget
    warmup_fraction: float = 0.05           # warm-up share of a budgeted run (warmup_cosine)
    val_on_train: bool = False              # fold 'all': run the final validation (on the training cases) anyway
    postprocessing_cases: int = 16          # fold 'all': training cases the largest-component post-processing is
                                            # chosen on after training (0: none; training/trainers/final_validation)
    num_folds: Optional[int] = None         # cross-validation folds; None: an existing splits file's count, else 5
    subject_pattern: Optional[str] = None   # regex grouping case ids into subjects (wins over dataset.json's)

    def replace(self, **changes: Any) -> "TrainingConfig":
        """A copy with some fields changed (unknown names raise a clear error)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def with_augmentation(self, augment: bool) -> "TrainingConfig":
        """A copy with augmentation on or off; mirroring is part of it, so a run trained without augmentation does
        not mirror at test time either."""
        return self.replace(augmentation=augment, mirror_axes=self.mirror_axes if augment else None)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrainingConfig":
        """The configuration recorded by :meth:`to_json` (fields unknown to this version are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def mirror_axes_for_patch(axes: Optional[List[int]], spatial_dims: int) -> Optional[List[int]]:
    """The mirror axes a ``spatial_dims``-D patch can use: axes beyond it are dropped, so the default (0, 1, 2)
    becomes nnU-Net's (0, 1) for 2D (the in-plane axes of the 2D patch); ``None`` (no mirroring) stays ``None``."""
    if axes is None:
        return None
    return [int(a) for a in axes if 0 <= int(a) < spatial_dims]


# CLI flag -> (config field, type, help). Only flags given on the command line override the trainer's defaults.
CLI_OVERRIDES = {
    "epochs": ("num_epochs", int, "number of epochs (an epoch is --iters_per_epoch iterations)"),
    "iters_per_epoch": ("iters_per_epoch", int, "training iterations per epoch (nnU-Net: 250)"),
    "val_iters": ("val_iters_per_epoch", int, "validation iterations per epoch for the pseudo-Dice (nnU-Net: 50)"),
    "lr": ("lr", float, "initial / peak learning rate"),
    "weight_decay": ("weight_decay", float, "weight decay"),
    "batch_size": ("batch_size", int, "global batch size (split across DDP ranks); default from the plans"),
    "warmup_epochs": ("warmup_epochs", int, "linear warm-up epochs (warmup_cosine schedule)"),
    "freeze_encoder_epochs": ("freeze_encoder_epochs", int, "keep the encoder frozen (lr 0) for this many epochs"),
    "num_workers": ("num_workers", int, "data augmentation worker processes (0: in the main process)"),
    "num_threads": ("num_threads", int, "torch compute threads on CPU (default: cores - workers + 1)"),
    "network_width": ("network_width", float, "multiply the network's feature widths (a narrowed SuPreM backbone "
                                              "cannot load released weights); the short-budget recipe picks it from "
                                              "the budget"),
    "seed": ("seed", int, "random seed of sampling, augmentation and initialisation"),
    "iterations": ("iterations", int, "train exactly N iterations, schedule and epochs laid over them like a budget"),
    "optimizer": ("optimizer", str, "sgd (Nesterov) or adamw"),
    "lr_schedule": ("lr_schedule", str, "poly, warmup_cosine or warmup_poly"),
    "freeze_encoder_fraction": ("freeze_encoder_fraction", float,
                                "keep the encoder frozen (lr 0) for this share of the run (0-1)"),
    "encoder_layer_decay": ("encoder_layer_decay", float,
                            "layer-wise lr decay over the encoder: stage k of n (0 = input side) gets "
                            "lr x DECAY ** (n - k); 1 = off"),
    "finetune_policy": ("finetune_policy", str,
                        "with -pretrained: the fine-tuning policy laid over the recipe (names in "
                        "suprem_auto/training/recipes/finetune_policies.json; 'trainer' keeps the trainer's own); "
                        "default: the measured default policy"),
    "precision": ("precision", str, "auto (CUDA: fp16 AMP; CPU: bf16 where the CPU has native bf16, else fp32), "
                                    "bf16 or fp32"),
    "channels_last": ("channels_last", str, "channels_last_3d memory format: auto (on for CPU), on, off"),
    "postprocessing_cases": ("postprocessing_cases", int,
                             "fold all: after training, predict this many training cases and choose the "
                             "connected-component post-processing on them (nnU-Net's rule; 0: none; default 16)"),
}

# Fold flags -> (config field, type, help): how the cases are split into cross-validation folds (training/splits.py).
FOLD_OPTIONS = {
    "num_folds": ("num_folds", int, "number of cross-validation folds when splits_final.json is made (default 5); "
                                    "an existing splits file with another count is an error"),
    "subject_pattern": ("subject_pattern", str, "regular expression searched in each case id: its first capture "
                                                "group (else the whole match) is the subject, whose cases never "
                                                "sit on both sides of a fold, e.g. '^(patient\\d+)_'; wins over "
                                                "dataset.json's \"subject_pattern\""),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per entry of :data:`CLI_OVERRIDES` (default None = keep the trainer's value)."""
    group = parser.add_argument_group("hyper-parameter overrides (default: the trainer's value)")
    for flag, (_, typ, help_text) in CLI_OVERRIDES.items():
        group.add_argument(f"--{flag}", type=typ, default=None, help=help_text)
    group.add_argument("--lr_multipliers", default=None,
                       help="per-group lr factors, e.g. encoder=0.1,decoder=1,head=1")
    group.add_argument("--no_deep_supervision", action="store_true", help="train without deep supervision")
    group.add_argument("--no_augmentation", action="store_true", help="no data augmentation (mirroring included)")
    group.add_argument("--no_mirroring", action="store_true",
                       help="no mirroring, neither as augmentation nor at inference (test-time)")
    group.add_argument("--mirror_axes", default=None, nargs="+",
                       help="patch axes mirrored, as augmentation and at test time (e.g. 2, or 0,1,2 or 0 1 2 as "
                            "nnU-Net; default: the trainer's, which the short-budget recipe sets to none)")
    group.add_argument("--patch_size", default=None,
                       help="patch size ZxYxX, e.g. 40x56x40, or YxX for 2d (default: the plans')")
    group.add_argument("--budget", default=None,
                       help="wall-time budget (90s, 40m, 6h, 1h30m): the lr schedule follows the elapsed share of the "
                            "training time, the budget is checked every iteration and the final validation's measured "
                            "cost is reserved, so the run ends within it; picks the short-budget recipe (--recipe) "
                            "unless overridden")
    group.add_argument("--val_on_train", action="store_true",
                       help="fold 'all': still run the final validation, although its cases are the training cases "
                            "(off by default: it tells nothing about new cases)")
    group.add_argument("--recipe", default="auto", choices=["auto", "short", "trainer"],
                       help="with --budget/--iterations: auto/short = the measured short-budget recipe for the "
                            "default trainer (explicit flags still win); trainer = keep the trainer's own recipe")
    folds = parser.add_argument_group("cross-validation folds (fold 'all' uses no split)")
    for flag, (_, typ, help_text) in FOLD_OPTIONS.items():
        folds.add_argument(f"--{flag}", type=typ, default=None, help=help_text)


def parse_multipliers(text: str) -> Dict[str, float]:
    """Parse ``encoder=0.1,decoder=1`` into a dict; a malformed entry raises a one-line error."""
    out: Dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--lr_multipliers: '{item}' is not NAME=FACTOR")
        out[name.strip()] = float(value)
    return out


def parse_mirror_axes(values: Union[str, Sequence[str]], mirroring_refused: bool) -> List[int]:
    """``--mirror_axes 0,2`` (or ``0 2``) as a sorted list of distinct axes 0-2; a malformed value raises a one-line
    error."""
    text = values if isinstance(values, str) else ",".join(values)
    if mirroring_refused:
        raise ValueError("--mirror_axes cannot be combined with --no_mirroring or --no_augmentation")
    try:
        axes = sorted({int(v) for v in text.replace(" ", "").split(",") if v != ""})
    except ValueError:
        raise ValueError(f"--mirror_axes: '{text}' is not a list of axes (e.g. 2, 0,1,2 or 0 1 2)") from None
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"--mirror_axes: '{text}' must name axes among 0, 1 and 2 (e.g. 2, 0,1,2 or 0 1 2)")
    return axes


def overrides_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The config changes requested on the command line."""
    changes: Dict[str, Any] = {}
    for flag, (name, _, _) in {**CLI_OVERRIDES, **FOLD_OPTIONS}.items():
        value = getattr(args, flag, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "lr_multipliers", None):
        changes["lr_multipliers"] = parse_multipliers(args.lr_multipliers)
    if getattr(args, "no_deep_supervision", False):
        changes["deep_supervision"] = False
    if getattr(args, "no_augmentation", False):
        changes["augmentation"] = False
        changes["mirror_axes"] = None
    if getattr(args, "no_mirroring", False):
        changes["mirror_axes"] = None
    if getattr(args, "mirror_axes", None) is not None:
        changes["mirror_axes"] = parse_mirror_axes(args.mirror_axes, getattr(args, "no_mirroring", False)
                                                   or getattr(args, "no_augmentation", False))
    if getattr(args, "val_on_train", False):
        changes["val_on_train"] = True
    if getattr(args, "compile", False):
        changes["compile"] = True
    if getattr(args, "patch_size", None):
        try:
            changes["patch_size"] = [int(v) for v in args.patch_size.lower().split("x")]
        except ValueError:
            raise ValueError(f"--patch_size: '{args.patch_size}' is not ZxYxX (e.g. 40x56x40; 2d: YxX)") from None
    if getattr(args, "budget", None):
        from suprem_auto.training.budget import parse_duration

        changes["budget_s"] = parse_duration(args.budget)
    return changes

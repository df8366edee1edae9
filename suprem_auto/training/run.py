"""Python API behind ``suprem_train``: resolve folders, build the trainer, train / resume / validate one fold."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

from suprem_auto.paths import Roots
from suprem_auto.planning import DEFAULT_PLANS_NAME, load_plans, plans_view
from suprem_auto.training import checkpointing, ddp
from suprem_auto.training.data.workers import DataWorkerError
from suprem_auto.training.model_folder import check_shared_file, record_plans
from suprem_auto.training.registry import (DEFAULT_TRAINER, resolve_trainer, trainer_folder_name,
                                           trainer_for_backbone)
from suprem_auto.training.trainers.base import BaseTrainer
from suprem_auto.training.run_folder import FoldLock, adopt_run, read_run, run_checkpoint, start_new_run
from suprem_auto.utils.atomic import load_json, remove_stale_temp_files
from suprem_auto.utils.device import resolve_device

DEFAULT_PLANS = DEFAULT_PLANS_NAME

if TYPE_CHECKING:
    from suprem_auto.training.finetune_policy import FineTunePolicy


#: fold 'all': pseudo-Dice batches per epoch (its validation cases are its training cases, so the curve shows the fit,
#: not generalisation; nnU-Net's 50 cost 2-4 s per epoch on 2 CPU cores, 3-8 % of a budget); --val_iters sets more
FOLD_ALL_VAL_ITERS = 5


def load_plans_file(path: Path) -> Dict[str, Any]:
    """The plans JSON, validated (:func:`suprem_auto.planning.load_plans`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: plans file missing (run suprem_plan_and_preprocess, or check -p)")
    return load_plans(path)


def output_folder(results_root: Path, dataset_name: str, trainer_name: str, plans_name: str,
                  configuration: str) -> Path:
    """``<results>/<Dataset>/<trainer>__<plans>__<configuration>``."""
    return Path(results_root) / dataset_name / f"{trainer_name}__{plans_name}__{configuration}"


def _find_raw(raw_root: Path, dataset_name: str) -> Optional[Path]:
    folder = Path(raw_root) / dataset_name
    return folder if folder.is_dir() else None


def resolve_trainer_name(trainer_name: Optional[str], pretrained: Optional[str] = None,
                         weights_dir: Optional[Path] = None) -> str:
    """The trainer to use: the given name, else the trainer of the pretrained checkpoint's backbone, else
    SupremTrainer."""
    if trainer_name is not None:
        return trainer_name
    if pretrained is None:
        return DEFAULT_TRAINER
    from suprem_auto.training.trainers.pretrained_init import backbone_of_checkpoint

    return trainer_for_backbone(backbone_of_checkpoint(pretrained, weights_dir))


def default_trainer_name(trainer_name: Optional[str], pretrained: Optional[str] = None,
                         weights_dir: Optional[Path] = None, run_tag: Optional[str] = None) -> str:
    """The trainer part of the results folder name: the resolved trainer (a plugin's class name without its module),
    plus ``-<run_tag>`` when tagged (keeps e.g. pretrained and from-scratch runs of the same trainer apart)."""
    name = resolve_trainer_name(trainer_name, pretrained, weights_dir)
    name = trainer_folder_name(name)
    return f"{name}-{run_tag}" if run_tag else name


def budget_recipe(trainer_class: type, overrides: Dict[str, Any], recipe: str = "auto", device_type: str = "cpu",
                  architecture: Optional[Dict[str, Any]] = None, pretrained: Optional[str] = None,
                  planned_patch: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """The short-budget recipe changes to apply (empty without --budget/--iterations or with ``recipe='trainer'``;
    ``auto`` applies it only to trainers whose defaults are nnU-Net's, not to fine-tuning recipes). The network
    width is only changed for a wall-time budget, a plain U-Net / SegResNet and no pre-trained checkpoint; the
    patch only for a wall-time budget and a 2D ``planned_patch``."""
    from suprem_auto.training.budget import short_budget_recipe
    from suprem_auto.training.config import TrainingConfig

    if recipe not in ("auto", "short", "trainer"):
        raise ValueError(f"recipe must be auto, short or trainer, got '{recipe}'")
    budgeted = overrides.get("budget_s") is not None or overrides.get("iterations") is not None
    if not budgeted or recipe == "trainer":
        return {}
    if recipe == "auto" and trainer_class.default_config() != TrainingConfig():
        return {}
    width_adjustable = (pretrained is None and getattr(trainer_class, "backbone", None) is None
                        and _short_budget_width((architecture or {}).get("name")))
    return short_budget_recipe(overrides.get("budget_s"), device_type, width_adjustable, planned_patch, architecture)


def _short_budget_width(architecture_name: Optional[str]) -> bool:
    """Whether the registry lets the short-budget recipe narrow this architecture (unknown names: no)."""
    from suprem_auto.networks.registry import get_backbone

    try:
        return get_backbone(architecture_name).short_budget_width
    except ValueError:
        return False


def recorded_run(fold_dir: Path) -> Optional[Dict[str, Any]]:
    """What a fold's earlier run recorded: ``hyperparameters.json`` (config + recipe), else the ``config`` stored in
    its newest checkpoint (a checkpoint copied on its own); None when neither exists."""
    recorded = fold_dir / "hyperparameters.json"
    if recorded.is_file():
        stored = load_json(recorded)
        if "config" in stored:
            return stored
    for name in (checkpointing.FINAL, checkpointing.LATEST):
        if (fold_dir / name).is_file():
            config = checkpointing.load_checkpoint(fold_dir / name, map_location="cpu").get("config")
            if config is not None:
                return {"config": config}
    return None


def build_trainer(dataset: Union[str, int], configuration: str, fold: Union[int, str], roots: Roots,
                  trainer_name: Optional[str] = None, plans_name: str = DEFAULT_PLANS,
                  pretrained: Optional[str] = None, weights_dir: Optional[Path] = None, device: str = "auto",
                  overrides: Optional[Dict[str, Any]] = None, echo: bool = True,
                  trainer_class: Optional[type] = None, run_tag: Optional[str] = None,
                  recipe: str = "auto", reuse_run_config: bool = False) -> BaseTrainer:
    """Create (not yet initialise) the trainer for one fold; writes nothing (:func:`train_fold` records the plans
    when a training starts).

    ``trainer_class`` replaces the registered class (same config), e.g. for a subclass with extra hooks;
    ``run_tag`` is appended to the folder's trainer part (``<trainer>-<tag>__<plans>__<configuration>``).
    ``recipe``: with a budget or iteration count, ``auto``/``short`` lay the short-budget recipe under the overrides
    (``auto``: only for trainers that use the nnU-Net default recipe); ``trainer`` keeps the trainer's recipe.
    ``reuse_run_config`` (``--c``, ``--val``): when the fold already has a ``hyperparameters.json``, its recorded
    configuration (network width, mirroring, recipe...) is the base and only the given overrides change it, so that
    a resumed or re-validated run builds the network it trained.
    """
    from suprem_auto.dataset import find_dataset_folder
    from suprem_auto.training.config import TrainingConfig

    ctx = ddp.context_from_env()
    pre_dataset = find_dataset_folder(roots.preprocessed, dataset)
    trainer_name = resolve_trainer_name(trainer_name, pretrained, weights_dir)
    cls, name_changes = resolve_trainer(trainer_name)
    overrides = dict(overrides or {})
    plans = load_plans_file(pre_dataset / f"{plans_name}.json")
    torch_device = resolve_device(device, ctx.local_rank if ctx.enabled else None)
    view = plans_view(plans, pre_dataset / f"{plans_name}.json")
    configuration_plan = view.configuration(configuration) if configuration in view.configurations else None
    architecture = configuration_plan.architecture.to_json() if configuration_plan is not None else None
    planned_patch = configuration_plan.patch_size if configuration_plan is not None else None
    recipe_changes = budget_recipe(cls, overrides, recipe, torch_device.type, architecture, pretrained, planned_patch)
    policy = finetune_policy_for(pretrained, overrides.get("finetune_policy"))
    policy_changes = dict(policy.changes) if policy is not None else {}
    overrides["finetune_policy"] = policy.name if policy is not None else None
    config = (cls.default_config().replace(**recipe_changes).replace(**policy_changes).replace(**name_changes)
              .replace(**overrides))
    if "network_width" in overrides:  # a width given on the command line is not re-chosen
        config = config.replace(width_candidates=None)
    dataset_json = load_json(pre_dataset / "dataset.json")
    fold_str = str(fold)
    if fold_str != "all" and not fold_str.isdigit():
        raise ValueError(f"FOLD must be a fold number (0-4 with the default 5 folds) or 'all', got '{fold}'")
    folder_name = trainer_folder_name(trainer_name) + (f"-{run_tag}" if run_tag else "")
    out = output_folder(roots.results, pre_dataset.name, folder_name, plans_name, configuration)
    stored = recorded_run(out / f"fold_{fold_str}") if reuse_run_config else None
    if stored is not None:
        config = TrainingConfig.from_json(stored["config"]).replace(**overrides)
        recipe_changes = (stored.get("recipe") or {}).get("changes", {})
    if fold_str == "all" and "val_iters_per_epoch" not in overrides and stored is None:
        config = config.replace(val_iters_per_epoch=min(config.val_iters_per_epoch, FOLD_ALL_VAL_ITERS))
    if config.num_folds is not None and fold_str != "all" and int(fold_str) >= config.num_folds:
        raise ValueError(f"fold {fold_str} does not exist with --num_folds {config.num_folds} "
                         f"(folds 0-{config.num_folds - 1}, or 'all')")
    trainer = (trainer_class or cls)(plans, configuration, fold_str if fold_str == "all" else int(fold_str),
                                     dataset_json, pre_dataset, out / f"fold_{fold_str}", config,
                                     torch_device, trainer_name,
                                     raw_dataset=_find_raw(roots.raw, pre_dataset.name), dist_ctx=ctx, echo=echo)
    trainer.pretrained = pretrained
    trainer.recipe = _applied("short_budget", recipe_changes, overrides) if recipe_changes else None
    if stored is not None:
        policy_changes = (stored.get("finetune_policy") or {}).get("changes", {})
    trainer.finetune_policy = (_applied(config.finetune_policy, policy_changes, overrides)
                               if config.finetune_policy else None)
    return trainer


def _applied(name: str, changes: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """What a run records of a recipe or policy laid under its flags: name, changes, the fields flags overrode."""
    return {"name": name, "changes": changes, "overridden_by_flags": sorted(set(changes) & set(overrides))}


def finetune_policy_for(pretrained: Optional[str], requested: Optional[str]) -> "Optional[FineTunePolicy]":
    """The fine-tuning policy of a run: the requested one (``--finetune_policy``), else the default, for a run that
    starts from pre-trained weights; none for a run from scratch (a requested policy is then ignored, so one set of
    flags can drive both arms of a comparison). ``trainer`` keeps the trainer's own recipe."""
    from suprem_auto.training.finetune_policy import get_policy

    if pretrained is None:
        if requested is not None:
            get_policy(requested)  # an unknown name is still an error
        return None
    return get_policy(requested)


def train_fold(trainer: BaseTrainer, pretrained: Optional[str] = None, weights_dir: Optional[Path] = None,
               continue_training: bool = False, validation_only: bool = False, run_validation: bool = True,
               save_probabilities: bool = False) -> Optional[Dict[str, Any]]:
    """Train (or resume, or only validate) and run the final validation; returns its summary (rank 0).

    Holds the fold folder's lock throughout (a second process on the same fold gets :class:`FoldBusyError`).
    A training without ``continue_training`` is a new run: what an earlier run left is moved to
    ``previous_runs/<timestamp>/``. ``continue_training`` resumes only a checkpoint of the fold's current run."""
    if pretrained is not None and continue_training:
        raise ValueError("-pretrained cannot be combined with --c (the checkpoint already holds the weights)")
    if validation_only and not (trainer.fold_dir / checkpointing.FINAL).is_file():
        raise FileNotFoundError(f"{trainer.fold_dir / checkpointing.FINAL}: --val needs a finished training")
    if not trainer.dist.enabled:  # a fold that cannot exist or a refused splits file stops before the fold folder
        trainer.split()           # is touched (with several ranks the first split needs the process group)
    lock = FoldLock(trainer.fold_dir) if trainer.dist.is_main else None
    try:
        if lock is not None:
            lock.acquire()
            remove_stale_temp_files(trainer.fold_dir, recursive=True)
        if not validation_only and not continue_training:
            trainer.choose_network_width()  # --budget: time the candidate widths (before the plans are recorded)
        if not validation_only and trainer.dist.is_main:
            _prepare_run(trainer, continue_training)
            trainer.record_width_choice()
        trainer.initialize()
        ddp.barrier(trainer.dist)
        if validation_only:
            final = run_checkpoint(trainer.fold_dir, (checkpointing.FINAL,))
            if final is None:
                raise FileNotFoundError(f"{trainer.fold_dir / checkpointing.FINAL}: --val needs a finished training "
                                        f"(checkpoint_final.pth of the fold's run)")
            trainer.load_weights(final)
        else:
            trainer.run_id = read_run(trainer.fold_dir)["run_id"]
            latest = run_checkpoint(trainer.fold_dir) if continue_training else None
            if latest is not None:
                trainer.resume(latest)
            if latest is None and pretrained is not None:
                trainer.initialize_from_pretrained(pretrained, weights_dir)
            trainer.final_validation_planned = run_validation  # a --budget reserves no time for a skipped one
            trainer.run_training()
        return trainer.perform_final_validation(save_probabilities) if run_validation else None
    except DataWorkerError as exc:
        trainer.log.message(str(exc), echo=False)  # the worker's traceback, for the one-line CLI message
        raise
    finally:
        if lock is not None:
            lock.release()
        ddp.shutdown_distributed(trainer.dist)


def _prepare_run(trainer: BaseTrainer, continue_training: bool) -> None:
    """Rank 0, under the fold lock: check the plans against the model folder (a conflict changes nothing), decide
    the run (resume, or new with the earlier run moved aside) and record the plans."""
    fold_dir = trainer.fold_dir
    plans = trainer.effective_plans()
    for name, content in (("plans.json", plans), ("dataset.json", trainer.dataset_json)):
        check_shared_file(fold_dir.parent, fold_dir, name, content)
    fold_dir.mkdir(parents=True, exist_ok=True)
    resumable = None
    if continue_training:
        adopt_run(fold_dir)
        resumable = run_checkpoint(fold_dir)
    if resumable is None:
        _, moved = start_new_run(fold_dir)
        if continue_training:
            trainer.log.message("WARNING: --c given but the fold has no checkpoint of its run; starting a new "
                                "training")
        if moved is not None:
            trainer.log.message(f"the fold's earlier run was moved to {moved}")
    record_plans(fold_dir, plans, trainer.dataset_json, trainer.preprocessed_dataset / "dataset_fingerprint.json")

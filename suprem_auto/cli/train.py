"""``suprem_train DATASET [CONFIGURATION] FOLD``: train one fold (thin wrapper over suprem_auto.training.run)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from suprem_auto.paths import add_root_arguments, roots_from_args
from suprem_auto.planning import DEFAULT_PLANS_NAME
from suprem_auto.training.config import add_config_arguments, overrides_from_args


def build_parser() -> argparse.ArgumentParser:
    from suprem_auto.training.registry import describe_trainers

    parser = argparse.ArgumentParser(
        prog="suprem_train", usage="suprem_train DATASET [CONFIGURATION] FOLD [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one cross-validation fold. Positional forms: DATASET FOLD (configuration 3d_fullres) "
                    "or DATASET CONFIGURATION FOLD. Multi-GPU: torchrun --nproc_per_node N -m "
                    "suprem_auto.cli.train ...\n\n"
                    "Runs and fold folders: a training without --c is a new run; everything an earlier run left in "
                    "fold_<k>/ (checkpoints, logs, validation) is first moved to fold_<k>/previous_runs/<timestamp>/, "
                    "nothing is deleted. The run's id is in fold_<k>/run.json and in every checkpoint; --c resumes "
                    "only a checkpoint of that run. One process per fold: a second suprem_train on the same fold "
                    "stops at once naming fold_<k>/train.lock and the PID holding it (the lock of a killed process is "
                    "taken over). The fold keeps the plans it trained with (fold_<k>/plans.json); the model folder's "
                    "plans.json, which prediction uses for all folds, is never changed under folds that trained with "
                    "it: a run with other plans (e.g. --patch_size) is refused.\n\n"
                    "Folds: the first numbered fold writes <preprocessed>/<Dataset>/splits_final.json (--num_folds "
                    "folds, class-stratified, seeded) unless the raw dataset has its own splits_final.json. Cases of "
                    "one subject (--subject_pattern, or dataset.json's \"subject_pattern\", or the raw folder's "
                    "subjects.json) never sit on both sides of a fold; an existing splits file that separates a "
                    "subject is refused naming it. Fold 'all' reads and writes no split.",
        epilog="trainers (-tr):\n" + describe_trainers())
    parser.add_argument("positional", nargs="+", metavar="DATASET [CONFIGURATION] FOLD",
                        help="dataset id or name; configuration (default 3d_fullres); fold 0 .. --num_folds - 1 "
                             "(default 0-4) or 'all' (every case trains, no split)")
    parser.add_argument("-tr", dest="trainer", default=None,
                        help="trainer name (default SupremTrainer; with -pretrained, the trainer of its backbone), "
                             "or package.module:ClassName for your own BaseTrainer subclass, imported like python -m "
                             "(current directory, PYTHONPATH)")
    parser.add_argument("-p", dest="plans", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-pretrained", default=None,
                        help="initialise from a zoo name or a checkpoint file (SuPreM or suprem_train output)")
    parser.add_argument("--weights_dir", default=None, help="folder holding downloaded zoo weights")
    parser.add_argument("--c", dest="continue_training", action="store_true",
                        help="continue the fold's run from its newest checkpoint (final, latest, best; only checkpoints of the "
                             "run in fold_<k>/run.json); without one, a new run starts")
    parser.add_argument("--val", dest="validation_only", action="store_true",
                        help="only run the final validation with checkpoint_final.pth")
    parser.add_argument("--npz", action="store_true", help="also save validation probabilities (.npz)")
    parser.add_argument("--no_final_validation", action="store_true",
                        help="skip the sliding-window validation after training")
    parser.add_argument("-device", default="auto", choices=["auto", "cuda", "cpu", "mps"],
                        help="device (auto: cuda > mps > cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (falls back to eager mode if compilation fails)")
    add_config_arguments(parser)
    add_root_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    started = time.monotonic()  # a --budget covers the command from here, its imports included
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.positional) == 2:
        dataset, configuration, fold = args.positional[0], "3d_fullres", args.positional[1]
    elif len(args.positional) == 3:
        dataset, configuration, fold = args.positional
    else:
        parser.error("expected DATASET FOLD or DATASET CONFIGURATION FOLD")
    from suprem_auto.training.data.workers import DataWorkerError
    from suprem_auto.training.run import build_trainer, train_fold
    from suprem_auto.training.run_folder import FoldBusyError

    try:
        trainer = build_trainer(dataset, configuration, fold, roots_from_args(args), trainer_name=args.trainer,
                                plans_name=args.plans, pretrained=args.pretrained,
                                weights_dir=Path(args.weights_dir) if args.weights_dir else None,
                                device=args.device, overrides=overrides_from_args(args), recipe=args.recipe,
                                reuse_run_config=args.continue_training or args.validation_only)
        trainer.clock.continue_from(time.monotonic() - started)
        train_fold(trainer, pretrained=args.pretrained,
                   weights_dir=Path(args.weights_dir) if args.weights_dir else None,
                   continue_training=args.continue_training, validation_only=args.validation_only,
                   run_validation=not args.no_final_validation, save_probabilities=args.npz)
    except (ValueError, FileNotFoundError, FoldBusyError) as exc:
        print(f"suprem_train: error: {exc}", file=sys.stderr)
        return 2
    except DataWorkerError as exc:
        print(f"suprem_train: error: {exc.summary} (the worker's traceback is in training_log.txt)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

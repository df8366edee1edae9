"""``suprem_cross_validate``: train every configuration on every fold, compare, pick the best, write the report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from suprem_auto.paths import add_root_arguments, roots_from_args
from suprem_auto.planning import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_cross_validate",
        description="Cross-validate configurations (from scratch and from pre-trained checkpoints) on one dataset: "
                    "trains what is missing (finished folds are skipped, interrupted ones resumed), evaluates all "
                    "folds' validation predictions together, picks the best configuration or pair ensemble, decides "
                    "post-processing, and writes report.html / report.md and the inference instructions.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (must be preprocessed)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations of the plans to compare, trained from scratch (default: every "
                             "configuration the plans hold whose data is preprocessed; a cascade's low-res stage is "
                             "trained before it)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME,
                        help=f"plans of the scratch runs (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-pretrained", "--pretrained", nargs="*", default=[],
                        help="pre-trained checkpoints (zoo names or paths) to fine-tune, each as one more run")
    parser.add_argument("--pretrained_plans", default=None,
                        help="plans for the pre-trained runs (default: the zoo entry's preset plans, or -p for "
                             "checkpoints of our own trained models)")
    parser.add_argument("--pretrained_configuration", default="3d_fullres",
                        help="configuration of the pre-trained runs (default 3d_fullres)")
    parser.add_argument("--no_scratch", action="store_true", help="only the pre-trained runs")
    parser.add_argument("--folds", nargs="+", type=int, default=None,
                        help="folds (default 0 .. --num_folds - 1, i.e. 0 1 2 3 4)")
    parser.add_argument("--gather_only", action="store_true",
                        help="do not train: gather and compare whatever folds are finished")
    parser.add_argument("--weights_dir", default=None, help="folder of downloaded pre-trained checkpoints "
                                                            "(default: $SUPREM_WEIGHTS)")
    parser.add_argument("-device", "--device", default="auto", help="cuda, cpu, mps or auto (default)")
    parser.add_argument("-np", "--num_processes", type=int, default=1, help="processes for evaluation (default 1)")
    from suprem_auto.training.config import add_config_arguments

    add_config_arguments(parser)
    add_root_arguments(parser)
    return parser


def scratch_configurations(args: argparse.Namespace) -> List[str]:
    """The configurations trained from scratch: ``-c`` (with each cascade's previous stage first), else every
    configuration of the plans whose data is preprocessed (the others are listed with the command that adds them)."""
    from suprem_auto.crossval.configurations import default_configurations, training_order
    from suprem_auto.dataset import find_dataset_folder
    from suprem_auto.planning import load_plans

    pre_dataset = find_dataset_folder(roots_from_args(args).preprocessed, args.dataset)
    if args.configurations:
        return training_order(list(args.configurations), load_plans(pre_dataset / f"{args.plans}.json"))
    chosen, skipped = default_configurations(pre_dataset, args.plans)
    for line in skipped:
        print(f"[crossval] left out {line}")
    print(f"[crossval] configurations: {' '.join(chosen) or 'none'}")
    return chosen


def runs_from_args(args: argparse.Namespace) -> list:
    """The RunSpecs the flags ask for."""
    from suprem_auto.crossval.driver import RunSpec

    runs = [] if args.no_scratch else [RunSpec(configuration=c, plans_name=args.plans)
                                       for c in scratch_configurations(args)]
    for i, name in enumerate(args.pretrained):
        plans = args.pretrained_plans or _preset_plans_for(name) or args.plans
        tag = "pretrained" if len(args.pretrained) == 1 else f"pretrained{i + 1}"
        runs.append(RunSpec(configuration=args.pretrained_configuration, plans_name=plans, pretrained=name, tag=tag))
    if not runs:
        raise SystemExit("error: nothing to cross-validate (no configuration and no -pretrained)")
    return runs


def _preset_plans_for(name: str) -> Optional[str]:
    """Zoo entries name their preset; its plans are '<preset>_plans'."""
    from suprem_auto.pretrained.zoo import load_zoo

    entry = load_zoo().get(name)
    preset = entry.plans_preset if entry is not None else None
    return f"{preset}_plans" if preset else None


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.crossval.driver import cross_validate
    from suprem_auto.training.config import overrides_from_args

    roots = roots_from_args(args)
    folds = args.folds if args.folds is not None else list(range(args.num_folds or 5))
    if args.num_folds is not None and max(folds) >= args.num_folds:
        print(f"error: --folds {max(folds)} does not exist with --num_folds {args.num_folds} "
              f"(folds 0-{args.num_folds - 1})", file=sys.stderr)
        return 1
    try:
        result = cross_validate(roots, args.dataset, runs_from_args(args), folds=folds,
                                overrides=overrides_from_args(args),
                                weights_dir=Path(args.weights_dir) if args.weights_dir else None,
                                device=args.device, train=not args.gather_only, num_processes=args.num_processes,
                                recipe=args.recipe)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {getattr(exc, 'summary', exc)}", file=sys.stderr)  # a data worker's traceback: in its log
        return 1
    print(f"best configuration: {result.instructions['best']} (foreground mean Dice "
          f"{result.instructions['best_foreground_dice']:.4f})")
    print(f"report: {result.report_html}")
    print(f"report (markdown): {result.report_md}")
    print(f"inference instructions: {result.out_dir / 'inference_instructions.txt'}")
    for command in result.instructions["commands"]:
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

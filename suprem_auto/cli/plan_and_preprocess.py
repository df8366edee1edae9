"""``suprem_plan_and_preprocess`` and its three steps (``suprem_extract_fingerprint``, ``suprem_plan``,
``suprem_preprocess``): thin wrappers around fingerprint, planning and preprocessing."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from suprem_auto.paths import add_root_arguments, roots_from_args
from suprem_auto.planning import DEFAULT_PLANS_NAME

DEFAULT_CONFIGURATIONS = ["3d_fullres"]


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, nargs="+",
                        help="dataset id(s) or name(s) under the raw root, e.g. 4 or Dataset004_Hippocampus")
    parser.add_argument("-np", "--num_processes", type=int, default=2,
                        help="worker processes for fingerprint and preprocessing (default 2)")


def _add_integrity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no_integrity_check", action="store_true",
                        help="skip the dataset integrity check that otherwise runs first (files, labels, geometry)")


def _add_planning(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-pl", "--presets", nargs="*", default=[],
                        help="also plan these presets: SuPreM backbones (suprem_unet, suprem_segresnet, "
                             "suprem_swin_unetr, or 'all' of them) and nnU-Net's residual-encoder presets (resenc_m, "
                             "resenc_l, resenc_xl); plans '<preset>_plans'; the default planner always runs")
    parser.add_argument("--gpu_memory_gb", type=float, default=None,
                        help="GPU memory budget that patch and batch sizes are planned for (default 8; a ResEnc "
                             "preset: its own target, M 8, L 24, XL 40)")


def _add_preprocessing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--configurations", nargs="+", default=DEFAULT_CONFIGURATIONS,
                        help="configurations to preprocess (default 3d_fullres; 2d and 3d_lowres are planned too; "
                             "a plan without the configuration is skipped)")


def _add_clean(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--clean", action="store_true", help=f"redo {what} instead of reusing finished results")


def _load(args: argparse.Namespace, id_or_name: str) -> Any:
    from suprem_auto.dataset import load_raw_dataset

    roots = roots_from_args(args)
    ds = load_raw_dataset(roots.raw, id_or_name)
    return ds, roots.preprocessed / ds.name


def _integrity(args: argparse.Namespace, ds: Any) -> None:
    if getattr(args, "no_integrity_check", False):
        return
    from suprem_auto.dataset.integrity import check_dataset_or_raise

    print(f"checking dataset integrity of {ds.name} ...")
    check_dataset_or_raise(ds, args.num_processes)


def _fingerprint(args: argparse.Namespace, ds: Any, out: Path, clean: bool) -> dict:
    from suprem_auto.fingerprint import load_or_extract_fingerprint

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ds.folder / "dataset.json", out / "dataset.json")
    return load_or_extract_fingerprint(ds, out, args.num_processes, clean)


def _plan(args: argparse.Namespace, ds: Any, out: Path, fingerprint: dict) -> dict:
    from suprem_auto.planning import plan_experiments, plans_view

    all_plans = plan_experiments(ds, fingerprint, out, args.presets, args.gpu_memory_gb)
    for name, plans in all_plans.items():
        for config_name, config in plans_view(plans, name).configurations.items():
            print(f"{name} {config_name}: spacing {list(config.spacing)} patch {list(config.patch_size)} "
                  f"batch {config.batch_size} architecture {config.architecture.name}")
    return all_plans


def _preprocess(args: argparse.Namespace, ds: Any, out: Path, all_plans: dict) -> None:
    from suprem_auto.planning import plans_view
    from suprem_auto.preprocessing import preprocess_dataset

    for name, plans in all_plans.items():
        for configuration in args.configurations:
            if configuration not in plans_view(plans, name).configurations:
                print(f"{name}: no configuration '{configuration}' planned; skipped")
                continue
            done = preprocess_dataset(ds, plans, configuration, out, args.num_processes, args.clean)
            print(f"{name} {configuration}: {len(done)} case(s) preprocessed, "
                  f"{len(ds.cases) - len(done)} already done")


def _run(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
         step: Callable[[argparse.Namespace, Any, Path], None]) -> int:
    from suprem_auto.dataset import DatasetError
    from suprem_auto.imageio import ImageReadError
    from suprem_auto.planning import PlansError
    from suprem_auto.utils.output_rules import OutputRuleError

    args = parser.parse_args(argv)
    errors: List[type] = [DatasetError, ImageReadError, PlansError, FileNotFoundError, OutputRuleError]
    try:
        from suprem_auto.dataset.integrity import DatasetIntegrityError
        errors.append(DatasetIntegrityError)
    except ImportError:
        pass
    try:
        for id_or_name in args.dataset:
            ds, out = _load(args, id_or_name)
            step(args, ds, out)
    except tuple(errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _add_dataset(parser)
    add_root_arguments(parser)
    return parser


def main_plan_and_preprocess(argv: Optional[Sequence[str]] = None) -> int:
    """Integrity check, fingerprint, plans (default + presets) and preprocessing of one or more datasets."""
    parser = _parser("suprem_plan_and_preprocess",
                     "Check a raw dataset, extract its fingerprint, write plans (default planner: 2d, 3d_fullres, "
                     "3d_lowres when useful; plus presets) and preprocess the chosen configurations.")
    _add_integrity(parser)
    _add_planning(parser)
    _add_preprocessing(parser)
    _add_clean(parser, "the fingerprint and preprocessed cases")

    def step(args: argparse.Namespace, ds: Any, out: Path) -> None:
        _integrity(args, ds)
        fingerprint = _fingerprint(args, ds, out, args.clean)
        _preprocess(args, ds, out, _plan(args, ds, out, fingerprint))
    return _run(parser, argv, step)


def main_extract_fingerprint(argv: Optional[Sequence[str]] = None) -> int:
    """Integrity check and dataset_fingerprint.json."""
    parser = _parser("suprem_extract_fingerprint", "Check a raw dataset and write dataset_fingerprint.json into "
                                                   "its preprocessed folder.")
    _add_integrity(parser)
    _add_clean(parser, "the fingerprint")

    def step(args: argparse.Namespace, ds: Any, out: Path) -> None:
        _integrity(args, ds)
        _fingerprint(args, ds, out, args.clean)
    return _run(parser, argv, step)


def main_plan(argv: Optional[Sequence[str]] = None) -> int:
    """Plans from the fingerprint (extracted first when missing)."""
    parser = _parser("suprem_plan", "Write plans (default planner plus presets) from dataset_fingerprint.json "
                                    "(extracted first when missing).")
    _add_planning(parser)

    def step(args: argparse.Namespace, ds: Any, out: Path) -> None:
        _plan(args, ds, out, _fingerprint(args, ds, out, clean=False))
    return _run(parser, argv, step)


def main_preprocess(argv: Optional[Sequence[str]] = None) -> int:
    """Preprocess configurations of existing plans files."""
    parser = _parser("suprem_preprocess", "Preprocess the training cases for existing plans.")
    parser.add_argument("-p", "--plans", nargs="+", default=[DEFAULT_PLANS_NAME],
                        help=f"plans names in the preprocessed folder (default {DEFAULT_PLANS_NAME}; presets: "
                             "<preset>_plans, e.g. suprem_unet_plans)")
    _add_preprocessing(parser)
    _add_clean(parser, "preprocessed cases")

    def step(args: argparse.Namespace, ds: Any, out: Path) -> None:
        from suprem_auto.planning import load_plans

        _preprocess(args, ds, out, {name: load_plans(out / f"{name}.json") for name in args.plans})
    return _run(parser, argv, step)


if __name__ == "__main__":
    sys.exit(main_plan_and_preprocess())

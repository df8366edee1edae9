"""``suprem_evaluate``: compare a folder of predictions with a folder of reference label maps."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, Tuple, Union

from suprem_auto.dataset.labels import parse_labels
from suprem_auto.evaluation import DEFAULT_NSD_TOLERANCE_MM, EvaluationError, evaluate_folder
from suprem_auto.imageio import ImageReadError
from suprem_auto.utils.atomic import load_json


def parse_class(text: str) -> Union[int, Tuple[int, ...]]:
    """``"1"`` -> 1, ``"1,2"`` -> region (1, 2)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"label '{text}' must be an integer or comma-separated integers") from None
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_evaluate",
        description="Per-case and mean Dice, IoU, normalized surface Dice, HD95 (mm) and volumes (ml) of a "
                    "prediction folder against a reference folder (files matched by name). Writes "
                    "metrics_per_case.csv and summary.json. NaN/null = undefined (see docs/EVALUATION.md).")
    parser.add_argument("-ref", required=True, help="folder of reference label maps")
    parser.add_argument("-pred", required=True, help="folder of predicted label maps (same file names)")
    parser.add_argument("-l", "--labels", nargs="+", type=parse_class, default=None,
                        help="classes to evaluate: label values, or comma-joined values for a region (e.g. 1 2 1,2). "
                             "Default: the foreground labels (or regions) of -djfile, else every foreground value "
                             "found in the references")
    parser.add_argument("-djfile", default=None,
                        help="dataset.json giving the labels, the ignore label and the file ending")
    parser.add_argument("--file_ending", default=None,
                        help="file ending of the label maps (default: from -djfile, else .nii.gz)")
    parser.add_argument("--ignore_label", type=int, default=None,
                        help="reference value whose voxels are excluded (default: from -djfile, else none)")
    parser.add_argument("--tolerance_mm", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                        help=f"tolerance of the normalized surface Dice in mm (default {DEFAULT_NSD_TOLERANCE_MM})")
    parser.add_argument("-np", "--num_processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("-o", "--out_dir", default=None,
                        help="where metrics_per_case.csv and summary.json go (default: the -pred folder)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    labels: Optional[List] = args.labels
    ignore_label = args.ignore_label
    file_ending = args.file_ending
    if args.djfile:
        try:
            dataset_json = load_json(args.djfile)
            spec = parse_labels(dataset_json, args.djfile)
        except (OSError, ValueError) as exc:
            sys.exit(f"error: {exc}")
        if labels is None:
            labels = list(spec.regions) if spec.has_regions else spec.foreground_labels
        ignore_label = spec.ignore_label if ignore_label is None else ignore_label
        file_ending = file_ending or dataset_json.get("file_ending")
    try:
        summary = evaluate_folder(args.ref, args.pred, labels, file_ending or ".nii.gz", ignore_label,
                                  args.tolerance_mm, args.num_processes, args.out_dir)
    except (EvaluationError, ImageReadError) as exc:
        sys.exit(f"error: {exc}")
    print(f"{summary['num_cases']} cases, {len(summary['missing_predictions'])} missing predictions")
    for key, mean in summary["mean"].items():
        print(f"class {key}: " + ", ".join(f"{m} {_fmt(mean[m])}" for m in ("dice", "iou", "nsd", "hd95")))
    print("foreground mean: " + ", ".join(f"{m} {_fmt(summary['foreground_mean'][m])}"
                                           for m in ("dice", "iou", "nsd", "hd95")))
    return 0


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())

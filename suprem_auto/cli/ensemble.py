"""``suprem_ensemble``: average the saved probabilities of several prediction folders into one segmentation."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_ensemble",
        description="Average <case>.npz probabilities (written by suprem_predict --save_probabilities) of several "
                    "folders, take the argmax and write <case><file_ending> in each input's exact geometry.")
    parser.add_argument("-i", "--inputs", nargs="+", required=True, help="prediction folders holding .npz files")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("-dj", "--dataset_json", default=None,
                        help="dataset.json for the labels (default: the first input folder's dataset.json)")
    parser.add_argument("-d", "--dataset", default=None, help="(informational) dataset name, as in the recipe")
    parser.add_argument("--postprocessing", default=None, help="postprocessing.json to apply to the ensemble")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.crossval.ensemble import ensemble_folders
    from suprem_auto.dataset import parse_labels
    from suprem_auto.utils.atomic import load_json

    inputs = [Path(p) for p in args.inputs]
    dj_path = Path(args.dataset_json) if args.dataset_json else inputs[0] / "dataset.json"
    if not dj_path.is_file():
        print(f"error: {dj_path}: dataset.json not found (pass -dj)", file=sys.stderr)
        return 1
    dataset_json = load_json(dj_path)
    labels = parse_labels(dataset_json, dj_path)
    written = ensemble_folders(inputs, Path(args.output), labels, inputs[0], dataset_json["file_ending"])
    if args.postprocessing:
        from suprem_auto.evaluation.postprocessing import apply_postprocessing_to_folder

        apply_postprocessing_to_folder(args.output, args.output, args.postprocessing, dataset_json["file_ending"])
    print(f"wrote {len(written)} ensembled segmentations to {args.output}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())

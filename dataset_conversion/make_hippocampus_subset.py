#!/usr/bin/env python
"""Copy the first N cases of a raw dataset (e.g. Dataset004_Hippocampus) into a new, small DatasetXXX folder.

Used for demos and quick tests. Example::

    python dataset_conversion/make_hippocampus_subset.py -i /work/shared/data/Dataset004_Hippocampus \\
        -d 994 -n HippocampusSubset -c 20 -o $SUPREM_RAW
"""
import argparse
import sys
from pathlib import Path

from suprem_auto.conversion import ConversionError, make_subset
from suprem_auto.dataset.integrity import verify_dataset
from suprem_auto.dataset.raw import load_raw_dataset_folder
from suprem_auto.paths import add_root_arguments, roots_from_args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, help="source raw dataset folder (DatasetXXX_Name)")
    parser.add_argument("-d", "--dataset_id", type=int, required=True, help="id of the new dataset (1-999)")
    parser.add_argument("-n", "--name", default="HippocampusSubset", help="name of the new dataset")
    parser.add_argument("-c", "--num_cases", type=int, default=20, help="number of cases to copy (first in sorted "
                                                                         "order; default 20)")
    parser.add_argument("-o", "--output", default=None, help="raw root to write into (default: the raw root)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target folder")
    add_root_arguments(parser)
    args = parser.parse_args()
    raw_root = Path(args.output).expanduser().resolve() if args.output else roots_from_args(args).raw
    try:
        folder = make_subset(args.input, raw_root, args.dataset_id, args.name, args.num_cases,
                             overwrite=args.overwrite)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = verify_dataset(load_raw_dataset_folder(folder))
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    print(f"wrote {folder} ({args.num_cases} cases){'' if not problems else f', {len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

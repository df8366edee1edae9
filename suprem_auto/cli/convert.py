"""``suprem_convert``: convert MSD task folders, per-structure masks and DICOM series into the raw format."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from suprem_auto.conversion import (ConversionError, convert_dicom_series, convert_msd_task, convert_structure_masks,
                                    load_label_table)
from suprem_auto.dataset.integrity import verify_dataset
from suprem_auto.dataset.raw import load_raw_dataset_folder
from suprem_auto.paths import add_root_arguments, roots_from_args


def _add_dataset_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=None,
                        help="raw root to write DatasetXXX_Name into (default: the raw root from --raw, "
                             "SUPREM_RAW, nnUNet_raw or ~/suprem_data/raw)")
    parser.add_argument("-np", "--num_processes", type=int, default=1,
                        help="worker processes for converting and verifying (default: 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier conversion in the target dataset folder (a folder that holds the "
                             "input or files no converter writes is refused, never deleted)")
    parser.add_argument("--no_verify", action="store_true", help="skip the integrity check of the result")
    add_root_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_convert",
        description="Convert MSD task folders, per-structure masks and DICOM series into the raw format "
                    "(DatasetXXX_Name). Run 'suprem_convert COMMAND -h' for the flags of each command.")
    sub = parser.add_subparsers(dest="command", required=True)

    msd = sub.add_parser("msd", help="MSD task folder (TaskXX_Name) -> DatasetXXX_Name",
                         description="Convert a Medical Segmentation Decathlon task folder: 4D images are split "
                                     "into one file per channel (_0000, _0001, ...), labels copied, "
                                     "an nnU-Net v2 dataset.json written.")
    msd.add_argument("-i", "--input", required=True, help="MSD task folder with dataset.json, imagesTr, labelsTr")
    msd.add_argument("-d", "--dataset_id", type=int, required=True, help="new dataset id (1-999)")
    msd.add_argument("-n", "--name", default=None, help="dataset name (default: Name from TaskXX_Name)")
    _add_dataset_output(msd)

    masks = sub.add_parser("masks", help="per-structure masks (AbdomenAtlas/TotalSegmentator) -> DatasetXXX_Name",
                           description="Convert CASES/<case>/<image> + CASES/<case>/segmentations/<structure>.nii.gz "
                                       "into one label map per case. Overlaps: the structure with the higher label "
                                       "value (listed later) wins; counts go to conversion_report.json.")
    masks.add_argument("-i", "--input", required=True, help="folder holding one sub-folder per case")
    masks.add_argument("-d", "--dataset_id", type=int, required=True, help="new dataset id (1-999)")
    masks.add_argument("-n", "--name", required=True, help="dataset name (letters, digits, _ and -)")
    masks.add_argument("--labels", default=None,
                       help="labels.json: ordered list of structure names, {name: value} or {value: name} "
                            "(default: every structure found, numbered in sorted order)")
    masks.add_argument("--image_name", default="ct.nii.gz", help="image file name in each case folder "
                                                                  "(default: ct.nii.gz)")
    masks.add_argument("--channel_name", default="CT", help="channel name written to dataset.json (default: CT)")
    _add_dataset_output(masks)

    dicom = sub.add_parser("dicom", help="DICOM series folder -> one NIfTI file",
                           description="Read a DICOM series (slice spacing from ImagePositionPatient) and write it "
                                       "as NIfTI.")
    dicom.add_argument("-i", "--input", required=True, help="folder holding the DICOM files of the series")
    dicom.add_argument("-o", "--output", required=True, help="output file (.nii.gz or .nii)")
    dicom.add_argument("--series_id", default=None,
                       help="SeriesInstanceUID to read when the folder holds several series (without it such a folder "
                            "is refused and its series are listed; '' picks the series whose files carry no UID)")
    return parser


def _verify(folder: Path, num_processes: int) -> int:
    problems = verify_dataset(load_raw_dataset_folder(folder), num_processes)
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    print(f"{folder}: {'OK' if not problems else f'{len(problems)} integrity problem(s)'}")
    return 1 if problems else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``suprem_convert``."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "dicom":
            out = convert_dicom_series(args.input, args.output, args.series_id)
            print(f"wrote {out}")
            return 0
        raw_root = Path(args.output).expanduser().resolve() if args.output else roots_from_args(args).raw
        if args.command == "msd":
            folder = convert_msd_task(args.input, raw_root, args.dataset_id, args.name, args.num_processes,
                                      args.overwrite)
        else:
            table = load_label_table(args.labels) if args.labels else None
            report = convert_structure_masks(args.input, raw_root, args.dataset_id, args.name, table,
                                             args.image_name, args.channel_name, args.num_processes, args.overwrite)
            folder = report.dataset_folder
            total = sum(report.overlap_voxels.values())
            print(f"{len(report.label_table)} structures, {len(report.overlap_voxels)} cases, "
                  f"{total} voxels claimed by 2+ structures (see {folder / 'conversion_report.json'})")
        print(f"wrote {folder}")
        return 0 if args.no_verify else _verify(folder, args.num_processes)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

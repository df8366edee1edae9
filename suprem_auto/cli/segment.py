"""``suprem_segment``: segment the organs of a CT now, with a SuPreM / Universal Model pre-trained head."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_segment",
        description="Segment abdominal organs in one CT with no training: the SuPreM / CLIP-driven Universal Model "
                    "head (25 AbdomenAtlas 1.1 classes, or the 32-class Universal template), run with the release's "
                    "preprocessing (RAS, 1.5 mm, HU [-175, 250] -> [0, 1]), 96^3 sliding window with overlap 0.75, "
                    "sigmoid, threshold 0.5, largest component of the nine post-processed organs. Writes one file per "
                    "structure (or one multi-label file with --ml), statistics.json (volume in mL and mean HU per "
                    "structure) and preview.png into OUTPUT, in the input's exact geometry.")
    parser.add_argument("-i", "--input", required=True, help="CT image file (e.g. ct.nii.gz) or DICOM series folder")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    parser.add_argument("--model", default="suprem_unet",
                        help="zoo name (suprem_unet, suprem_swinunetr, universal_unet, universal_swinunetr; see "
                             "suprem_list_pretrained) or a checkpoint path (default suprem_unet)")
    parser.add_argument("--weights_dir", "--weights-dir", default=None,
                        help="folder holding the zoo checkpoint files (default: $SUPREM_WEIGHTS)")
    parser.add_argument("--roi_subset", nargs="+", default=None, metavar="STRUCTURE",
                        help="only these structures, e.g. liver spleen kidney_left (default: all of the head's)")
    parser.add_argument("--fast", action="store_true",
                        help="3 mm grid instead of 1.5 mm and overlap 0.5 (about 10-30x faster, coarser masks)")
    parser.add_argument("--ml", action="store_true",
                        help="write one multi-label segmentation.nii.gz (+ labels.json) instead of one file per "
                             "structure")
    parser.add_argument("--patch_size", type=int, nargs=3, default=None,
                        help="sliding-window patch (default the release's 96 96 96; smaller saves memory, changes the "
                             "result)")
    parser.add_argument("--step_size", type=float, default=None,
                        help="sliding-window step as a fraction of the patch (default 0.25, i.e. overlap 0.75; "
                             "0.5 with --fast)")
    parser.add_argument("--no_postprocessing", action="store_true",
                        help="keep every component (no largest-component step)")
    parser.add_argument("--no_preview", action="store_true", help="do not write preview.png")
    parser.add_argument("-device", "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="device (default auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.imageio import ImageReadError
    from suprem_auto.pretrained import CheckpointError, PretrainedNotFound
    from suprem_auto.segment import SegmentOptions, load_organ_model, segment_ct
    from suprem_auto.segment.outputs import write_outputs
    from suprem_auto.segment.pipeline import check_subset

    output = Path(args.output)
    try:
        if output.exists() and not output.is_dir():
            raise ValueError(f"{output}: exists and is not a folder")
        if not Path(args.input).exists():
            raise FileNotFoundError(f"{args.input}: input CT does not exist")
        model = load_organ_model(args.model, args.weights_dir)
        check_subset(args.roi_subset, model.class_names)
        options = SegmentOptions(roi_subset=args.roi_subset, fast=args.fast, patch_size=args.patch_size,
                                 step=args.step_size, postprocess=not args.no_postprocessing, device=args.device,
                                 progress=not args.quiet)
        result = segment_ct(Path(args.input), model, options)
        written = write_outputs(result, output, multilabel=args.ml, preview=not args.no_preview)
    except (PretrainedNotFound, CheckpointError, ImageReadError, FileNotFoundError, ValueError) as exc:
        print(f"suprem_segment: {exc}", file=sys.stderr)
        return 2
    found = sum(1 for m in result.masks.values() if m.any())
    print(f"suprem_segment: {len(result.masks)} structures ({found} non-empty), {len(written)} files -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``suprem_predict``: segment images with a trained model, writing results in the inputs' exact geometry."""
from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional, Sequence

from suprem_auto.paths import add_root_arguments, roots_from_args
from suprem_auto.planning import DEFAULT_PLANS_NAME

DEFAULT_TRAINER = "SupremTrainer"
DEFAULT_PLANS = DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_predict",
        description="Predict segmentations with a trained model. Input: a folder of {case}_{XXXX}.ext files "
                    "(nnU-Net naming; single-channel models also accept files without the _XXXX suffix), a single "
                    "image file, or a DICOM series folder. Output: <case><file_ending> in each input's exact "
                    "geometry. Exits 1 if any case failed.")
    parser.add_argument("-i", "--input", required=True, help="input folder, image file or DICOM series folder")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    model = parser.add_argument_group("model (give -m, or -d and -c)")
    model.add_argument("-m", "--model_folder", default=None,
                       help="trained model folder <trainer>__<plans>__<configuration> holding plans.json, "
                            "dataset.json and fold_<k>/ (ours or nnU-Net v2's), or a model zip from "
                            "suprem_export_model (checked, then unpacked to a temporary folder). A "
                            "3d_cascade_fullres model first runs the <trainer>__<plans>__3d_lowres folder beside it")
    model.add_argument("-d", "--dataset", default=None,
                       help="dataset id or name; the model folder is <results>/<DatasetXXX_Name>/<trainer>__<plans>__<config>")
    model.add_argument("-c", "--configuration", default=None, help="configuration, e.g. 3d_fullres (with -d)")
    model.add_argument("-tr", "--trainer", default=DEFAULT_TRAINER, help=f"trainer name (with -d; default {DEFAULT_TRAINER})")
    model.add_argument("-p", "--plans", default=DEFAULT_PLANS, help=f"plans name (with -d; default {DEFAULT_PLANS})")
    model.add_argument("-f", "--folds", nargs="+", default=None,
                       help="folds to ensemble, e.g. 0 1 2 3 4 or all (default: every fold_<k> with the checkpoint)")
    model.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                       help="checkpoint file name inside fold_<k> (default checkpoint_final.pth)")
    run = parser.add_argument_group("prediction")
    run.add_argument("-step_size", "--step_size", type=float, default=0.5,
                     help="sliding-window step as a fraction of the patch size (default 0.5; larger is faster)")
    run.add_argument("--disable_tta", action="store_true",
                     help="disable test-time mirroring (about 8x faster in 3D, slightly less accurate)")
    run.add_argument("--save_probabilities", action="store_true",
                     help="also write <case>.npz with key 'probabilities' (C, z, y, x) float16 in the input's array space")
    run.add_argument("--continue_prediction", action="store_true", help="skip cases whose output already exists")
    run.add_argument("-num_parts", "--num_parts", type=int, default=1,
                     help="split the cases into this many parts (run one process per part, e.g. per GPU)")
    run.add_argument("-part_id", "--part_id", type=int, default=0, help="which part this process predicts (0-based)")
    run.add_argument("-device", "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                     help="device (default auto: cuda, then mps, then cpu)")
    run.add_argument("--tile_batch_size", type=int, default=None,
                     help="sliding-window tiles per forward pass (default: 8 for small patches, fewer for large ones)")
    run.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="autocast of the network: auto (as training: bf16 on a CPU with native bf16, e.g. AVX-512 "
                          "BF16 or AMX; fp16 on CUDA; else fp32), or force fp32 / bf16 / fp16 (CUDA only). Forced "
                          "bf16 on a CPU without native bf16 is emulated and ~100x slower (benchmarks/RESULTS.md)")
    run.add_argument("--cpu_bf16", action="store_true", help="same as --precision bf16 (kept for old commands)")
    run.add_argument("--postprocessing", default=None,
                     help="postprocessing JSON to apply (default: the model folder's postprocessing.json if present; "
                          "with -f all alone and none there, the one that fold 'all' run chose on its training "
                          "cases, fold_all/postprocessing.json)")
    run.add_argument("--disable_postprocessing", action="store_true",
                     help="apply no postprocessing (neither the model folder's nor --postprocessing)")
    run.add_argument("--disable_progress_bar", action="store_true", help="no tqdm progress bars")
    add_root_arguments(parser)
    return parser


def resolve_model_folder(args: argparse.Namespace) -> Path:
    """The model folder from -m, or from -d/-c/-tr/-p under the results root."""
    if args.model_folder:
        return Path(args.model_folder)
    if not args.dataset or not args.configuration:
        raise SystemExit("suprem_predict: give -m MODEL_FOLDER, or -d DATASET and -c CONFIGURATION")
    from suprem_auto.dataset import find_dataset_folder

    results = roots_from_args(args).results
    dataset_folder = find_dataset_folder(results, args.dataset)
    return dataset_folder / f"{args.trainer}__{args.plans}__{args.configuration}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.dataset import DatasetError
    from suprem_auto.inference.predictor import ModelFolderError, Predictor
    from suprem_auto.sharing import opened_model

    stack = ExitStack()  # a model zip is unpacked to a temporary folder removed at the end
    try:
        model_folder = stack.enter_context(opened_model(resolve_model_folder(args)))
        folds: Optional[List[str]] = args.folds
        from suprem_auto.interop.nnunet import is_nnunet_model_folder, nnunet_predictor
        build = nnunet_predictor if is_nnunet_model_folder(model_folder) else Predictor.from_model_folder
        predictor = build(
            model_folder, folds=folds, checkpoint_name=args.checkpoint,
            configuration=args.configuration if args.model_folder else None,
            use_postprocessing=not args.disable_postprocessing, postprocessing_file=args.postprocessing,
            use_mirroring=not args.disable_tta,
            step_size=args.step_size, device=args.device, tile_batch_size=args.tile_batch_size,
            progress=not args.disable_progress_bar, precision="bf16" if args.cpu_bf16 else args.precision)
        report = predictor.predict_files(args.input, args.output, save_probabilities=args.save_probabilities,
                                         continue_prediction=args.continue_prediction, num_parts=args.num_parts,
                                         part_id=args.part_id)
    except (ModelFolderError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"suprem_predict: {exc}", file=sys.stderr)
        return 2
    finally:
        stack.close()
    print(f"suprem_predict: {len(report.written)} written, {len(report.skipped)} skipped, "
          f"{len(report.failed)} failed in {report.seconds:.1f} s -> {args.output}")
    if report.failed:
        print("failed cases:", file=sys.stderr)
        for case_id, error in report.failed.items():
            print(f"  {case_id}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

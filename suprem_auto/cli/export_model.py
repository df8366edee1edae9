"""``suprem_export_model``: write a trained model as one zip with a model card, for others to install or run."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from suprem_auto.cli.predict import DEFAULT_PLANS, DEFAULT_TRAINER, resolve_model_folder
from suprem_auto.paths import add_root_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_export_model",
        description="Export a trained model (plans, dataset.json, fingerprint, the chosen folds' checkpoints, "
                    "post-processing, the inference recipe) as one zip with a model card (model_card.json + "
                    "MODEL_CARD.md, SHA-256 per file). Install it elsewhere with suprem_install_model, or run it "
                    "with suprem_predict -m ZIP.")
    parser.add_argument("-o", "--output", required=True, help="zip file to write (e.g. liver_model.zip)")
    model = parser.add_argument_group("model (give -m, or -d and -c)")
    model.add_argument("-m", "--model_folder", default=None, help="trained model folder <trainer>__<plans>__<config>")
    model.add_argument("-d", "--dataset", default=None, help="dataset id or name (with -c)")
    model.add_argument("-c", "--configuration", default=None, help="configuration, e.g. 3d_fullres (with -d)")
    model.add_argument("-tr", "--trainer", default=DEFAULT_TRAINER,
                       help=f"trainer (with -d; default {DEFAULT_TRAINER})")
    model.add_argument("-p", "--plans", default=DEFAULT_PLANS, help=f"plans name (with -d; default {DEFAULT_PLANS})")
    model.add_argument("-f", "--folds", nargs="+", default=None,
                       help="folds to export (default: every fold_<k> holding the checkpoint)")
    model.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                       help="checkpoint file inside fold_<k> (default checkpoint_final.pth)")
    parser.add_argument("--pretrained_licence", default=None,
                        help="licence of the pre-trained weights the model started from, for the model card "
                             "(default: 'not recorded' with the checkpoint's download page)")
    parser.add_argument("--description", default=None, help="one-line description for the model card")
    add_root_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.dataset import DatasetError
    from suprem_auto.sharing import ModelPackageError, export_model

    try:
        folder = resolve_model_folder(args)
        path = export_model(folder, args.output, folds=args.folds, checkpoint_name=args.checkpoint,
                            pretrained_licence=args.pretrained_licence, description=args.description)
    except (ModelPackageError, DatasetError, OSError, ValueError) as exc:
        print(f"suprem_export_model: {exc}", file=sys.stderr)
        return 2
    print(f"suprem_export_model: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

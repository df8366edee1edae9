"""``suprem_install_model``: check a model zip completely, then install it into the results root."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from suprem_auto.paths import add_root_arguments, roots_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suprem_install_model",
        description="Install a model zip written by suprem_export_model as <results>/<DatasetXXX_Name>/<model>/. "
                    "Every file's SHA-256 is checked against the model card and every checkpoint is loaded with "
                    "weights_only=True first; a newer format version, a tampered file or a checkpoint holding "
                    "pickled code is refused and nothing is written.")
    parser.add_argument("zip", help="the model zip")
    parser.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    add_root_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from suprem_auto.sharing import ModelPackageError, install_model

    try:
        folder = install_model(args.zip, roots_from_args(args).results, overwrite=args.overwrite)
    except (ModelPackageError, OSError) as exc:
        print(f"suprem_install_model: {exc}", file=sys.stderr)
        return 2
    print(f"suprem_install_model: installed {folder}\n"
          f"predict with: suprem_predict -i INPUT -o OUTPUT -m {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

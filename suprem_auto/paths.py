"""Where raw datasets, preprocessed data and results live.

Resolved once, in this order: explicit CLI flag, then ``SUPREM_RAW`` / ``SUPREM_PREPROCESSED`` / ``SUPREM_RESULTS``,
then nnU-Net's ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``, then a default folder under
``~/suprem_data``. The resolved :class:`Roots` is passed on explicitly; nothing reads the environment later.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

_ENV_NAMES = {
    "raw": ("SUPREM_RAW", "nnUNet_raw"),
    "preprocessed": ("SUPREM_PREPROCESSED", "nnUNet_preprocessed"),
    "results": ("SUPREM_RESULTS", "nnUNet_results"),
}
DEFAULT_BASE = Path("~/suprem_data")


@dataclass(frozen=True)
class Roots:
    """The three data roots of the pipeline."""

    raw: Path
    preprocessed: Path
    results: Path


def _resolve_one(kind: str, flag: Optional[str], env: Mapping[str, str]) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    for name in _ENV_NAMES[kind]:
        value = env.get(name)
        if value:
            return Path(value).expanduser().resolve()
    return (DEFAULT_BASE / kind).expanduser().resolve()


def resolve_roots(raw: Optional[str] = None, preprocessed: Optional[str] = None, results: Optional[str] = None,
                  env: Optional[Mapping[str, str]] = None) -> Roots:
    """Resolve the data roots: flag > SUPREM_* > nnUNet_* > ~/suprem_data/<kind>."""
    env = os.environ if env is None else env
    return Roots(raw=_resolve_one("raw", raw, env),
                 preprocessed=_resolve_one("preprocessed", preprocessed, env),
                 results=_resolve_one("results", results, env))


def add_root_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --raw/--preprocessed/--results flags to a CLI parser."""
    group = parser.add_argument_group("data roots (flag > SUPREM_* > nnUNet_* env vars > ~/suprem_data)")
    group.add_argument("--raw", default=None, help="raw datasets root (DatasetXXX_Name folders)")
    group.add_argument("--preprocessed", default=None, help="preprocessed data root")
    group.add_argument("--results", default=None, help="trained models root")


def roots_from_args(args: argparse.Namespace) -> Roots:
    """Resolve roots from parsed CLI arguments created with :func:`add_root_arguments`."""
    return resolve_roots(getattr(args, "raw", None), getattr(args, "preprocessed", None),
                         getattr(args, "results", None))

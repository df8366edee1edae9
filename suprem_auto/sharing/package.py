"""The model zip's format: its layout, version and the files a model folder contributes to it.

Layout (``format_version`` 1)::

    model_card.json  MODEL_CARD.md                       the card (JSON is the truth, Markdown for people)
    <DatasetXXX_Name>/<trainer>__<plans>__<configuration>/
        plans.json dataset.json [dataset_fingerprint.json] [postprocessing.json] [inference_recipe.json]
        fold_<k>/checkpoint_final.pth [fold_<k>/plans.json] [fold_all/postprocessing.json]

``model_card.json`` lists the SHA-256 of every other file; an installer refuses a file that is missing, extra or
different.
"""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import List, Sequence

FORMAT_VERSION = 1
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
CARD_FILES = (CARD_JSON, CARD_MARKDOWN)
MODEL_LEVEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json", "postprocessing.json")
REQUIRED_MODEL_FILES = ("plans.json", "dataset.json")
FOLD_PLANS = "plans.json"
#: optional files of a fold folder that travel with its checkpoint (a fold 'all' run's post-processing choice)
FOLD_OPTIONAL_FILES = (FOLD_PLANS, "postprocessing.json")


class ModelPackageError(ValueError):
    """A model zip (or a folder to export) that cannot be used; the message is one line naming the file."""


def fold_members(folds: Sequence[str], checkpoint_name: str, model_folder: Path) -> List[str]:
    """Relative paths of the fold files to export: each fold's checkpoint and, when present, its own plans and
    post-processing choice."""
    members = []
    for fold in folds:
        members.append(f"fold_{fold}/{checkpoint_name}")
        members += [f"fold_{fold}/{name}" for name in FOLD_OPTIONAL_FILES
                    if (model_folder / f"fold_{fold}" / name).is_file()]
    return members


def safe_member_name(name: str) -> bool:
    """A zip member name that stays inside the extraction folder: relative, normalised, no ``..``."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name:
        return False
    norm = posixpath.normpath(name)
    return norm == name and not norm.startswith("..") and "/../" not in f"/{norm}/"

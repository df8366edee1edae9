"""nnU-Net v2 post-processing of a model folder, read from its JSON only.

nnU-Net writes ``postprocessing.pkl`` (a pickle of function references: never unpickled here) and, beside it,
``postprocessing.json`` naming the functions and their kwargs. Only
``remove_all_but_largest_component_from_segmentation`` exists in nnU-Net v2; it maps onto our keep-largest steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from suprem_auto.utils.atomic import load_json

KEEP_LARGEST = "remove_all_but_largest_component_from_segmentation"


def find_postprocessing(folder: Path) -> Tuple[Optional[Path], Optional[Path]]:
    """(postprocessing.json, postprocessing.pkl) of a model folder or its ``crossval_results_folds_*`` (None when
    absent)."""
    for base in [folder, *sorted(folder.glob("crossval_results_folds_*"))]:
        js, pkl = base / "postprocessing.json", base / "postprocessing.pkl"
        if js.is_file() or pkl.is_file():
            return (js if js.is_file() else None), (pkl if pkl.is_file() else None)
    return None, None


def convert_postprocessing(path: Path) -> Dict[str, Any]:
    """Our post-processing dict from nnU-Net's ``postprocessing.json`` (``postprocessing_fns`` +
    ``postprocessing_kwargs``); ``ValueError`` naming the file for anything else."""
    pp = load_json(path)
    fns, kwargs = pp.get("postprocessing_fns"), pp.get("postprocessing_kwargs")
    if not isinstance(fns, list) or not isinstance(kwargs, list) or len(fns) != len(kwargs):
        raise ValueError(f"{path}: not an nnU-Net postprocessing.json (needs equal-length 'postprocessing_fns' and "
                         "'postprocessing_kwargs')")
    steps: Dict[str, Any] = {"keep_largest_foreground_component": False, "foreground_labels": [],
                             "keep_largest_component_of": []}
    for i, (fn, kw) in enumerate(zip(fns, kwargs)):
        name = str(fn).rsplit(".", 1)[-1]
        if name != KEEP_LARGEST:
            raise ValueError(f"{path}: postprocessing_fns[{i}] is {fn!r}; only {KEEP_LARGEST} is supported")
        target = kw.get("labels_or_regions")
        if isinstance(target, list) and len(target) > 1 and i == 0:
            steps["keep_largest_foreground_component"] = True
            steps["foreground_labels"] = [int(v) for v in target]
        else:
            targets: List[Any] = target if isinstance(target, list) else [target]
            steps["keep_largest_component_of"] += [v if isinstance(v, int) else list(v) for v in targets]
    return {"apply": steps, "source": str(path)}

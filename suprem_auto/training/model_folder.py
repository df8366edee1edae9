"""The model folder's shared copies (``plans.json``, ``dataset.json``): one set for all folds, never silently changed.

Prediction builds one network from ``<model>/plans.json`` for every fold, so a fold trained with other plans (e.g.
``--patch_size`` or ``--network_width``) would be predicted with the wrong ones. Each fold keeps the plans it trained
with (``fold_<k>/plans.json``); the model-level copy is written when it is missing, left alone when identical, and
replaced only while no other fold of the folder has trained with it; otherwise the run is refused.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from suprem_auto.planning.schema import save_plans, validate_plans
from suprem_auto.training import checkpointing
from suprem_auto.utils.atomic import atomic_write, atomic_write_json, load_json

FOLD_PLANS = "plans.json"


class ModelFolderConflict(ValueError):
    """This run's plans (or dataset.json) differ from those other folds of the model folder trained with."""


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def first_difference(a: Any, b: Any, prefix: str = "") -> Optional[str]:
    """The dotted path of the first field where two JSON values differ (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}{key}"
            found = first_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "(whole file)"


def other_trained_folds(model_dir: Path, fold_dir: Path) -> List[str]:
    """Names of the other fold folders holding a checkpoint (they trained with the model-level copies)."""
    names = (checkpointing.FINAL, checkpointing.LATEST, checkpointing.BEST)
    return sorted(p.name for p in Path(model_dir).glob("fold_*")
                  if p.resolve() != Path(fold_dir).resolve() and any((p / n).is_file() for n in names))


def check_shared_file(model_dir: Path, fold_dir: Path, name: str, content: Dict[str, Any]) -> bool:
    """Whether ``<model>/<name>`` must be (re)written: missing or unused by other folds; identical: False; differing
    from what other folds trained with: :class:`ModelFolderConflict`."""
    target = Path(model_dir) / name
    if not target.is_file():
        return True
    field = first_difference(_normalised(load_json(target)), _normalised(content))
    if field is None:
        return False
    others = other_trained_folds(model_dir, fold_dir)
    if others:
        raise ModelFolderConflict(
            f"{target}: this run's {name} differs from the one {', '.join(others)} trained with (first difference: "
            f"{field}); prediction uses one {name} for all folds: train under another trainer name (-tr) or "
            f"results folder, or move the model folder aside")
    return True


def record_plans(fold_dir: Path, plans: Dict[str, Any], dataset_json: Dict[str, Any],
                 fingerprint: Optional[Path] = None) -> None:
    """At the start of a training (under the fold lock): the fold's own ``plans.json`` and the model folder's copies
    of the plans, dataset.json and (when missing) the fingerprint. Checks everything before writing anything; the
    plans are validated as ``save_plans`` does (a bad override stops here, not at prediction)."""
    validate_plans(plans, fold_dir / FOLD_PLANS)
    fold_dir = Path(fold_dir)
    model_dir = fold_dir.parent
    shared = {"plans.json": plans, "dataset.json": dataset_json}
    to_write = [name for name, content in shared.items() if check_shared_file(model_dir, fold_dir, name, content)]
    for name in to_write:
        if name == "plans.json":
            save_plans(plans, model_dir / name)
        else:
            atomic_write_json(model_dir / name, shared[name])
    save_plans(plans, fold_dir / FOLD_PLANS)
    if fingerprint is not None and fingerprint.is_file() and not (model_dir / "dataset_fingerprint.json").is_file():
        atomic_write(model_dir / "dataset_fingerprint.json", lambda tmp: shutil.copyfile(fingerprint, tmp))

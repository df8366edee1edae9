"""``export_model``: write one zip of a trained model folder with its model card (see ``package.py``)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from suprem_auto.sharing.model_card import build_model_card, render_markdown
from suprem_auto.sharing.package import (CARD_JSON, CARD_MARKDOWN, MODEL_LEVEL_FILES, REQUIRED_MODEL_FILES,
                                         ModelPackageError, fold_members)
from suprem_auto.utils.atomic import atomic_path

PathLike = Union[str, Path]
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the same model gives the same zip bytes


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _discover_folds(model_folder: Path, checkpoint_name: str) -> List[str]:
    folds = [p.name[len("fold_"):] for p in model_folder.glob("fold_*") if (p / checkpoint_name).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def _check_checkpoint(path: Path) -> None:
    """Refuse to export a checkpoint that the installer would refuse (pickled code, no network weights)."""
    from suprem_auto.inference.predictor import ModelFolderError, load_checkpoint

    try:
        load_checkpoint(path)
    except ModelFolderError as exc:
        raise ModelPackageError(str(exc)) from None


def _recipe_for(model_folder: Path, dataset_name: str) -> Optional[bytes]:
    """The dataset's ``crossval/inference_recipe.json`` when it names this model, with the local path made relative."""
    path = model_folder.parent / "crossval" / "inference_recipe.json"
    try:
        recipe = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    if not isinstance(recipe, dict):
        return None
    models = recipe.get("models") or []
    if not any(Path(str(m.get("model_dir", ""))).name == model_folder.name for m in models):
        return None
    for m in models:
        m["model_dir"] = f"{dataset_name}/{Path(str(m.get('model_dir', ''))).name}"
    return (json.dumps(recipe, indent=2) + "\n").encode()


def _configuration_of(model_folder: Path, plans: Dict) -> str:
    parts = model_folder.name.split("__")
    if len(parts) == 3 and parts[2] in plans.get("configurations", {}):
        return parts[2]
    configs = list(plans.get("configurations", {}))
    if len(configs) == 1:
        return configs[0]
    raise ModelPackageError(f"{model_folder}: cannot tell the configuration from the folder name "
                            "(<trainer>__<plans>__<configuration>)")


def export_model(model_folder: PathLike, output_zip: PathLike, folds: Optional[Sequence[Union[int, str]]] = None,
                 checkpoint_name: str = "checkpoint_final.pth", pretrained_licence: Optional[str] = None,
                 description: Optional[str] = None) -> Path:
    """Write ``output_zip`` (atomically) holding the model-level files, each chosen fold's checkpoint (and its own
    plans when present), the inference recipe and the model card. Locks, logs and temporary files are never
    exported. Raises ``ModelPackageError`` naming the file when something needed is missing or unsafe."""
    folder = Path(model_folder)
    if not folder.is_dir():
        raise ModelPackageError(f"{folder}: model folder does not exist")
    for name in REQUIRED_MODEL_FILES:
        if not (folder / name).is_file():
            raise ModelPackageError(f"{folder / name}: missing; not a trained model folder")
    plans = json.loads((folder / "plans.json").read_text())
    dataset_name = str(plans.get("dataset_name") or folder.parent.name)
    configuration = _configuration_of(folder, plans)
    fold_names = [str(f) for f in folds] if folds else _discover_folds(folder, checkpoint_name)
    if not fold_names:
        raise ModelPackageError(f"{folder}: no fold_*/{checkpoint_name} found")
    relative = [n for n in MODEL_LEVEL_FILES if (folder / n).is_file()] + fold_members(fold_names, checkpoint_name,
                                                                                       folder)
    for rel in relative:
        if not (folder / rel).is_file():
            raise ModelPackageError(f"{folder / rel}: missing (fold {rel.split('/')[0]} not finished?)")
        if rel.endswith(".pth"):
            _check_checkpoint(folder / rel)
    prefix = f"{dataset_name}/{folder.name}/"
    contents: Dict[str, bytes] = {prefix + rel: (folder / rel).read_bytes() for rel in relative}
    recipe = _recipe_for(folder, dataset_name)
    if recipe is not None:
        contents[prefix + "inference_recipe.json"] = recipe
    checksums = {name: _sha256_bytes(data) for name, data in contents.items()}
    card = build_model_card(folder, dataset_name, configuration, fold_names, checkpoint_name, checksums,
                            pretrained_licence, description)
    contents[CARD_JSON] = (json.dumps(card, indent=2) + "\n").encode()
    contents[CARD_MARKDOWN] = render_markdown(card).encode()
    output_zip = Path(output_zip)
    with atomic_path(output_zip, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in [CARD_JSON, CARD_MARKDOWN, *sorted(n for n in contents if n not in (CARD_JSON, CARD_MARKDOWN))]:
                info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, contents[name])
    return output_zip

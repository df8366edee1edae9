"""Run a trained nnU-Net v2 model folder with our predictor.

A folder ``<trainer>__<plans>__<configuration>`` is an nnU-Net model when its ``plans.json`` has nnU-Net's
``configurations``, ``dataset_name`` and ``plans_name`` and no ``format_version`` (ours has one). Each
``fold_<k>/<checkpoint>`` is read with the allow-listed ``weights_only`` loader, its tensors renamed to our network's,
and the plans converted (``plans.py``); the predictor then does the rest exactly as for our own models.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from suprem_auto.utils.atomic import load_json

PathLike = Union[str, Path]


def is_nnunet_model_folder(folder: PathLike) -> bool:
    """True when ``folder/plans.json`` is an nnU-Net v2 plans file (see the module docstring)."""
    plans_path = Path(folder) / "plans.json"
    if not plans_path.is_file():
        return False
    try:
        plans = load_json(plans_path)
    except (ValueError, OSError):
        return False
    return (isinstance(plans, dict) and "format_version" not in plans and isinstance(plans.get("configurations"), dict)
            and all(k in plans for k in ("dataset_name", "plans_name")))


def _configuration_of(folder: Path, configuration: Optional[str], plans: dict) -> str:
    if configuration:
        return configuration
    parts = folder.name.split("__")
    if len(parts) == 3:
        return parts[2]
    if len(plans["configurations"]) == 1:
        return next(iter(plans["configurations"]))
    from suprem_auto.inference.predictor import ModelFolderError
    raise ModelFolderError(f"{folder}: cannot tell the configuration (folder name is not "
                           "<trainer>__<plans>__<configuration>); give -c")


def nnunet_predictor(model_folder: PathLike, folds: Optional[Sequence[Union[int, str]]] = None,
                     checkpoint_name: str = "checkpoint_final.pth", configuration: Optional[str] = None,
                     use_postprocessing: bool = True, postprocessing_file: Optional[PathLike] = None,
                     **options: Any):
    """A :class:`~suprem_auto.inference.predictor.Predictor` for an nnU-Net v2 model folder.

    Same arguments as ``Predictor.from_model_folder``. Post-processing: ``postprocessing_file`` (ours or nnU-Net's
    JSON), else nnU-Net's ``postprocessing.json`` in the folder or its ``crossval_results_folds_*``; a lone
    ``postprocessing.pkl`` is not unpickled (prediction runs without post-processing and says so).
    """
    from suprem_auto.dataset import parse_labels
    from suprem_auto.inference.predictor import ModelFolderError, Predictor, _discover_folds, _state_dict_mismatch
    from suprem_auto.interop.nnunet.checkpoint import read_nnunet_checkpoint
    from suprem_auto.interop.nnunet.keys import from_nnunet_keys
    from suprem_auto.interop.nnunet.plans import convert_plans
    from suprem_auto.interop.nnunet.postprocessing import convert_postprocessing, find_postprocessing
    from suprem_auto.networks import build_network
    from suprem_auto.planning.schema import PlansError
    from suprem_auto.pretrained.checkpoint_io import CheckpointError, strip_prefixes

    folder = Path(model_folder)
    nn_plans = load_json(folder / "plans.json")
    if not (folder / "dataset.json").is_file():
        raise ModelFolderError(f"{folder / 'dataset.json'}: dataset.json is missing")
    dataset_json = load_json(folder / "dataset.json")
    configuration = _configuration_of(folder, configuration, nn_plans)
    try:
        plans = convert_plans(nn_plans, dataset_json, configuration, str(folder / "plans.json"))
    except PlansError as exc:
        raise ModelFolderError(str(exc)) from None
    labels = parse_labels(dataset_json, folder / "dataset.json")
    from suprem_auto.planning import plans_view

    arch = plans_view(plans, folder / "plans.json").configuration(configuration).architecture.to_json()
    network = build_network(arch, len(dataset_json["channel_names"]), labels.num_segmentation_heads,
                            deep_supervision=False)
    fold_names = [str(f) for f in folds] if folds else _discover_folds(folder, checkpoint_name)
    fold_weights, mirror_axes = [], None
    for name in fold_names:
        path = folder / f"fold_{name}" / checkpoint_name
        try:
            ckpt = read_nnunet_checkpoint(path)
            stripped, _ = strip_prefixes(ckpt["network_weights"])
            weights, _ = from_nnunet_keys(stripped, arch["name"], str(path))
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            raise ModelFolderError(str(exc)) from None
        problem = _state_dict_mismatch(network, weights)
        if problem:
            raise ModelFolderError(f"{path}: weights do not fit the network built from plans.json ({problem})")
        fold_weights.append(weights)
        if mirror_axes is None and ckpt.get("inference_allowed_mirroring_axes") is not None:
            mirror_axes = [int(a) for a in ckpt["inference_allowed_mirroring_axes"]]
    if "mirror_axes" not in options:
        options["mirror_axes"] = mirror_axes
    postprocessing = None
    if use_postprocessing:
        js, pkl = (Path(postprocessing_file), None) if postprocessing_file else find_postprocessing(folder)
        if js is not None:
            if not js.is_file():
                raise ModelFolderError(f"{js}: postprocessing file does not exist")
            raw = load_json(js)
            if "postprocessing_fns" in raw:
                postprocessing = convert_postprocessing(js)
            else:
                from suprem_auto.evaluation.postprocessing import load_postprocessing
                postprocessing = load_postprocessing(js)
        elif pkl is not None:
            print(f"{pkl}: not read (a pickle of function references is never unpickled; no postprocessing.json "
                  "beside it): predicting without post-processing", file=sys.stderr)
    options.setdefault("nnunet_gaussian", True)  # weight overlapping tiles as nnUNetv2_predict does
    return Predictor(network, plans, configuration, dataset_json, fold_weights=fold_weights,
                     postprocessing=postprocessing, **options)

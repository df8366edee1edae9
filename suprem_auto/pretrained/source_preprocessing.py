"""What one of our own checkpoints was pre-trained on (dataset, configuration, spacing, normalisation, input
channels), and how a fine-tuning plan differs from it, each difference with what a user should expect.

Checkpoints written by ``suprem_train`` carry this as ``preprocessing``; older ones are described from the
``plans.json`` / ``hyperparameters.json`` of their fold folder when the file still sits there."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from suprem_auto.planning.view import plans_view

#: relative spacing difference per axis below which two spacings count as the same
SPACING_TOLERANCE = 0.1
GUIDE = "docs/PRETRAINING.md, 'Pre-training on another dataset'"


def describe_preprocessing(plans: Mapping[str, Any], configuration: str,
                           dataset_json: Mapping[str, Any]) -> Dict[str, Any]:
    """The preprocessing a run trains on, as stored in its checkpoints."""
    config = plans_view(plans).configuration(configuration)
    labels = dataset_json.get("labels") or {}
    return {"dataset_name": plans.get("dataset_name"), "configuration": configuration,
            "spacing": [float(s) for s in config.spacing],
            "normalization": [n.scheme for n in config.normalization],
            "channel_names": [str(v) for v in (dataset_json.get("channel_names") or {}).values()],
            "foreground_labels": [str(k) for k in labels if str(k) != "background"]}


def source_preprocessing(checkpoint_path: Path, checkpoint: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The checkpoint's ``preprocessing`` entry, else one rebuilt from the fold folder's ``plans.json`` and
    ``hyperparameters.json`` beside it (older checkpoints); None when neither is there."""
    stored = checkpoint.get("preprocessing")
    if isinstance(stored, dict):
        return stored
    fold = Path(checkpoint_path).resolve().parent
    plans_file, hyper_file = fold / "plans.json", fold / "hyperparameters.json"
    if not (plans_file.is_file() and hyper_file.is_file()):
        return None
    try:
        plans = json.loads(plans_file.read_text())
        configuration = checkpoint.get("configuration") or json.loads(hyper_file.read_text())["configuration"]
        dataset_json_file = fold.parent / "dataset.json"
        dataset_json = json.loads(dataset_json_file.read_text()) if dataset_json_file.is_file() else {}
        return describe_preprocessing(plans, configuration, dataset_json)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _scale_note(source: List[float], target: List[float]) -> Optional[str]:
    if len(source) != len(target):
        return None
    if all(abs(t - s) <= SPACING_TOLERANCE * s for s, t in zip(source, target)):
        return None
    ratios = [f"{r:.2g}" for r in sorted(s / t for s, t in zip(source, target))]
    scale = ratios[0] if ratios[0] == ratios[-1] else f"{ratios[0]}-{ratios[-1]}"
    return (f"spacing: this plan resamples to {target} mm, the checkpoint was pre-trained at {source} mm, so "
            f"structures appear {scale}x the size its filters learnt them at; expect "
            f"a smaller gain than from pre-training at this spacing ({GUIDE})")


def differences_from_source(source: Mapping[str, Any], target: Mapping[str, Any]) -> List[str]:
    """One line per way the fine-tuning preprocessing ``target`` differs from the pre-training ``source`` (both as
    :func:`describe_preprocessing` gives them), saying what a user should expect; empty when they match."""
    lines: List[str] = []
    origin = f"{source.get('dataset_name')} ({source.get('configuration')})"
    scale = _scale_note(list(source.get("spacing") or []), list(target.get("spacing") or []))
    if scale:
        lines.append(scale)
    src_norm, dst_norm = list(source.get("normalization") or []), list(target.get("normalization") or [])
    if src_norm and dst_norm and src_norm != dst_norm:
        lines.append(f"normalisation: this plan normalises with {dst_norm}, {origin} with {src_norm}: the first "
                     "layers see intensities they were not trained on and must re-learn them; expect the gain to "
                     "come from the deeper layers only")
    src_ch, dst_ch = list(source.get("channel_names") or []), list(target.get("channel_names") or [])
    if src_ch and dst_ch and [c.lower() for c in src_ch] != [c.lower() for c in dst_ch]:
        lines.append(f"input: this dataset's channels are {dst_ch}, {origin} was pre-trained on {src_ch} "
                     "(another modality or sequence); pre-training on another kind of image can help, do nothing "
                     f"or hurt: compare with a from-scratch run of the same budget ({GUIDE})")
    return lines

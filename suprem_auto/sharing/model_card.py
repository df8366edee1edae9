"""The model card: what a shared model does, what it was trained on, how well it did, and a checksum per file."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from suprem_auto.sharing.package import FORMAT_VERSION


def _load(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _median_spacing(fingerprint: Dict[str, Any]) -> Optional[List[float]]:
    spacings = fingerprint.get("spacings") or []
    if not spacings:
        return None
    return [float(statistics.median(s[a] for s in spacings)) for a in range(len(spacings[0]))]


def fingerprint_summary(model_folder: Path) -> Optional[Dict[str, Any]]:
    """Median spacing (z, y, x), case count and per-channel foreground intensity statistics of the training data."""
    fp = _load(model_folder / "dataset_fingerprint.json")
    if not isinstance(fp, dict):
        return None
    return {"median_spacing_zyx_mm": _median_spacing(fp), "num_cases": len(fp.get("case_ids") or []) or None,
            "foreground_intensity_per_channel": fp.get("foreground_intensity_properties_per_channel")}


def cross_validation_dice(model_folder: Path, labels: Dict[str, Any], folds: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Dice per class: the gathered cross-validation summary (``crossval_results_folds_*``) when there is one,
    else the mean over the exported folds' ``validation/summary.json``. None when neither exists."""
    names = {str(v): k for k, v in labels.items() if isinstance(v, int)}
    gathered = sorted(model_folder.glob("crossval_results_folds_*/summary.json"))
    if gathered:
        summary = _load(gathered[-1]) or {}
        per_class = {names.get(k, k): m.get("dice") for k, m in (summary.get("mean") or {}).items()}
        return {"source": gathered[-1].parent.name, "dice_per_class": per_class,
                "foreground_mean_dice": (summary.get("foreground_mean") or {}).get("dice")}
    per_fold = [s for s in (_load(model_folder / f"fold_{f}" / "validation" / "summary.json") for f in folds) if s]
    if not per_fold:
        return None
    keys = sorted({k for s in per_fold for k in (s.get("mean") or {})}, key=lambda k: (len(k), k))
    per_class = {}
    for key in keys:
        values = [s["mean"][key].get("dice") for s in per_fold if key in s.get("mean", {})]
        values = [v for v in values if isinstance(v, (int, float))]
        per_class[names.get(key, key)] = float(sum(values) / len(values)) if values else None
    fg = [s.get("foreground_mean", {}).get("dice") for s in per_fold]
    fg = [v for v in fg if isinstance(v, (int, float))]
    return {"source": f"validation of folds {', '.join(map(str, folds))}", "dice_per_class": per_class,
            "foreground_mean_dice": float(sum(fg) / len(fg)) if fg else None}


def pretrained_source(model_folder: Path, folds: Sequence[str], licence: Optional[str]) -> Optional[Dict[str, Any]]:
    """The pre-trained checkpoint the folds started from (their ``load_report.json``), with its zoo entry's page and
    the licence given by the exporter (the zoo records none). None for a model trained from scratch."""
    from suprem_auto.pretrained.zoo import find_entry

    for fold in folds:
        report = _load(model_folder / f"fold_{fold}" / "load_report.json")
        if isinstance(report, dict) and report.get("checkpoint"):
            file_name = Path(str(report["checkpoint"])).name
            entry = find_entry(file_name)
            page = entry.download_page if entry else None
            return {"file_name": file_name, "zoo_name": entry.name if entry else None,
                    "layout": report.get("layout"), "description": report.get("layout_description"),
                    "download_page": page,
                    "licence": licence or (f"not recorded; see {page}" if page else "not recorded")}
    return None


def build_model_card(model_folder: Path, dataset_name: str, configuration: str, folds: Sequence[str],
                     checkpoint_name: str, files: Dict[str, str], pretrained_licence: Optional[str] = None,
                     description: Optional[str] = None) -> Dict[str, Any]:
    """The card as a dict (written as ``model_card.json``); ``files`` maps zip member -> SHA-256."""
    import torch

    import suprem_auto

    dataset_json = _load(model_folder / "dataset.json") or {}
    plans = _load(model_folder / "plans.json") or {}
    trainer, _, _ = (model_folder.name.split("__") + ["", ""])[:3]
    fingerprint = fingerprint_summary(model_folder)
    num_training = dataset_json.get("numTraining") or (fingerprint or {}).get("num_cases")
    config = plans.get("configurations", {}).get(configuration, {})
    return {
        "format_version": FORMAT_VERSION,
        "task": {"dataset": dataset_name, "description": description or dataset_json.get("description"),
                 "model": model_folder.name, "trainer": trainer, "plans": plans.get("plans_name"),
                 "configuration": configuration, "folds": list(folds), "checkpoint": checkpoint_name,
                 "architecture": (config.get("architecture") or {}).get("name"),
                 "spacing_zyx_mm": config.get("spacing"), "patch_size": config.get("patch_size")},
        "labels": dataset_json.get("labels"),
        "regions_class_order": dataset_json.get("regions_class_order"),
        "channels": dataset_json.get("channel_names"),
        "modality": sorted(set(map(str, (dataset_json.get("channel_names") or {}).values()))),
        "file_ending": dataset_json.get("file_ending"),
        "fingerprint": fingerprint,
        "training_cases": num_training,
        "cross_validation": cross_validation_dice(model_folder, dataset_json.get("labels") or {}, folds),
        "pretrained": pretrained_source(model_folder, folds, pretrained_licence),
        "versions": {"suprem_auto": suprem_auto.__version__, "torch": torch.__version__},
        "files": dict(sorted(files.items())),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def render_markdown(card: Dict[str, Any]) -> str:
    """``MODEL_CARD.md``: the same facts as the JSON, for people."""
    task = card["task"]
    lines = [f"# Model card: {task['dataset']} / {task['model']}", ""]
    if task.get("description"):
        lines += [str(task["description"]), ""]
    lines += ["## Task", "", f"- configuration: {task['configuration']} ({task.get('architecture')}), "
              f"spacing {task.get('spacing_zyx_mm')} mm (z, y, x), patch {task.get('patch_size')}",
              f"- trainer: {task['trainer']}, plans: {task.get('plans')}",
              f"- folds: {', '.join(map(str, task['folds']))} ({task['checkpoint']}; probabilities averaged)",
              f"- channels: {card.get('channels')} (modality: {', '.join(card.get('modality') or []) or '-'})",
              f"- labels: {card.get('labels')}", f"- training cases: {_fmt(card.get('training_cases'))}", ""]
    fp = card.get("fingerprint")
    if fp:
        lines += ["## Training data fingerprint", "",
                  f"- median spacing (z, y, x): {fp.get('median_spacing_zyx_mm')} mm"]
        for ch, stats in (fp.get("foreground_intensity_per_channel") or {}).items():
            keys = ("mean", "std", "percentile_00_5", "percentile_99_5")
            lines.append(f"- channel {ch} foreground intensity: " +
                         ", ".join(f"{k} {_fmt(stats.get(k))}" for k in keys if k in stats))
        lines.append("")
    cv = card.get("cross_validation")
    lines += ["## Cross-validation Dice", ""]
    if cv:
        lines += [f"Source: {cv['source']}; foreground mean Dice {_fmt(cv.get('foreground_mean_dice'))}", "",
                  "| class | Dice |", "|---|---|"]
        lines += [f"| {name} | {_fmt(d)} |" for name, d in cv["dice_per_class"].items()]
    else:
        lines.append("No validation results were exported with this model.")
    pre = card.get("pretrained")
    lines += ["", "## Pre-trained initialisation", ""]
    lines.append(f"{pre['file_name']} ({pre.get('zoo_name') or 'not a zoo checkpoint'}, layout {pre.get('layout')}); "
                 f"licence: {pre.get('licence')}" if pre else "None: trained from scratch.")
    versions = card["versions"]
    lines += ["", "## Versions", "", f"suprem_auto {versions['suprem_auto']}, torch {versions['torch']}, "
              f"model zip format {card['format_version']}", "", "## Files (SHA-256)", "", "| file | SHA-256 |",
              "|---|---|"]
    lines += [f"| {name} | `{digest}` |" for name, digest in card["files"].items()]
    lines += ["", "Install with `suprem_install_model MODEL.zip`, or run it directly with "
              "`suprem_predict -i INPUT -o OUTPUT -m MODEL.zip`.", ""]
    return "\n".join(lines)

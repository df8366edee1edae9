"""Write the plans files of a dataset: the default planner plus any presets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from suprem_auto.planning.default_planner import DEFAULT_PLANS_NAME, plan_default
from suprem_auto.planning.presets import list_presets, plan_preset
from suprem_auto.planning.schema import PlansError, save_plans


def resolve_preset_names(names: Sequence[str]) -> list:
    """Expand ``all`` and check names against the shipped presets."""
    known = list_presets()
    if "all" in names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PlansError(f"unknown preset(s) {', '.join(unknown)} (known: {', '.join(known)}, or 'all')")
    return list(dict.fromkeys(names))


def plan_experiments(ds: Any, fingerprint: Dict[str, Any], output_folder: Path, presets: Sequence[str] = (),
                     gpu_memory_gb: float = 8.0, default: bool = True) -> Dict[str, Dict[str, Any]]:
    """Plan with the default planner (when ``default``) and each preset; write ``<plans_name>.json`` atomically."""
    output_folder = Path(output_folder)
    all_plans: Dict[str, Dict[str, Any]] = {}
    if default:
        plans = plan_default(fingerprint, ds.channel_names, ds.labels.num_segmentation_heads, ds.name, gpu_memory_gb)
        all_plans[plans["plans_name"]] = plans
    for name in resolve_preset_names(presets):
        plans = plan_preset(name, fingerprint, ds.channel_names, ds.name, gpu_memory_gb)
        all_plans[plans["plans_name"]] = plans
    for plans_name, plans in all_plans.items():
        save_plans(plans, output_folder / f"{plans_name}.json")
    return all_plans


__all__ = ["DEFAULT_PLANS_NAME", "plan_experiments", "resolve_preset_names"]

"""Write the plans files of a dataset: the default planner plus any presets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from suprem_auto.planning.default_planner import DEFAULT_PLANS_NAME, plan_default
from suprem_auto.planning.presets import list_presets, plan_preset
from suprem_auto.planning.schema import PlansError, save_plans


def resolve_preset_names(names: Sequence[str]) -> list:
    """Check names against the shipped presets; ``all`` adds every SuPreM backbone preset (ResEnc presets are
    named: resenc_m, resenc_l, resenc_xl)."""
    known = list_presets(None)
    unknown = [n for n in names if n not in known and n != "all"]
    if unknown:
        raise PlansError(f"unknown preset(s) {', '.join(unknown)} (known: {', '.join(known)}, or 'all' for "
                         f"{', '.join(list_presets())})")
    expanded = [e for n in names for e in (list_presets() if n == "all" else [n])]
    return list(dict.fromkeys(expanded))


def plan_experiments(ds: Any, fingerprint: Dict[str, Any], output_folder: Path, presets: Sequence[str] = (),
                     gpu_memory_gb: Optional[float] = None, default: bool = True) -> Dict[str, Dict[str, Any]]:
    """Plan with the default planner (when ``default``) and each preset; write ``<plans_name>.json`` atomically.

    ``gpu_memory_gb``: the memory every plan is sized for; None: 8 GB, except a ResEnc preset's own target."""
    output_folder = Path(output_folder)
    all_plans: Dict[str, Dict[str, Any]] = {}
    num_outputs = ds.labels.num_segmentation_heads
    if default:
        plans = plan_default(fingerprint, ds.channel_names, num_outputs, ds.name,
                             8.0 if gpu_memory_gb is None else gpu_memory_gb)
        all_plans[plans["plans_name"]] = plans
    for name in resolve_preset_names(presets):
        plans = plan_preset(name, fingerprint, ds.channel_names, ds.name, gpu_memory_gb, num_outputs=num_outputs)
        all_plans[plans["plans_name"]] = plans
    for plans_name, plans in all_plans.items():
        save_plans(plans, output_folder / f"{plans_name}.json")
    return all_plans


__all__ = ["DEFAULT_PLANS_NAME", "plan_experiments", "resolve_preset_names"]

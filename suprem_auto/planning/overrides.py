"""Command-line changes to a configuration plan (``--patch_size``, ``--batch_size``, ``--network_width``, a trainer's
backbone), applied and validated in one place before a run uses or records the plans."""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

from suprem_auto.planning.schema import PlansError, validate_plans

#: the override keys :func:`apply_overrides` knows
OVERRIDE_KEYS = ("patch_size", "batch_size", "network_width", "backbone")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_overrides(plans: Mapping[str, Any], configuration: str, overrides: Mapping[str, Any],
                    source: Any = "plans") -> Dict[str, Any]:
    """A copy of ``plans`` whose configuration plan ``configuration`` carries ``overrides``, validated like
    :func:`suprem_auto.planning.save_plans` validates (``PlansError`` naming the option or the dotted field).

    ``patch_size``: one size per axis of the configuration; ``batch_size``: >= 1; ``backbone``: replaces the
    architecture by that backbone with its default kwargs (unless it is already the plans' one);
    ``network_width``: multiplies the architecture's width argument (``networks.scale_width``). ``None`` values are
    ignored; the input is never changed.
    """
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise PlansError(f"{source}: unknown plan override(s) {unknown} (known: {', '.join(OVERRIDE_KEYS)})")
    configs = plans.get("configurations") if isinstance(plans, Mapping) else None
    if not isinstance(configs, Mapping) or configuration not in configs:
        known = ", ".join(configs or {}) if isinstance(configs, Mapping) else "none"
        raise PlansError(f"{source}: plans have no configuration '{configuration}' (known: {known or 'none'})")
    result = copy.deepcopy(dict(plans))
    block = result["configurations"][configuration]
    patch = overrides.get("patch_size")
    if patch is not None:
        if (not isinstance(patch, (list, tuple)) or len(patch) != len(block["patch_size"])
                or not all(_is_int(p) and p >= 1 for p in patch)):
            raise PlansError(f"{source}: --patch_size {patch!r} must be {len(block['patch_size'])} integers >= 1 "
                             f"for configuration '{configuration}'")
        block["patch_size"] = [int(p) for p in patch]
    batch = overrides.get("batch_size")
    if batch is not None:
        if not _is_int(batch) or batch < 1:
            raise PlansError(f"{source}: --batch_size {batch!r} must be an integer >= 1")
        block["batch_size"] = int(batch)
    backbone = overrides.get("backbone")
    if backbone is not None and block["architecture"].get("name") != backbone:
        block["architecture"] = {"name": str(backbone), "kwargs": {}}
    width = overrides.get("network_width")
    if width is not None and width != 1:
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise PlansError(f"{source}: --network_width {width!r} must be a number > 0")
        from suprem_auto.networks import scale_width  # torch is imported only when a width is changed

        try:
            block["architecture"] = scale_width(block["architecture"], float(width))
        except ValueError as exc:
            raise PlansError(f"{source}: {exc}") from None
    return validate_plans(result, source)

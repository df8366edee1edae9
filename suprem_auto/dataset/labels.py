"""Label definitions from dataset.json: plain labels, regions (lists of labels) and the ignore label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


@dataclass(frozen=True)
class LabelSpec:
    """Parsed ``labels`` of dataset.json.

    ``names`` maps each label value (0 = background) to its name. With regions, ``regions`` holds the label
    values each region covers, in ``regions_class_order``. ``ignore_label`` is excluded from losses and metrics.
    """

    names: Dict[int, str]
    ignore_label: Optional[int] = None
    regions: Optional[Tuple[Tuple[int, ...], ...]] = None
    region_names: Optional[Tuple[str, ...]] = None
    regions_class_order: Optional[Tuple[int, ...]] = None

    @property
    def has_regions(self) -> bool:
        return self.regions is not None

    @property
    def all_values(self) -> List[int]:
        """Every value allowed in a label map (including background and the ignore label)."""
        values = set(self.names)
        if self.ignore_label is not None:
            values.add(self.ignore_label)
        return sorted(values)

    @property
    def foreground_labels(self) -> List[int]:
        """Foreground label values (no background, no ignore)."""
        return [v for v in sorted(self.names) if v != 0 and v != self.ignore_label]

    @property
    def num_segmentation_heads(self) -> int:
        """Network output channels: one per region (sigmoid) or one per label incl. background (softmax)."""
        if self.regions is not None:
            return len(self.regions)
        return len([v for v in self.names if v != self.ignore_label])

    def to_json(self) -> Dict[str, Any]:
        return {"names": {str(k): v for k, v in self.names.items()}, "ignore_label": self.ignore_label,
                "regions": [list(r) for r in self.regions] if self.regions else None,
                "region_names": list(self.region_names) if self.region_names else None,
                "regions_class_order": list(self.regions_class_order) if self.regions_class_order else None}


def _as_values(value: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def parse_labels(dataset_json: Dict[str, Any], source: Union[str, Path] = "dataset.json") -> LabelSpec:
    """Parse and check the ``labels`` field (background 0 required; ignore must be the highest value)."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{source}: field 'labels' must be a non-empty object like {{\"background\": 0, ...}}")
    names: Dict[int, str] = {}
    region_entries: List[Tuple[str, Tuple[int, ...]]] = []
    ignore: Optional[int] = None
    for name, value in labels.items():
        try:
            values = _as_values(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: label '{name}' has a non-integer value {value!r}") from None
        if name == "ignore":
            if len(values) != 1:
                raise ValueError(f"{source}: the ignore label must be a single integer")
            ignore = values[0]
            continue
        if isinstance(value, (list, tuple)) and len(values) > 1:
            region_entries.append((name, values))
            for v in values:
                names.setdefault(v, f"label_{v}")
        else:
            names[values[0]] = name
    if 0 not in names:
        raise ValueError(f"{source}: field 'labels' must declare background as 0")
    if ignore is not None and any(v >= ignore for v in names):
        raise ValueError(f"{source}: the ignore label ({ignore}) must be the highest label value")
    regions = region_names = order = None
    if region_entries:
        # every entry but background and ignore is a region (plain labels: one-value regions), in the order of
        # dataset.json, which is the order of the network's channels and of regions_class_order (as nnU-Net)
        region_entries = [(name, _as_values(value)) for name, value in labels.items()
                          if name != "ignore" and _as_values(value) != (0,)]
        region_names = tuple(n for n, _ in region_entries)
        regions = tuple(v for _, v in region_entries)
        raw_order = dataset_json.get("regions_class_order")
        if raw_order is None or len(raw_order) != len(regions):
            raise ValueError(f"{source}: regions need 'regions_class_order' with one entry per region ({len(regions)})")
        order = tuple(int(v) for v in raw_order)
    return LabelSpec(names=dict(sorted(names.items())), ignore_label=ignore, regions=regions,
                     region_names=region_names, regions_class_order=order)

"""A typed, read-only view of a plans dict: :class:`Plans` with one :class:`ConfigurationPlan` per configuration.

The plans file stays a validated JSON dict (``load_plans`` returns it, planners write it); code that reads plans
builds the view with :func:`plans_view` (or ``Plans.from_json``) and reads typed fields instead of string lookups.
Words: the plans' per-configuration block is a "configuration plan"; :class:`suprem_auto.training.config.TrainingConfig`
is the "training config".
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

from suprem_auto.planning.schema import PlansError, validate_plans

_CONFIGURATION_FIELDS = ("data_identifier", "spacing", "patch_size", "batch_size", "normalization", "resampling",
                         "architecture", "batch_dice", "median_image_size_in_voxels")


def _frozen(value: Any) -> Any:
    """A read-only deep copy: dicts become mapping proxies, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    """JSON again: mapping proxies become dicts, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class Normalization:
    """How one input channel is normalised: ``scheme`` (ct, zscore, window, none, rescale_0_1), its ``params``."""

    scheme: str
    use_mask: bool = False
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Architecture:
    """The network of a configuration: a backbone name and its constructor keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "kwargs": _thawed(self.kwargs)}


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration of the plans (``2d``, ``3d_fullres``, ...): spacing and patch in (z, y, x) after
    transposition (2 entries for 2d), batch size, normalisation per channel, resampling orders, architecture."""

    name: str
    data_identifier: str
    spacing: Tuple[float, ...]
    patch_size: Tuple[int, ...]
    batch_size: int
    normalization: Tuple[Normalization, ...]
    resampling: Mapping[str, Any]
    architecture: Architecture
    batch_dice: bool = False
    median_image_size_in_voxels: Optional[Tuple[float, ...]] = None  # the planner writes medians (may be x.5)
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_2d(self) -> bool:
        return len(self.patch_size) == 2

    @property
    def previous_stage(self) -> Optional[str]:
        """Cascade: the configuration whose segmentations are extra one-hot inputs (``3d_lowres``), else None."""
        return self.extra.get("previous_stage")

    @property
    def next_stages(self) -> Tuple[str, ...]:
        """Cascade: the configurations that take this one's segmentations as inputs."""
        nxt = self.extra.get("next_stage")
        return () if nxt is None else (nxt,) if isinstance(nxt, str) else tuple(nxt)

    @classmethod
    def from_json(cls, name: str, block: Mapping[str, Any]) -> "ConfigurationPlan":
        """The view of a validated configuration block."""
        arch = block["architecture"]
        median = block.get("median_image_size_in_voxels")
        return cls(name=name, data_identifier=str(block["data_identifier"]),
                   spacing=tuple(float(s) for s in block["spacing"]),
                   patch_size=tuple(int(p) for p in block["patch_size"]), batch_size=int(block["batch_size"]),
                   normalization=tuple(Normalization(str(n["scheme"]), bool(n.get("use_mask", False)),
                                                     _frozen(dict(n.get("params") or {})))
                                       for n in block["normalization"]),
                   resampling=_frozen(dict(block["resampling"])),
                   architecture=Architecture(str(arch["name"]), _frozen(dict(arch.get("kwargs") or {}))),
                   batch_dice=bool(block.get("batch_dice", False)),
                   median_image_size_in_voxels=tuple(float(s) for s in median) if median is not None else None,
                   extra=_frozen({k: v for k, v in block.items() if k not in _CONFIGURATION_FIELDS}))

    def to_json(self) -> Dict[str, Any]:
        """The configuration block as the plans file holds it (unknown keys kept)."""
        out: Dict[str, Any] = _thawed(self.extra)
        out.update({
            "data_identifier": self.data_identifier, "spacing": list(self.spacing),
            "patch_size": list(self.patch_size), "batch_size": self.batch_size,
            "normalization": [{"scheme": n.scheme, "use_mask": n.use_mask, "params": _thawed(n.params)}
                              for n in self.normalization],
            "resampling": _thawed(self.resampling), "architecture": self.architecture.to_json(),
            "batch_dice": self.batch_dice})
        if self.median_image_size_in_voxels is not None:
            out["median_image_size_in_voxels"] = list(self.median_image_size_in_voxels)
        return out


@dataclass(frozen=True)
class Plans:
    """The experiment plans of one dataset: identity, orientation handling and the configuration plans."""

    plans_name: str
    dataset_name: str
    preset: Optional[str]
    reorient_to_ras: bool
    transpose_forward: Tuple[int, ...]
    transpose_backward: Tuple[int, ...]
    configurations: Mapping[str, ConfigurationPlan]
    source: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def from_json(cls, plans: Mapping[str, Any], source: Any = "plans") -> "Plans":
        """The view of a plans dict (validated first; a bad field raises ``PlansError`` naming ``source``)."""
        validate_plans(plans, source)
        return cls(plans_name=str(plans["plans_name"]), dataset_name=str(plans["dataset_name"]),
                   preset=plans.get("preset"), reorient_to_ras=bool(plans.get("reorient_to_ras", False)),
                   transpose_forward=tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2))),
                   transpose_backward=tuple(int(a) for a in plans.get("transpose_backward", (0, 1, 2))),
                   configurations=MappingProxyType({name: ConfigurationPlan.from_json(name, block)
                                                    for name, block in plans["configurations"].items()}),
                   source=_frozen(dict(plans)))

    def configuration(self, name: str) -> ConfigurationPlan:
        """The plan of configuration ``name``; an unknown one raises ``PlansError`` listing the known ones."""
        if name not in self.configurations:
            known = ", ".join(self.configurations) or "none"
            raise PlansError(f"plans '{self.plans_name}' have no configuration '{name}' (known: {known})")
        return self.configurations[name]

    def data_configuration(self, name: str) -> str:
        """The configuration whose preprocessed data ``name`` trains on: for a cascade stage the configuration
        without a previous stage that shares its data_identifier (``3d_fullres``), else ``name`` itself."""
        config = self.configuration(name)
        if config.previous_stage is None:
            return name
        return next((other for other, c in self.configurations.items()
                     if c.data_identifier == config.data_identifier and c.previous_stage is None), name)

    def to_json(self) -> Dict[str, Any]:
        """The plans dict (unknown keys of the source kept; configurations from their views)."""
        out = copy.deepcopy(_thawed(self.source))
        out.update({"plans_name": self.plans_name, "dataset_name": self.dataset_name, "preset": self.preset,
                    "reorient_to_ras": self.reorient_to_ras, "transpose_forward": list(self.transpose_forward),
                    "transpose_backward": list(self.transpose_backward),
                    "configurations": {name: c.to_json() for name, c in self.configurations.items()}})
        return out


def plans_view(plans: Mapping[str, Any], source: Any = "plans") -> Plans:
    """Shorthand for :meth:`Plans.from_json`."""
    return Plans.from_json(plans, source)

"""Trainer names -> classes, plus declared name suffixes (``_<N>epochs``, ``_NoDA``, ``_NoMirroring``) that change
one option without a new class.

Registered trainers: ``SupremTrainer`` and the fine-tuning trainer of every backbone whose registry entry names a
``default_trainer``. A user's trainer needs no registration: ``-tr package.module:ClassName`` imports the module (like
``python -m``: installed packages, ``PYTHONPATH`` and the current directory) and takes the class, which must subclass
``BaseTrainer``.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Callable, Dict, Optional, Tuple, Type

from suprem_auto.networks.registry import backbones, get_backbone
from suprem_auto.training.trainers.base import BaseTrainer
from suprem_auto.training.trainers.suprem import SupremTrainer, finetune_trainer

DEFAULT_TRAINER = "SupremTrainer"


def trainer_classes() -> Dict[str, Type[BaseTrainer]]:
    """Registered trainers by name: SupremTrainer, then one fine-tuning trainer per backbone that declares one."""
    classes: Dict[str, Type[BaseTrainer]] = {DEFAULT_TRAINER: SupremTrainer}
    for entry in backbones():
        if entry.default_trainer not in (None, DEFAULT_TRAINER):
            classes[entry.default_trainer] = finetune_trainer(entry.name)
    return classes


_SUFFIXES = [
    (re.compile(r"_(\d+)epochs$"), "_<N>epochs: train N epochs", lambda m: {"num_epochs": int(m.group(1))}),
    (re.compile(r"_NoDA$"), "_NoDA: no data augmentation", lambda m: {"augmentation": False, "mirror_axes": None}),
    (re.compile(r"_NoMirroring$"), "_NoMirroring: no mirroring (training and inference)",
     lambda m: {"mirror_axes": None}),
]


def _split_plugin(spec: str) -> Tuple[str, str]:
    """(module, class name) of ``package.module:ClassName``; a malformed spec is a one-line error."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise ValueError(f"-tr {spec}: a trainer plugin is written package.module:ClassName")
    return module_name, class_name


def _import_plugin_module(spec: str, module_name: str) -> Any:
    """Import a ``-tr module:Class`` module; the current directory is searched too, as ``python -m`` does."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise ValueError(f"-tr {spec}: cannot import module '{module_name}' ({type(exc).__name__}: {exc}); "
                         f"it must be importable from the current directory or PYTHONPATH") from None


def plugin_trainer(spec: str) -> Type[BaseTrainer]:
    """The class named by ``package.module:ClassName`` (no suffixes), checked to be a ``BaseTrainer`` subclass."""
    module_name, class_name = _split_plugin(spec)
    module = _import_plugin_module(spec, module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"-tr {spec}: module '{module_name}' ({getattr(module, '__file__', '?')}) has no "
                         f"'{class_name}'")
    if not (isinstance(cls, type) and issubclass(cls, BaseTrainer)):
        raise ValueError(f"-tr {spec}: '{class_name}' in module '{module_name}' is not a subclass of "
                         f"suprem_auto.training.trainers.BaseTrainer")
    return cls


def _strip_suffixes(name: str, known: Callable[[str], bool]) -> Tuple[Optional[str], Dict[str, Any]]:
    """(base name, config changes) after removing declared suffixes until ``known(base)``; (None, ...) if never."""
    changes: Dict[str, Any] = {}
    while not known(name):
        for pattern, _, make in _SUFFIXES:
            match = pattern.search(name)
            if match:
                changes = {**make(match), **changes}
                name = name[: match.start()]
                break
        else:
            return None, changes
    return name, changes


def resolve_trainer(name: str) -> Tuple[Type[BaseTrainer], Dict[str, Any]]:
    """Class and config changes for ``name`` = a registered trainer or a ``package.module:ClassName`` plugin, plus
    any declared suffixes, e.g. ``SupremTrainer_5epochs``, ``SegResNetTrainer_NoDA_50epochs`` or
    ``mypkg.trainers:MyTrainer_NoMirroring``."""
    if ":" in name:
        module_name, class_part = _split_plugin(name)
        module = _import_plugin_module(name, module_name)
        base, changes = _strip_suffixes(class_part, lambda n: hasattr(module, n))
        return plugin_trainer(f"{module_name}:{base or class_part}"), changes
    classes = trainer_classes()
    base, changes = _strip_suffixes(name, classes.__contains__)
    if base is None:
        raise ValueError(f"unknown trainer '{name}'; known: {', '.join(classes)} "
                         f"(optionally with suffixes _<N>epochs, _NoDA, _NoMirroring), or "
                         f"package.module:ClassName for your own BaseTrainer subclass")
    return classes[base], changes


def trainer_folder_name(name: str) -> str:
    """The trainer part of a results folder: the name without a plugin's ``package.module:`` part."""
    return name.rpartition(":")[2]


def trainer_for_backbone(backbone: Optional[str]) -> str:
    """The trainer to use for a checkpoint of ``backbone`` when -tr is not given (its registry entry's
    ``default_trainer``; SupremTrainer for unknown backbones and those without one)."""
    try:
        entry = get_backbone(backbone)
    except ValueError:
        return DEFAULT_TRAINER
    return entry.default_trainer or DEFAULT_TRAINER


def describe_trainers() -> str:
    """Help text listing the trainers, the suffixes and the plugin form."""
    lines = [f"  {name}: {cls.description}" for name, cls in trainer_classes().items()]
    lines.append("  name suffixes (combinable, e.g. SupremTrainer_5epochs): " + "; ".join(d for _, d, _ in _SUFFIXES))
    lines.append("  package.module:ClassName: your own BaseTrainer subclass, imported like python -m does (current "
                 "directory, PYTHONPATH, installed packages); suffixes apply too")
    return "\n".join(lines)

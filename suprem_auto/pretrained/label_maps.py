"""Class names of the SuPreM / Universal Model output channels, chosen by class count (data in label_maps.json)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from suprem_auto.utils.atomic import load_json

DEFAULT_LABEL_MAPS = Path(__file__).with_name("label_maps.json")


def load_label_maps(path: Union[str, os.PathLike, None] = None) -> dict[str, dict]:
    """``{name: {"num_classes": C, "names": [...]}}`` from the JSON file (default: the packaged one)."""
    return load_json(path or DEFAULT_LABEL_MAPS)["label_maps"]


def label_map_name_for(num_classes: int | None, path: Union[str, os.PathLike, None] = None) -> str | None:
    """Name of the label map with ``num_classes`` channels (32 -> universal_32, 25 -> abdomenatlas_1.1), or None."""
    if num_classes is None:
        return None
    return next((name for name, m in load_label_maps(path).items() if m["num_classes"] == num_classes), None)


def label_names_for(num_classes: int, path: Union[str, os.PathLike, None] = None) -> list[str]:
    """Channel names for a head with ``num_classes`` outputs; ValueError if no map has that count."""
    name = label_map_name_for(num_classes, path)
    if name is None:
        raise ValueError(f"no SuPreM label map with {num_classes} classes (known: 32, 25, 9)")
    return list(load_label_maps(path)[name]["names"])

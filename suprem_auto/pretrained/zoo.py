"""The model zoo (data in zoo.json): find a checkpoint by name or path, compare its preprocessing with a plan."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from suprem_auto.pretrained.checkpoint_io import CheckpointError
from suprem_auto.utils.atomic import load_json

PathLike = Union[str, os.PathLike]
DEFAULT_ZOO = Path(__file__).with_name("zoo.json")
WEIGHTS_ENV = "SUPREM_WEIGHTS"


class PretrainedNotFound(FileNotFoundError):
    """A zoo checkpoint (or path) that is not on disk; the message says which file to get and where to put it."""


class ChecksumMismatch(CheckpointError):
    """A zoo file whose SHA-256 differs from the sum in zoo.json (a damaged download or another file)."""


@dataclass(frozen=True)
class ZooEntry:
    """One public checkpoint."""

    name: str
    file_name: str
    backbone: str | None
    parameters: str
    pretraining_data: str
    layout: str | None
    plans_preset: str | None
    preprocessing: dict | None
    description: str
    download_page: str
    download_url: str
    loadable: bool
    notes: str = ""
    sha256: str | None = None  # hex digest of the published file; checked when the file is loaded by zoo name


def load_zoo(path: PathLike | None = None) -> dict[str, ZooEntry]:
    """All zoo entries by name (default: the packaged zoo.json)."""
    return {e["name"]: ZooEntry(**e) for e in load_json(path or DEFAULT_ZOO)["entries"]}


def find_entry(name_or_file: str, zoo: Mapping[str, ZooEntry] | None = None) -> ZooEntry | None:
    """Entry whose name or file name equals ``name_or_file`` (None if there is none)."""
    zoo = zoo if zoo is not None else load_zoo()
    if name_or_file in zoo:
        return zoo[name_or_file]
    return next((e for e in zoo.values() if e.file_name == name_or_file), None)


def file_sha256(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: PathLike, entry: ZooEntry) -> None:
    """Raise ``ChecksumMismatch`` naming the file when the entry has a ``sha256`` and the file's differs."""
    if not entry.sha256:
        return
    actual = file_sha256(path)
    if actual.lower() != entry.sha256.strip().lower():
        raise ChecksumMismatch(f"{path}: SHA-256 {actual} differs from {entry.sha256} listed for '{entry.name}' in "
                               f"zoo.json (damaged or different download?); get the file again from "
                               f"{entry.download_page}")


def resolve_pretrained(name_or_path: PathLike, weights_dir: PathLike | None = None,
                       env: Mapping[str, str] | None = None,
                       zoo: Mapping[str, ZooEntry] | None = None) -> tuple[Path, ZooEntry | None]:
    """Return (checkpoint path, zoo entry or None).

    An existing file path is used directly (its zoo entry is found by file name). A zoo name is looked up in
    ``weights_dir`` or ``$SUPREM_WEIGHTS``; if the file is not there, ``PretrainedNotFound`` names the file to get;
    if the entry lists a ``sha256`` and the file's differs, ``ChecksumMismatch`` names the file.
    """
    env = os.environ if env is None else env
    zoo = load_zoo() if zoo is None else zoo
    path = Path(name_or_path)
    if path.is_file():
        return path, find_entry(path.name, zoo)
    entry = find_entry(str(name_or_path), zoo)
    if entry is None:
        raise PretrainedNotFound(f"pretrained '{name_or_path}': no such file and not a zoo name "
                                 f"(known: {', '.join(zoo)}; see suprem_list_pretrained)")
    if not entry.loadable:
        raise PretrainedNotFound(f"pretrained '{entry.name}' ({entry.file_name}) has an architecture suprem_auto "
                                 "cannot load")
    folder = weights_dir or env.get(WEIGHTS_ENV)
    if folder and (Path(folder) / entry.file_name).is_file():
        verify_checksum(Path(folder) / entry.file_name, entry)
        return Path(folder) / entry.file_name, entry
    where = f"into {folder}" if folder else f"into a folder given by --weights-dir or ${WEIGHTS_ENV}"
    raise PretrainedNotFound(f"pretrained '{entry.name}': file {entry.file_name} not found; download it from "
                             f"{entry.download_page} ({entry.download_url}) and put it {where}")


def _plan_config(plans: Mapping[str, Any], configuration: str | None) -> Mapping[str, Any]:
    configs = plans.get("configurations", {})
    if configuration is None:
        configuration = "3d_fullres" if "3d_fullres" in configs else next(iter(configs), None)
    if configuration not in configs:
        raise ValueError(f"plans have no configuration {configuration!r}")
    return configs[configuration]


def preprocessing_differences(entry: ZooEntry, plans: Mapping[str, Any], configuration: str | None = None,
                              spacing_tolerance: float = 0.1) -> list[str]:
    """One line per way the plan's preprocessing differs from the checkpoint's pre-training (empty = matches).

    Checks intensity window, spacing (relative tolerance per axis), orientation, modality and channel count.
    """
    pre = entry.preprocessing
    if not pre:
        return []
    cfg = _plan_config(plans, configuration)
    diffs: list[str] = []
    norms = cfg.get("normalization", [])
    first = norms[0] if norms else {"scheme": "none", "params": {}}
    scheme, params = first.get("scheme"), first.get("params", {}) or {}
    window = pre.get("window_hu")
    if window:
        if scheme != "window":
            diffs.append(f"window: plan normalises with '{scheme}', {entry.name} was pre-trained on HU "
                         f"[{window[0]}, {window[1]}] scaled to {pre.get('scaled_to', [0, 1])}")
        elif [params.get("lower"), params.get("upper")] != list(window) or \
                [params.get("out_min", 0), params.get("out_max", 1)] != list(pre.get("scaled_to", [0, 1])):
            diffs.append(f"window: plan uses HU [{params.get('lower')}, {params.get('upper')}] -> "
                         f"[{params.get('out_min', 0)}, {params.get('out_max', 1)}], {entry.name} was pre-trained on "
                         f"[{window[0]}, {window[1]}] -> {pre.get('scaled_to', [0, 1])}")
    target = pre.get("spacing_mm")
    spacing = cfg.get("spacing")
    if target and spacing and any(abs(s - t) > spacing_tolerance * t for s, t in zip(spacing, target)):
        diffs.append(f"spacing: plan {list(spacing)} mm (z,y,x), {entry.name} was pre-trained at {target} mm")
    if pre.get("orientation") == "RAS" and not plans.get("reorient_to_ras", False):
        diffs.append(f"orientation: plan keeps the native orientation, {entry.name} was pre-trained on RAS volumes")
    if "CT" in (pre.get("modality") or "") and scheme not in ("ct", "window"):
        diffs.append(f"modality: plan normalisation '{scheme}' suggests non-CT input, {entry.name} was pre-trained on "
                     f"{pre.get('modality')}")
    if len(norms) > 1:
        diffs.append(f"channels: plan has {len(norms)} input channels, {entry.name} has 1 (first layer tiled / "
                     f"{len(norms)})")
    return diffs

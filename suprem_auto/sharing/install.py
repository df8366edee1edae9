"""Check a model zip completely before anything is written, then install it into a results root or unpack it to a
temporary folder for one prediction run.

Refused, with one line naming the zip and the member: a zip that is not readable, a card of a newer format version,
a member that is missing, extra, outside the model folder, a link, or whose SHA-256 differs from the card, and a
checkpoint that needs pickled code (``torch.load(..., weights_only=True)`` only) or lacks network weights.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Union

from suprem_auto.sharing.package import (CARD_FILES, CARD_JSON, FORMAT_VERSION, REQUIRED_MODEL_FILES,
                                         ModelPackageError, safe_member_name)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class VerifiedPackage:
    """A zip whose every member was checked: the card, and the ``<dataset>/<model>`` folder it holds."""

    zip_path: Path
    card: Dict[str, Any]
    dataset: str
    model: str

    @property
    def prefix(self) -> str:
        return f"{self.dataset}/{self.model}/"


def _read_card(zf: zipfile.ZipFile, where: str) -> Dict[str, Any]:
    if CARD_JSON not in zf.namelist():
        raise ModelPackageError(f"{where}: no {CARD_JSON}; not a suprem_auto model zip")
    try:
        card = json.loads(zf.read(CARD_JSON))
    except ValueError as exc:
        raise ModelPackageError(f"{where}:{CARD_JSON}: not valid JSON ({exc})") from None
    version = card.get("format_version") if isinstance(card, dict) else None
    if not isinstance(version, int):
        raise ModelPackageError(f"{where}:{CARD_JSON}: no integer format_version")
    if version > FORMAT_VERSION:
        raise ModelPackageError(f"{where}:{CARD_JSON}: format_version {version} is newer than this suprem_auto "
                                f"reads ({FORMAT_VERSION}); upgrade suprem_auto to install it")
    if not isinstance(card.get("files"), dict) or not card["files"]:
        raise ModelPackageError(f"{where}:{CARD_JSON}: no 'files' checksum list")
    return card


def _model_prefix(card: Dict[str, Any], where: str) -> tuple[str, str]:
    folders = {tuple(name.split("/")[:2]) for name in card["files"]}
    if len(folders) != 1 or any(len(f) != 2 for f in folders):
        raise ModelPackageError(f"{where}:{CARD_JSON}: files must all lie in one <dataset>/<model> folder")
    dataset, model = next(iter(folders))
    for name in REQUIRED_MODEL_FILES:
        if f"{dataset}/{model}/{name}" not in card["files"]:
            raise ModelPackageError(f"{where}: {dataset}/{model}/{name} is missing")
    return dataset, model


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: str, where: str) -> None:
    if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
        raise ModelPackageError(f"{where}:{info.filename}: not a plain file; refused")
    digest = hashlib.sha256()
    try:
        with zf.open(info) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelPackageError(f"{where}:{info.filename}: damaged ({exc})") from None
    if digest.hexdigest() != str(expected).lower():
        raise ModelPackageError(f"{where}:{info.filename}: SHA-256 differs from the model card (tampered or "
                                "damaged); refused")


def _check_checkpoint(zf: zipfile.ZipFile, name: str, where: str) -> None:
    from suprem_auto.utils.checkpoint_format import CheckpointError, safe_torch_load

    try:
        checkpoint = safe_torch_load(zf.read(name), name=f"{where}:{name}")
    except CheckpointError as exc:
        raise ModelPackageError(str(exc)) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise ModelPackageError(f"{where}:{name}: checkpoint lacks 'network_weights'")


def verify_package(zip_path: PathLike) -> VerifiedPackage:
    """Check every member of a model zip (see the module docstring) without writing anything."""
    zip_path = Path(zip_path)
    where = str(zip_path)
    if not zip_path.is_file():
        raise ModelPackageError(f"{where}: model zip does not exist")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelPackageError(f"{where}: not a readable zip ({exc})") from None
    with zf:
        card = _read_card(zf, where)
        dataset, model = _model_prefix(card, where)
        infos = {info.filename: info for info in zf.infolist()}
        for name in list(card["files"]) + list(infos):
            if not safe_member_name(name):
                raise ModelPackageError(f"{where}:{name}: unsafe path (absolute or '..'); refused")
        extra = sorted(set(infos) - set(card["files"]) - set(CARD_FILES))
        if extra:
            raise ModelPackageError(f"{where}:{extra[0]}: not listed in the model card; refused")
        missing = sorted(set(card["files"]) - set(infos))
        if missing:
            raise ModelPackageError(f"{where}:{missing[0]}: listed in the model card but missing from the zip")
        for name, expected in card["files"].items():
            _check_member(zf, infos[name], expected, where)
        for name in card["files"]:
            if name.endswith((".pth", ".pt")):
                _check_checkpoint(zf, name, where)
    return VerifiedPackage(zip_path, card, dataset, model)


def _extract(package: VerifiedPackage, destination: Path) -> Path:
    """Write the model folder's files (and the card) under ``destination``; return the model folder."""
    folder = destination / package.dataset / package.model
    with zipfile.ZipFile(package.zip_path) as zf:
        for name in package.card["files"]:
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        for name in CARD_FILES:
            if name in zf.namelist():
                (folder / name).write_bytes(zf.read(name))
    return folder


def install_model(zip_path: PathLike, results_root: PathLike, overwrite: bool = False) -> Path:
    """Verify ``zip_path`` completely, then install it as ``<results>/<dataset>/<model>`` (an existing one is
    refused unless ``overwrite``). Nothing is written when a check fails. Returns the installed model folder."""
    package = verify_package(zip_path)
    results = Path(results_root)
    target = results / package.dataset / package.model
    if target.exists() and not overwrite:
        raise ModelPackageError(f"{target}: already installed; remove it or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package.model}.", suffix=".tmp-install", dir=target.parent))
    try:
        unpacked = _extract(package, staging)
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_model_zip(path: PathLike) -> bool:
    """True for an existing file that is a zip (a model package to verify and unpack)."""
    path = Path(path)
    return path.is_file() and zipfile.is_zipfile(path)


@contextmanager
def opened_model(zip_or_folder: PathLike) -> Iterator[Path]:
    """Yield a model folder: a folder as it is, or a verified zip unpacked to a temporary folder removed after."""
    path = Path(zip_or_folder)
    if not is_model_zip(path):
        if path.is_file():
            raise ModelPackageError(f"{path}: neither a model folder nor a model zip")
        yield path
        return
    package = verify_package(path)
    with tempfile.TemporaryDirectory(prefix="suprem_model_") as tmp:
        yield _extract(package, Path(tmp))

"""Find the cases to predict: a folder of ``{case}_{XXXX}.ext`` files, single files, or DICOM series folders.

A case that cannot be assembled (missing channel files) is returned with an ``error`` so the caller can report it
and go on with the others.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import SimpleITK as sitk

from suprem_auto.imageio.sitk_io import SUPPORTED_ENDINGS
from suprem_auto.utils.output_rules import check_not_an_input

PathLike = Union[str, Path]
CaseInputs = Union[PathLike, Sequence[Sequence[PathLike]], Mapping[str, Sequence[PathLike]]]
_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")


@dataclass
class InputCase:
    """One case to predict: its channel files (or DICOM folders) in channel order."""

    case_id: str
    files: List[Path] = field(default_factory=list)
    error: Optional[str] = None


def image_ending(path: PathLike) -> Optional[str]:
    """The supported image ending of a file name (``.nii.gz``, ...), or None."""
    name = Path(path).name.lower()
    return next((e for e in SUPPORTED_ENDINGS if name.endswith(e)), None)


def _stem(path: Path) -> str:
    ending = image_ending(path) or ""
    return path.name[:len(path.name) - len(ending)]


def is_dicom_series_folder(folder: PathLike) -> bool:
    """True when the folder holds at least one DICOM series (non-recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def channel_names_of(dataset_json: Mapping[str, Any]) -> List[str]:
    """dataset.json's ``channel_names`` in channel order (``{"0": "T2", "1": "ADC"}`` -> ``["T2", "ADC"]``)."""
    names = dataset_json.get("channel_names") or {}
    keys = sorted(names, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, 0))
    return [str(names[k]) for k in keys]


def expected_channels(case_id: str, num_channels: int, channel_names: Optional[Sequence[str]] = None) -> str:
    """What the model takes, for error messages: ``2 channels: case_0000 (T2), case_0001 (ADC)``."""
    names = list(channel_names or [])
    files = [f"{case_id}_{c:04d}" + (f" ({names[c]})" if c < len(names) else "") for c in range(num_channels)]
    return f"{num_channels} channel{'s' if num_channels != 1 else ''}: {', '.join(files)}"


def _group_files(files: List[Path], num_channels: int, source: Path,
                 channel_names: Optional[Sequence[str]] = None) -> List[InputCase]:
    with_channel: Dict[str, Dict[int, Path]] = {}
    plain: Dict[str, Path] = {}
    for f in files:
        match = _CHANNEL_SUFFIX.match(_stem(f))
        if match:
            with_channel.setdefault(match.group(1), {})[int(match.group(2))] = f
        else:
            plain[_stem(f)] = f
    cases: List[InputCase] = []
    for case_id, channels in with_channel.items():
        wanted = list(range(num_channels))
        missing = [c for c in wanted if c not in channels]
        extra = sorted(set(channels) - set(wanted))
        if missing or extra:
            problems = ([f"missing channel file(s) {', '.join(f'{case_id}_{c:04d}' for c in missing)}"] if missing
                        else []) + ([f"unexpected channel file(s) {', '.join(channels[c].name for c in extra)}"]
                                    if extra else [])
            cases.append(InputCase(case_id, sorted(channels.values()),
                                   f"{source}: case {case_id}: {'; '.join(problems)} (the model takes "
                                   f"{expected_channels(case_id, num_channels, channel_names)})"))
        else:
            cases.append(InputCase(case_id, [channels[c] for c in wanted]))
    for case_id, f in plain.items():
        if case_id in with_channel:
            cases.append(InputCase(case_id, [f], f"{f}: case {case_id} also has _XXXX channel files; rename one"))
        elif num_channels != 1:
            cases.append(InputCase(case_id, [f], f"{f}: case {case_id} has no _XXXX channel suffix, the model takes "
                                                  f"{expected_channels(case_id, num_channels, channel_names)}"))
        else:
            cases.append(InputCase(case_id, [f]))
    return cases


def _from_folder(folder: Path, num_channels: int, channel_names: Optional[Sequence[str]] = None) -> List[InputCase]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and image_ending(p)]
    cases = _group_files(files, num_channels, folder, channel_names)
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in subfolders:
        if is_dicom_series_folder(sub):
            error = None if num_channels == 1 else f"{sub}: a DICOM series is one channel; the model takes {num_channels}"
            cases.append(InputCase(sub.name, [sub], error))
    if not cases and is_dicom_series_folder(folder):
        error = None if num_channels == 1 else f"{folder}: a DICOM series is one channel; the model takes {num_channels}"
        cases.append(InputCase(folder.name, [folder], error))
    return cases


def _from_file(path: Path, num_channels: int, channel_names: Optional[Sequence[str]] = None) -> List[InputCase]:
    match = _CHANNEL_SUFFIX.match(_stem(path))
    if match and num_channels > 1:
        ending = path.name[len(_stem(path)):]
        siblings = [path.parent / f"{match.group(1)}_{c:04d}{ending}" for c in range(num_channels)]
        return _group_files([p for p in siblings if p.exists()], num_channels, path.parent, channel_names)
    return _group_files([path], num_channels, path.parent, channel_names)


def find_input_cases(inputs: CaseInputs, num_channels: int,
                     channel_names: Optional[Sequence[str]] = None) -> List[InputCase]:
    """Cases sorted by id from a folder, a single image file, a DICOM series folder, a list of per-case file lists
    (nnU-Net's ``list_of_lists``) or a ``{case_id: files}`` mapping.

    A case whose channel files do not fit the model carries a one-line ``error`` naming the case, the files and
    what the model takes (``channel_names``: dataset.json's, in channel order)."""
    if isinstance(inputs, Mapping):
        cases = [InputCase(str(k), [Path(p) for p in v]) for k, v in inputs.items()]
    elif isinstance(inputs, (str, Path)):
        path = Path(inputs)
        if not path.exists():
            raise FileNotFoundError(f"{path}: input does not exist")
        cases = _from_folder(path, num_channels, channel_names) if path.is_dir() else \
            _from_file(path, num_channels, channel_names)
        if not cases:
            raise FileNotFoundError(f"{path}: no images found (expected {{case}}_{{XXXX}}"
                                    f"{'|'.join(SUPPORTED_ENDINGS)} files or DICOM series)")
    else:
        cases = []
        for files in inputs:
            files = [Path(p) for p in files]
            if not files:
                continue
            match = _CHANNEL_SUFFIX.match(_stem(files[0]))
            cases.append(InputCase(match.group(1) if match else _stem(files[0]), files))
    for case in cases:
        if case.error is None and len(case.files) != num_channels:
            case.error = (f"case {case.case_id}: {len(case.files)} file(s) given "
                          f"({', '.join(Path(f).name for f in case.files)}), the model takes "
                          f"{expected_channels(case.case_id, num_channels, channel_names)}")
    return sorted(cases, key=lambda c: c.case_id)


def output_paths(case_id: str, output_folder: PathLike, file_ending: str, save_probabilities: bool) -> List[Path]:
    """What predicting a case writes: ``<output>/<case><file_ending>`` and, with probabilities, ``<case>.npz``."""
    folder = Path(output_folder)
    return [folder / f"{case_id}{file_ending}"] + ([folder / f"{case_id}.npz"] if save_probabilities else [])


def check_outputs_spare_inputs(cases: Sequence[InputCase], output_folder: PathLike, file_ending: str,
                               save_probabilities: bool = False) -> None:
    """Refuse (``OutputRuleError`` naming the input) when any case's output would land on any case's input file,
    e.g. ``-i scan.nii.gz -o .`` for a file without the ``_0000`` suffix. Call it before writing anything."""
    inputs = [f for case in cases for f in case.files if Path(f).is_file()]
    outputs = [p for case in cases for p in output_paths(case.case_id, output_folder, file_ending, save_probabilities)]
    check_not_an_input(outputs, inputs, "a prediction")

"""Read one DICOM series from a folder, with the checks every entry point shares (prediction and conversion).

SimpleITK's ``ImageSeriesReader`` (GDCM) sorts the slices by ImagePositionPatient along the slice normal and takes
the slice spacing from those positions. Two silent failure modes are refused here:

* a folder holding several series (GDCM would read whichever comes first): refused, listing every series, unless
  one is chosen by its SeriesInstanceUID;
* unevenly spaced slices (a missing or duplicate slice): the volume would get one spacing for all slices and a wrong
  geometry, so it is refused naming the folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, Path]
SPACING_TOLERANCE = 0.01  # relative deviation of slice gaps allowed
POSITION_TAG = "0020|0032"  # ImagePositionPatient


class DicomSeriesError(RuntimeError):
    """A DICOM folder that cannot be read as one well-formed series; the message names the folder."""


def list_series(series_dir: PathLike) -> List[str]:
    """The DICOM series instance UIDs found in a folder (non-recursive; ``''`` for files without a UID)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(series_dir)))


def describe_series(series_dir: PathLike, series_ids: Optional[Sequence[str]] = None) -> str:
    """One readable item per series: its UID (``<no SeriesInstanceUID>`` when the files carry none) and file count."""
    ids = list_series(series_dir) if series_ids is None else list(series_ids)
    items = []
    for uid in ids:
        n = len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir), uid))
        items.append(f"{uid if uid else '<no SeriesInstanceUID>'} ({n} file{'s' if n != 1 else ''})")
    return "; ".join(items)


def _slice_offsets(reader: sitk.ImageSeriesReader, n_slices: int, direction: np.ndarray) -> Optional[np.ndarray]:
    """Each slice's ImagePositionPatient projected on the slice normal (None when a position is unavailable)."""
    normal = direction.reshape(3, 3)[:, 2]
    offsets = []
    for i in range(n_slices):
        if not reader.HasMetaDataKey(i, POSITION_TAG):
            return None
        position = [float(v) for v in reader.GetMetaData(i, POSITION_TAG).strip().split("\\")]
        offsets.append(float(np.dot(position, normal)))
    return np.array(offsets)


def choose_series(series_dir: PathLike, series_id: Optional[str] = None) -> str:
    """The UID to read: the only series in the folder, or ``series_id``; several series without a choice is an
    error listing them."""
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise DicomSeriesError(f"{series_dir}: DICOM folder does not exist")
    ids = list_series(series_dir)
    if not ids:
        raise DicomSeriesError(f"{series_dir}: no DICOM series found")
    if series_id is None:
        if len(ids) > 1:
            raise DicomSeriesError(f"{series_dir}: {len(ids)} DICOM series in one folder, refusing to guess: "
                                   f"{describe_series(series_dir, ids)}; put each series in its own folder or "
                                   "choose one by UID (suprem_convert dicom --series_id)")
        return ids[0]
    if series_id not in ids:
        raise DicomSeriesError(f"{series_dir}: series '{series_id}' not found (found: "
                               f"{describe_series(series_dir, ids)})")
    return series_id


def read_dicom_series(series_dir: PathLike, series_id: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series (the only one in the folder, or ``series_id``) with evenly spaced slices checked."""
    series_dir = Path(series_dir)
    uid = choose_series(series_dir, series_id)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir), uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[-1].strip() if lines else type(exc).__name__
        raise DicomSeriesError(f"{series_dir}: cannot read DICOM series ({detail})") from None
    if len(files) > 2:
        offsets = _slice_offsets(reader, len(files), np.array(image.GetDirection()))
        if offsets is not None:
            gaps = np.abs(np.diff(offsets))
            if gaps.min() <= 0 or (gaps.max() - gaps.min()) > SPACING_TOLERANCE * gaps.mean():
                raise DicomSeriesError(f"{series_dir}: slice spacing is not uniform (gaps {gaps.min():.3f} to "
                                       f"{gaps.max():.3f} mm); missing or duplicate slices?")
    return image

"""A DICOM series folder into one NIfTI file.

SimpleITK's ``ImageSeriesReader`` (GDCM) sorts the slices by ImagePositionPatient along the slice normal and takes
the slice spacing from those positions (not from SliceThickness, which can differ). Before writing, the positions
are checked to be evenly spaced: a gap (a missing slice) would make the volume's geometry wrong, so it is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import SimpleITK as sitk

from suprem_auto.conversion.common import ConversionError, write_sitk_image

PathLike = Union[str, Path]
SPACING_TOLERANCE = 0.01  # relative deviation of slice gaps allowed


def list_series(series_dir: PathLike) -> List[str]:
    """The DICOM series instance UIDs found in a folder."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(series_dir)))


def _slice_offsets(reader: sitk.ImageSeriesReader, n_slices: int, direction: np.ndarray) -> Optional[np.ndarray]:
    """Each slice's ImagePositionPatient projected on the slice normal (None when a position is unavailable)."""
    normal = direction.reshape(3, 3)[:, 2]
    offsets = []
    for i in range(n_slices):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return None
        position = [float(v) for v in reader.GetMetaData(i, "0020|0032").strip().split("\\")]
        offsets.append(float(np.dot(position, normal)))
    return np.array(offsets)


def read_dicom_series(series_dir: PathLike, series_id: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series (the only one in the folder, or ``series_id``) with evenly spaced slices checked."""
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise ConversionError(f"{series_dir}: DICOM folder does not exist")
    ids = list_series(series_dir)
    if not ids:
        raise ConversionError(f"{series_dir}: no DICOM series found")
    if series_id is None:
        if len(ids) > 1:
            raise ConversionError(f"{series_dir}: {len(ids)} DICOM series found, choose one with --series_id: "
                                  + ", ".join(ids))
        series_id = ids[0]
    elif series_id not in ids:
        raise ConversionError(f"{series_dir}: series '{series_id}' not found (found: {', '.join(ids)})")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir), series_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1][:200]
        raise ConversionError(f"{series_dir}: cannot read DICOM series ({detail})") from None
    if len(files) > 2:
        offsets = _slice_offsets(reader, len(files), np.array(image.GetDirection()))
        if offsets is not None:
            gaps = np.abs(np.diff(offsets))
            if gaps.min() <= 0 or (gaps.max() - gaps.min()) > SPACING_TOLERANCE * gaps.mean():
                raise ConversionError(f"{series_dir}: slice spacing is not uniform (gaps {gaps.min():.3f} to "
                                      f"{gaps.max():.3f} mm); missing or duplicate slices?")
    return image


def convert_dicom_series(series_dir: PathLike, output_file: PathLike, series_id: Optional[str] = None) -> Path:
    """Convert a DICOM series folder into a NIfTI file (written atomically); returns the output path."""
    output_file = Path(output_file)
    if not (output_file.name.endswith(".nii.gz") or output_file.name.endswith(".nii")):
        raise ConversionError(f"{output_file}: output must end with .nii.gz or .nii")
    image = read_dicom_series(series_dir, series_id)
    return write_sitk_image(image, output_file)

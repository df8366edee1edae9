"""A DICOM series folder into one NIfTI file.

The series is read by ``suprem_auto.imageio.dicom`` (the same reader and checks prediction uses): several series in
one folder need ``--series_id``, and unevenly spaced slices (a missing slice) are an error naming the folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import SimpleITK as sitk

from suprem_auto.conversion.common import ConversionError, write_sitk_image
from suprem_auto.imageio import dicom as _dicom
from suprem_auto.utils.output_rules import OutputRuleError, check_not_an_input

PathLike = Union[str, Path]
SPACING_TOLERANCE = _dicom.SPACING_TOLERANCE


def list_series(series_dir: PathLike) -> List[str]:
    """The DICOM series instance UIDs found in a folder (``''`` for files that carry none)."""
    return _dicom.list_series(series_dir)


def read_dicom_series(series_dir: PathLike, series_id: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series (the only one in the folder, or ``series_id``) with evenly spaced slices checked."""
    try:
        return _dicom.read_dicom_series(series_dir, series_id)
    except _dicom.DicomSeriesError as exc:
        raise ConversionError(str(exc)) from None


def convert_dicom_series(series_dir: PathLike, output_file: PathLike, series_id: Optional[str] = None) -> Path:
    """Convert a DICOM series folder into a NIfTI file (written atomically); returns the output path."""
    output_file = Path(output_file)
    if not (output_file.name.endswith(".nii.gz") or output_file.name.endswith(".nii")):
        raise ConversionError(f"{output_file}: output must end with .nii.gz or .nii")
    image = read_dicom_series(series_dir, series_id)
    uid = _dicom.choose_series(series_dir, series_id)
    try:
        check_not_an_input([output_file], sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir), uid))
    except OutputRuleError as exc:
        raise ConversionError(str(exc)) from None
    return write_sitk_image(image, output_file)

"""Image and segmentation I/O through SimpleITK (.nii.gz, .nii, .nrrd, .mha, DICOM series folders).

Arrays use SimpleITK's index order reversed, i.e. ``(c, z, y, x)`` with spacing ``(z, y, x)`` (as nnU-Net).
The returned ``properties`` dict keeps the input's exact geometry (size, spacing, origin, direction) so a
prediction can be written back onto the input grid. Optional reorientation to RAS (what the SuPreM backbones
were trained on) is recorded in the properties and always undone by :func:`write_segmentation`.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from suprem_auto.imageio.dicom import DicomSeriesError, read_dicom_series
from suprem_auto.imageio.nifti_scan import scan_nifti
from suprem_auto.utils.atomic import atomic_path

PathLike = Union[str, Path]
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
CANONICAL_ORIENTATION = "RAS"  # in SimpleITK's DICOMOrient naming: axis 0 points to the patient's Right, ...
GEOMETRY_TOLERANCE = 1e-3


class ImageReadError(RuntimeError):
    """A file could not be read; the message names the file and the problem."""


def file_ending(path: PathLike) -> str:
    """Return the image file ending, handling double endings like ``.nii.gz``."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return Path(path).suffix


def _check_gzip_complete(path: Path) -> None:
    """SimpleITK zero-fills a truncated .gz silently; decompress the stream once to detect truncation."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decompressor.decompress(chunk, 0)
            except zlib.error as exc:
                raise ImageReadError(f"{path}: corrupt gzip stream ({exc})") from None
            while decompressor.unconsumed_tail:
                decompressor.decompress(decompressor.unconsumed_tail, 0)
    if not decompressor.eof:
        raise ImageReadError(f"{path}: truncated file (gzip stream ends early)")


def _check_uncompressed_complete(path: Path, image: sitk.Image) -> None:
    """For a raw .nii, the file must hold at least header offset + all voxel bytes."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    offset = int(float(reader.GetMetaData("vox_offset"))) if reader.HasMetaDataKey("vox_offset") else 352
    needed = offset + int(np.prod(image.GetSize())) * image.GetNumberOfComponentsPerPixel() * \
        sitk.GetArrayViewFromImage(image).dtype.itemsize
    if path.stat().st_size < needed:
        raise ImageReadError(f"{path}: truncated file ({path.stat().st_size} bytes, {needed} expected)")


def _read_sitk(path: PathLike) -> Tuple[sitk.Image, int]:
    """The image and the number of NaN/Inf voxels a NIfTI file holds (ITK reads those as 0)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file does not exist")
    try:
        if path.is_dir():
            try:  # one series only, evenly spaced slices: the checks suprem_convert dicom makes
                return read_dicom_series(path), 0
            except DicomSeriesError as exc:
                raise ImageReadError(str(exc)) from None
        nonfinite = 0
        if path.name.lower().endswith(".nii.gz"):
            problem, nonfinite = scan_nifti(path)
            if problem:
                raise ImageReadError(f"{path}: unreadable or truncated image ({problem})")
        elif path.name.lower().endswith(".gz"):
            _check_gzip_complete(path)
        image = sitk.ReadImage(str(path))
        if path.name.lower().endswith(".nii"):
            _check_uncompressed_complete(path, image)
            nonfinite = scan_nifti(path)[1]
        return image, nonfinite
    except ImageReadError:
        raise
    except Exception as exc:  # SimpleITK raises RuntimeError with a long ITK trace
        first_line = str(exc).strip().splitlines()
        detail = next((line for line in first_line if "rror" in line or "xception" in line), first_line[0] if first_line else "")
        raise ImageReadError(f"{path}: unreadable or truncated image ({detail.strip()[:200]})") from None


def orientation_code(image: sitk.Image) -> str:
    """Three-letter orientation code of an image (SimpleITK DICOMOrient naming, e.g. 'LPS', 'RAS')."""
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())


def geometry_of(image: sitk.Image) -> Dict[str, Any]:
    """The image's exact geometry as plain lists (JSON-serialisable)."""
    return {
        "size": list(image.GetSize()),
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
    }


def _to_array(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise ImageReadError("vector (multi-component) images are not supported; split channels into _XXXX files")
    return array


def read_image_file(path: PathLike, reorient_to_ras: bool = False,
                    refuse_nonfinite: bool = False) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read one 3D file (or DICOM folder) into a ``(z, y, x)`` array and its properties.

    ``refuse_nonfinite``: NaN/Inf voxels (also those ITK silently reads as 0 from NIfTI) raise ``ImageReadError``.
    """
    image, nonfinite = _read_sitk(path)
    if image.GetDimension() != 3:
        raise ImageReadError(f"{path}: expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    props: Dict[str, Any] = {"original_geometry": geometry_of(image), "original_orientation": orientation_code(image),
                             "reoriented_to": None}
    if reorient_to_ras:
        image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
        props["reoriented_to"] = CANONICAL_ORIENTATION
    try:
        array = _to_array(image)
    except ImageReadError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    if refuse_nonfinite:
        if np.issubdtype(array.dtype, np.floating):
            nonfinite = max(nonfinite, int(np.count_nonzero(~np.isfinite(array))))
        if nonfinite:
            raise ImageReadError(f"{path}: {nonfinite} NaN/Inf voxel(s) of {array.size}; images must hold finite "
                                 "values (fix or replace them before planning or predicting)")
    props["spacing"] = [float(s) for s in image.GetSpacing()[::-1]]
    props["geometry"] = geometry_of(image)
    return array, props


def _same_geometry(a: Dict[str, Any], b: Dict[str, Any], tol: float = GEOMETRY_TOLERANCE) -> Optional[str]:
    if list(a["size"]) != list(b["size"]):
        return f"size {tuple(a['size'])} != {tuple(b['size'])}"
    for key in ("spacing", "origin", "direction"):
        if not np.allclose(a[key], b[key], atol=tol, rtol=tol):
            return f"{key} {tuple(np.round(a[key], 4))} != {tuple(np.round(b[key], 4))}"
    return None


def geometry_mismatch(a: Dict[str, Any], b: Dict[str, Any], tol: float = GEOMETRY_TOLERANCE) -> Optional[str]:
    """Describe how two geometries differ (None when they agree within ``tol``)."""
    return _same_geometry(a, b, tol)


def read_images(paths: Sequence[PathLike], reorient_to_ras: bool = False) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read the channels of one case into a float32 ``(c, z, y, x)`` array.

    All channels must share the first channel's geometry (within tolerance); NaN/Inf voxels are refused (the
    integrity check refuses them at planning, this refuses them wherever images are read, prediction included).
    """
    arrays: List[np.ndarray] = []
    props: Dict[str, Any] = {}
    for i, path in enumerate(paths):
        array, p = read_image_file(path, reorient_to_ras, refuse_nonfinite=True)
        if i == 0:
            props = p
        else:
            diff = geometry_mismatch(props["original_geometry"], p["original_geometry"])
            if diff:
                raise ImageReadError(f"{path}: geometry of channel {i} differs from channel 0 ({paths[0]}): {diff} "
                                     "(all channels of a case must share one grid)")
        arrays.append(array.astype(np.float32, copy=False))
    props["files"] = [str(p) for p in paths]
    return np.stack(arrays), props


def read_segmentation(path: PathLike, reorient_to_ras: bool = False) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Read a label map into an integer ``(1, z, y, x)`` array. Non-integer values are an error."""
    array, props = read_image_file(path, reorient_to_ras)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ImageReadError(f"{path}: label map has non-integer values")
        array = rounded
    return array.astype(smallest_label_dtype(int(array.max()) if array.size else 0, int(array.min()) if array.size else 0))[None], props


def smallest_label_dtype(max_value: int, min_value: int = 0) -> np.dtype:
    """The smallest integer dtype holding the label range (uint8, uint16, int8, int16, int32)."""
    if min_value >= 0:
        for dtype in (np.uint8, np.uint16, np.uint32):
            if max_value <= np.iinfo(dtype).max:
                return np.dtype(dtype)
    for dtype in (np.int8, np.int16, np.int32):
        if np.iinfo(dtype).min <= min_value and max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def array_to_original_image(array: np.ndarray, props: Dict[str, Any]) -> sitk.Image:
    """Turn a ``(z, y, x)`` array in the (possibly reoriented) read space into an image on the input's grid."""
    image = sitk.GetImageFromArray(array)
    geo = props["geometry"]
    image.SetSpacing(geo["spacing"])
    image.SetOrigin(geo["origin"])
    image.SetDirection(geo["direction"])
    if props.get("reoriented_to"):
        image = sitk.DICOMOrient(image, props["original_orientation"])
    original = props["original_geometry"]
    if list(image.GetSize()) != list(original["size"]):
        raise ValueError(f"array of size {image.GetSize()} does not fit the input grid {tuple(original['size'])}")
    # Copy the exact input geometry (reorientation round trips can leave float noise in origin/direction).
    image.SetSpacing(original["spacing"])
    image.SetOrigin(original["origin"])
    image.SetDirection(original["direction"])
    return image


def write_segmentation(segmentation: np.ndarray, path: PathLike, props: Dict[str, Any]) -> Path:
    """Write a ``(z, y, x)`` label array in the input's exact geometry, as the smallest integer type, atomically."""
    segmentation = np.asarray(segmentation)
    dtype = smallest_label_dtype(int(segmentation.max()) if segmentation.size else 0,
                                 int(segmentation.min()) if segmentation.size else 0)
    image = array_to_original_image(segmentation.astype(dtype, copy=False), props)
    with atomic_path(path, suffix=file_ending(path)) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return Path(path)


def write_image(array: np.ndarray, path: PathLike, props: Dict[str, Any]) -> Path:
    """Write a ``(z, y, x)`` image array (any dtype) in the input's geometry, atomically."""
    image = array_to_original_image(np.asarray(array), props)
    with atomic_path(path, suffix=file_ending(path)) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return Path(path)

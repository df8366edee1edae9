"""Image I/O keeps the input's geometry exactly, with and without reorientation to RAS."""
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import HIPPO_CASES, TOTALSEG, hippo_image, requires_totalseg
from suprem_auto.imageio import ImageReadError, read_images, read_segmentation, write_segmentation


def _rotated_copy(src: Path, dst: Path) -> None:
    """Write a copy whose direction is a permuted/flipped (non-identity) matrix."""
    img = sitk.ReadImage(str(src))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    img.SetOrigin((12.5, -7.0, 3.25))
    sitk.WriteImage(img, str(dst))


@requires_totalseg
@pytest.mark.parametrize("reorient", [False, True])
def test_roundtrip_keeps_exact_geometry(tmp_path: Path, reorient: bool) -> None:
    src = tmp_path / "ct.nii.gz"
    _rotated_copy(TOTALSEG / "example_seg.nii.gz", src)
    seg, props = read_segmentation(src, reorient_to_ras=reorient)
    out = tmp_path / "out.nii.gz"
    write_segmentation(seg[0], out, props)
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert b.GetPixelID() == sitk.sitkUInt8


def test_reorientation_to_ras_changes_array_order(tmp_path: Path) -> None:
    src = tmp_path / "img.nii.gz"
    _rotated_copy(hippo_image(HIPPO_CASES[0]), src)
    plain, _ = read_images([src])
    ras, props = read_images([src], reorient_to_ras=True)
    assert props["reoriented_to"] == "RAS"
    assert props["geometry"]["direction"] == pytest.approx([-1, 0, 0, 0, -1, 0, 0, 0, 1])
    # the same voxels, reordered: sums agree, layout differs
    assert plain.sum() == pytest.approx(ras.sum())
    assert plain.shape[1:] != ras.shape[1:] or not np.array_equal(plain, ras)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_file_gives_one_line_error(tmp_path: Path, ending: str) -> None:
    full = tmp_path / f"full{ending}"
    sitk.WriteImage(sitk.ReadImage(str(hippo_image(HIPPO_CASES[0]))), str(full))
    data = full.read_bytes()
    bad = tmp_path / f"bad{ending}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as err:
        read_images([bad])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)

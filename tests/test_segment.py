"""``suprem_segment`` on the real example CT with a 25-class SuPreM U-Net release of the real layout (random values):
the segmentation means nothing, so the tests check the mechanics a user relies on: geometry, one file per requested
structure, statistics that match the written masks, and a preview that shows the labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

import pretrained_fixtures as fx
from conftest import TOTALSEG, requires_totalseg

from suprem_auto.cli.segment import main as segment_main
from suprem_auto.imageio import read_images, read_segmentation
from suprem_auto.segment.preview import label_colour

ROI = ["aorta", "liver", "colon"]


@pytest.fixture(autouse=True)
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """``supervised_suprem_unet_2100.pth`` with the release layout and a 25-class head (seeded random values; the
    controller bias is zeroed so that some structures come out partial rather than all or nothing)."""
    folder = tmp_path_factory.mktemp("weights")
    obj, _ = fx.suprem_unet_release(torch.Generator().manual_seed(0), num_classes=25)
    obj["net"]["module.controller.bias"].zero_()
    torch.save(obj, folder / "supervised_suprem_unet_2100.pth")
    return folder


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A 40 x 40 x 30 crop (3 mm) of the real TotalSegmentator example CT, so that a CPU test stays fast."""
    if not TOTALSEG.is_dir():
        pytest.skip(f"needs {TOTALSEG}")
    image = sitk.ReadImage(str(TOTALSEG / "example_ct.nii.gz"))
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    sitk.WriteImage(image[36:76, 30:70, 40:70], str(path))
    return path


def _geometry(path: Path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@requires_totalseg
def test_per_structure_files_statistics_and_preview(ct, weights_dir, tmp_path):
    out = tmp_path / "out"
    assert segment_main(["-i", str(ct), "-o", str(out), "--weights_dir", str(weights_dir), "--fast",
                         "--patch_size", "32", "32", "32", "--roi_subset", *ROI, "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(f"{n}.nii.gz" for n in ROI)
    values = json.loads((out / "labels.json").read_text())
    assert values == {"background": 0, "aorta": 1, "liver": 5, "colon": 14}  # AbdomenAtlas 1.1 order, 1-based
    stats = json.loads((out / "statistics.json").read_text())
    assert set(stats) == set(ROI)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ct))).astype(np.float64)
    voxel_ml = float(np.prod(sitk.ReadImage(str(ct)).GetSpacing())) / 1000
    for name in ROI:
        assert _geometry(out / f"{name}.nii.gz") == _geometry(ct)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.nii.gz"))) > 0
        assert stats[name]["voxels"] == int(mask.sum())
        assert stats[name]["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=1e-3)
        if mask.any():
            assert stats[name]["mean_intensity"] == pytest.approx(hu[mask].mean(), abs=0.01)
        else:
            assert stats[name]["mean_intensity"] is None
    assert any(s["voxels"] for s in stats.values())

    # the preview: three orthogonal panels at the finest spacing, labels drawn in their colours
    image, props = read_images([ct], reorient_to_ras=True)
    shape, spacing = image.shape[1:], props["spacing"]
    size = [int(round(n * s / min(spacing))) for n, s in zip(shape, spacing)]
    preview = np.asarray(Image.open(out / "preview.png").convert("RGB"))
    assert preview.shape == (max(size[0], size[1]), 2 * size[2] + size[1], 3)
    labels = np.zeros(shape, dtype=np.int16)
    for name in sorted(ROI, key=values.get):  # the higher value wins where structures overlap
        labels[read_segmentation(out / f"{name}.nii.gz", reorient_to_ras=True)[0][0] > 0] = values[name]
    cut = [int(np.argmax(np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != ax)))) for ax in range(3)]
    shown = set(np.unique(labels[cut[0]])) | set(np.unique(labels[:, cut[1]])) | set(np.unique(labels[:, :, cut[2]]))
    colours = {tuple(c) for c in preview.reshape(-1, 3)}
    assert {v for v in shown if v} and all(label_colour(v) in colours for v in shown if v)
    if 0 in shown:  # unlabelled voxels show the grey CT
        assert any(r == g == b and r > 0 for r, g, b in colours)


@requires_totalseg
def test_multilabel_file_and_clear_errors(ct, weights_dir, tmp_path, capsys):
    out = tmp_path / "ml"
    assert segment_main(["-i", str(ct), "-o", str(out), "--weights_dir", str(weights_dir), "--fast", "--ml",
                         "--patch_size", "32", "32", "32", "--roi_subset", "aorta", "--no_preview", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "segmentation.nii.gz", "statistics.json"]
    assert _geometry(out / "segmentation.nii.gz") == _geometry(ct)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nii.gz")))
    assert set(np.unique(seg)) <= {0, 1}
    assert json.loads((out / "statistics.json").read_text())["aorta"]["voxels"] == int((seg == 1).sum())

    missing = tmp_path / "none"
    assert segment_main(["-i", str(ct), "-o", str(missing), "--weights_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "supervised_suprem_unet_2100.pth" in err and "https://github.com/MrGiovanni/SuPreM" in err
    assert segment_main(["-i", str(ct), "-o", str(missing), "--weights_dir", str(weights_dir),
                         "--roi_subset", "liver", "heart"]) == 2
    err = capsys.readouterr().err
    assert "heart" in err and "spleen" in err and not missing.exists()

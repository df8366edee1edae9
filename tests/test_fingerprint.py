"""Fingerprint: spacings, cropped shapes, intensity statistics and orientation against direct computations."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from planning_fixtures import make_ct_dataset, make_hippocampus
from suprem_auto.dataset import load_raw_dataset_folder
from suprem_auto.fingerprint import extract_fingerprint, load_or_extract_fingerprint
from suprem_auto.imageio import read_images


def _direct_foreground_stats(ds):
    values = []
    for case in ds.cases.values():
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0]))).astype(np.float64)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        values.append(image[label > 0])
    v = np.concatenate(values)
    return {"mean": v.mean(), "std": v.std(), "median": np.median(v), "min": v.min(), "max": v.max(),
            "percentile_00_5": np.percentile(v, 0.5), "percentile_99_5": np.percentile(v, 99.5)}


def _nonzero_bbox_shape(path):
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    idx = np.nonzero(image)
    return [int(i.max() - i.min() + 1) for i in idx], list(image.shape)


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    ds = load_raw_dataset_folder(make_hippocampus(tmp_path_factory.mktemp("raw"), 10))
    return ds, extract_fingerprint(ds, num_processes=1, progress=False)


def test_hippocampus_fingerprint_matches_simpleitk_and_numpy(hippo):
    ds, fp = hippo
    assert fp["case_ids"] == sorted(ds.cases)
    for case_id, spacing, shape in zip(fp["case_ids"], fp["spacings"], fp["shapes_after_crop"]):
        image = sitk.ReadImage(str(ds.cases[case_id].images[0]))
        assert spacing == pytest.approx(list(image.GetSpacing())[::-1])
        expected_shape, full_shape = _nonzero_bbox_shape(ds.cases[case_id].images[0])
        assert shape == expected_shape
        assert fp["per_case"][case_id]["relative_size_after_cropping"] == pytest.approx(
            np.prod(expected_shape) / np.prod(full_shape))
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    for key, value in _direct_foreground_stats(ds).items():
        assert stats[key] == pytest.approx(value, rel=1e-6), key
    assert fp["median_relative_size_after_cropping"] == pytest.approx(
        np.median([fp["per_case"][c]["relative_size_after_cropping"] for c in fp["case_ids"]]))


def test_ct_fingerprint_statistics_orientation_and_ras_axes(tmp_path):
    ds = load_raw_dataset_folder(make_ct_dataset(tmp_path))
    fp = extract_fingerprint(ds, num_processes=1, progress=False)
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    for key, value in _direct_foreground_stats(ds).items():
        assert stats[key] == pytest.approx(value, rel=1e-6), key
    image_path = ds.cases["ct_000"].images[0]
    image = sitk.ReadImage(str(image_path))
    assert fp["orientations"] == [sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())]
    reoriented, props = read_images([image_path], reorient_to_ras=True)
    perm = fp["ras_permutations"][0]
    assert [image.GetSize()[::-1][a] for a in perm] == list(reoriented.shape[1:])
    assert [fp["spacings"][0][a] for a in perm] == pytest.approx(props["spacing"])


def test_parallel_extraction_equals_serial_and_file_is_reused(hippo, tmp_path):
    ds, serial = hippo
    subset = type(ds)(ds.folder, ds.dataset_json, ds.labels, dict(list(ds.cases.items())[:4]))
    parallel = extract_fingerprint(subset, num_processes=2, progress=False)
    assert parallel["spacings"] == serial["spacings"][:4]
    assert parallel["shapes_after_crop"] == serial["shapes_after_crop"][:4]
    written = load_or_extract_fingerprint(subset, tmp_path, num_processes=1)
    assert (tmp_path / "dataset_fingerprint.json").is_file()
    (tmp_path / "dataset_fingerprint.json").write_text('{"spacings": [], "marker": 1}')
    assert load_or_extract_fingerprint(subset, tmp_path)["marker"] == 1  # reused, not recomputed
    assert load_or_extract_fingerprint(subset, tmp_path, clean=True)["spacings"] == written["spacings"]

"""Dataset fingerprint: spacings, cropped shapes, foreground intensities, orientations (nnU-Net style, extended).

Foreground intensities are the voxels with label > 0. Each case contributes at most ``1e8 / n_cases`` values
(drawn with replacement, seed 1234, when it has more; all of them otherwise), and the dataset statistics are computed
over the pooled values, so small datasets get exact statistics.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from suprem_auto.fingerprint.orientation import ras_axis_permutation
from suprem_auto.imageio.cropping import bbox_of_mask, nonzero_mask
from suprem_auto.utils.atomic import atomic_write_json, load_json

FINGERPRINT_FORMAT_VERSION = 1
TOTAL_INTENSITY_SAMPLES = int(1e8)
SAMPLING_SEED = 1234


def intensity_statistics(values: np.ndarray) -> Dict[str, float]:
    """mean, median, std, min, max, percentile_00_5 and percentile_99_5 of a 1D array (NaN when empty)."""
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5")}
    values = values.astype(np.float64, copy=False)
    p005, p50, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return {"mean": float(values.mean()), "median": float(p50), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_99_5": float(p995), "percentile_00_5": float(p005)}


def fingerprint_case(image_paths: List[str], label_path: str, max_samples: int) -> Dict[str, Any]:
    """Fingerprint of one case, including up to ``max_samples`` foreground intensities per channel."""
    from suprem_auto.imageio import read_images, read_segmentation

    images, props = read_images(image_paths)
    seg, _ = read_segmentation(label_path)
    mask = nonzero_mask(images)
    bbox = bbox_of_mask(mask)
    shape_after = [hi - lo for lo, hi in bbox]
    foreground = seg[0] > 0
    rng = np.random.RandomState(SAMPLING_SEED)
    samples, per_channel = [], {}
    for c in range(images.shape[0]):
        values = images[c][foreground]
        per_channel[str(c)] = intensity_statistics(values)
        if values.size > max_samples:
            values = values[rng.randint(0, values.size, max_samples)]
        samples.append(values.astype(np.float32))
    return {"spacing": props["spacing"], "shape_before_crop": list(images.shape[1:]), "shape_after_crop": shape_after,
            "relative_size_after_cropping": float(np.prod(shape_after) / np.prod(images.shape[1:])),
            "orientation": props["original_orientation"],
            "ras_permutation": ras_axis_permutation(props["original_geometry"]["direction"]),
            "num_foreground_voxels": int(foreground.sum()),
            "foreground_intensity_properties_per_channel": per_channel, "samples": samples}


def _run_case(job: Tuple[str, List[str], str, int]) -> Tuple[str, Dict[str, Any]]:
    case_id, images, label, max_samples = job
    return case_id, fingerprint_case(images, label, max_samples)


def extract_fingerprint(ds: Any, num_processes: int = 2, progress: bool = True) -> Dict[str, Any]:
    """Fingerprint of a raw dataset's training cases (parallel over cases)."""
    cases = {cid: c for cid, c in ds.cases.items() if c.label is not None}
    if not cases:
        raise ValueError(f"{ds.folder}: no training cases with labels to fingerprint")
    max_samples = max(1, TOTAL_INTENSITY_SAMPLES // len(cases))
    jobs = [(cid, [str(p) for p in c.images], str(c.label), max_samples) for cid, c in cases.items()]
    results: Dict[str, Dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc="fingerprint", unit="case", disable=not progress)
    if num_processes <= 1 or len(jobs) == 1:
        for job in jobs:
            cid, res = _run_case(job)
            results[cid] = res
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            for cid, res in pool.map(_run_case, jobs, chunksize=max(1, len(jobs) // (8 * num_processes))):
                results[cid] = res
                bar.update()
    bar.close()
    return _summarize(ds, results)


def _summarize(ds: Any, results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    case_ids = sorted(results)
    num_channels = len(results[case_ids[0]]["samples"])
    dataset_stats = {}
    for c in range(num_channels):
        pooled = np.concatenate([results[cid]["samples"][c] for cid in case_ids])
        dataset_stats[str(c)] = intensity_statistics(pooled)
    per_case = {cid: {k: v for k, v in results[cid].items() if k != "samples"} for cid in case_ids}
    return {
        "format_version": FINGERPRINT_FORMAT_VERSION,
        "dataset_name": ds.name,
        "channel_names": ds.channel_names,
        "case_ids": case_ids,
        "spacings": [per_case[c]["spacing"] for c in case_ids],
        "shapes_after_crop": [per_case[c]["shape_after_crop"] for c in case_ids],
        "orientations": [per_case[c]["orientation"] for c in case_ids],
        "ras_permutations": [per_case[c]["ras_permutation"] for c in case_ids],
        "foreground_intensity_properties_per_channel": dataset_stats,
        "median_relative_size_after_cropping": float(np.median([per_case[c]["relative_size_after_cropping"]
                                                                for c in case_ids])),
        "per_case": per_case,
    }


def fingerprint_path(preprocessed_dataset_folder: Path) -> Path:
    """Where a dataset's fingerprint lives."""
    return Path(preprocessed_dataset_folder) / "dataset_fingerprint.json"


def load_or_extract_fingerprint(ds: Any, preprocessed_dataset_folder: Path, num_processes: int = 2,
                                clean: bool = False) -> Dict[str, Any]:
    """Reuse ``dataset_fingerprint.json`` when present (unless ``clean``), else extract and write it atomically."""
    path = fingerprint_path(preprocessed_dataset_folder)
    if path.is_file() and not clean:
        return load_json(path)
    fingerprint = extract_fingerprint(ds, num_processes)
    atomic_write_json(path, fingerprint)
    return fingerprint


def read_fingerprint(path: Path) -> Dict[str, Any]:
    """Load a fingerprint written by :func:`load_or_extract_fingerprint`."""
    data: Optional[Dict[str, Any]] = load_json(path)
    if not isinstance(data, dict) or "spacings" not in data:
        raise ValueError(f"{path}: not a dataset fingerprint (no 'spacings')")
    return data

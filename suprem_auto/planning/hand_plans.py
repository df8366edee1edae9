"""Hand-written plans: a complete, valid plan without a fingerprint, for tests, benchmarks and demos on 1 mm data
that needs no resampling (e.g. the hippocampus MRI of Dataset004)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

from suprem_auto.planning.default_planner import DEFAULT_PLANS_NAME
from suprem_auto.planning.schema import PLANS_FORMAT_VERSION


def plain_unet_plans(dataset_name: str = "Dataset004_Hippocampus", patch_size: Sequence[int] = (24, 32, 24),
                     batch_size: int = 2, features: Sequence[int] = (8, 16, 32), decoder_convs: int = 1,
                     spacing: Sequence[float] = (1.0, 1.0, 1.0),
                     median_shape: Sequence[int] = (36, 50, 35)) -> Dict[str, Any]:
    """One ``3d_fullres`` configuration: z-score, ``spacing`` kept as is, a plain U-Net with one stage per entry of
    ``features`` (3x3x3 kernels, stride 2 after the first stage, 2 convolutions per encoder stage and
    ``decoder_convs`` per decoder stage). nnU-Net's own plan for the hippocampus is ``features=(32, 64, 128, 256)``,
    ``patch_size=(40, 56, 40)``, ``decoder_convs=2``."""
    n = len(features)
    return {
        "format_version": PLANS_FORMAT_VERSION, "plans_name": DEFAULT_PLANS_NAME, "dataset_name": dataset_name,
        "preset": None, "reorient_to_ras": False, "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [int(s) for s in median_shape],
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": f"{DEFAULT_PLANS_NAME}_3d_fullres", "spacing": [float(s) for s in spacing],
            "patch_size": [int(p) for p in patch_size], "batch_size": int(batch_size),
            "median_image_size_in_voxels": [int(s) for s in median_shape],
            "normalization": [{"scheme": "zscore", "use_mask": False, "params": {}}],
            "resampling": {"data_order": 3, "seg_order": 1, "probabilities_order": 1, "order_z": 0,
                           "force_separate_z": None, "anisotropy_threshold": 3.0},
            "architecture": {"name": "plain_unet", "kwargs": {
                "n_stages": n, "features_per_stage": [int(f) for f in features], "kernel_sizes": [[3, 3, 3]] * n,
                "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_conv_per_stage": 2,
                "n_conv_per_stage_decoder": int(decoder_convs)}},
            "batch_dice": False}},
    }

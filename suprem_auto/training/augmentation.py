"""Training and validation transforms (batchgenerators), following nnU-Net v2's probabilities.

Spatial: rotation p=0.2 (±30°, in-plane only for anisotropic patches; 2D patches: ±180° or ±15°), isotropic
scaling p=0.2 (0.7-1.4), no elastic deformation. Intensity: Gaussian noise p=0.1, blur p=0.2, brightness p=0.15,
contrast p=0.15, simulated low resolution p=0.25, inverted gamma p=0.1 and gamma p=0.3. Mirroring on the allowed
axes. Segmentation border value -1 becomes background at the end.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

ROTATION = np.deg2rad(30)
SCALE_RANGE = (0.7, 1.4)
ANISOTROPY_RATIO = 3.0
ASPECT_2D = 1.5  # a 2D patch longer than this ratio rotates by ±15° only


def is_anisotropic_patch(patch_size: Sequence[int]) -> bool:
    """nnU-Net's dummy-2D criterion: the (3D) patch is much longer in-plane than along z; never for a 2D patch."""
    return len(patch_size) == 3 and max(patch_size) / patch_size[0] > ANISOTROPY_RATIO


def rotation_2d(patch_size: Sequence[int]) -> float:
    """nnU-Net's in-plane rotation range for a 2D patch: ±180°, or ±15° when its aspect ratio exceeds 1.5."""
    return np.deg2rad(15) if max(patch_size) / min(patch_size) > ASPECT_2D else np.pi


def _initial_patch_size_2d(patch_size: Sequence[int]) -> List[int]:
    """The 2D crop whose centre keeps ``patch_size`` covered under any rotation in :func:`rotation_2d` (the
    widest extent over the angles, not only at the largest one) and scaling down to 0.85."""
    a, b = (float(p) for p in patch_size)
    limit = min(rotation_2d(patch_size), np.pi / 2)
    angles = np.append(np.linspace(0.0, limit, 181), [np.arctan2(b, a), np.arctan2(a, b)])
    angles = angles[angles <= limit]
    c, s = np.abs(np.cos(angles)), np.abs(np.sin(angles))
    size = np.array([np.max(c * a + s * b), np.max(s * a + c * b)])
    return [int(v) for v in np.ceil(np.round(size, 6) / 0.85)]


def initial_patch_size(patch_size: Sequence[int]) -> List[int]:
    """Size of the crop taken before the spatial transform, big enough that rotation by up to ±30° (2D: the
    range of :func:`rotation_2d`) and scaling down to 0.85 leave no padding in the centre crop of ``patch_size``."""
    if len(patch_size) == 2:
        return _initial_patch_size_2d(patch_size)
    base = np.asarray(patch_size, dtype=float)
    size = base.copy()
    angles = [ROTATION, 0.0, 0.0] if is_anisotropic_patch(patch_size) else [ROTATION] * 3
    for axis, angle in enumerate(angles):
        if angle == 0:
            continue
        i, j = [a for a in range(3) if a != axis]
        c, s = abs(np.cos(angle)), abs(np.sin(angle))
        size[i] = max(size[i], c * base[i] + s * base[j])
        size[j] = max(size[j], s * base[i] + c * base[j])
    return [int(v) for v in np.ceil(size / 0.85)]


def training_transforms(patch_size: Sequence[int], mirror_axes: Optional[Sequence[int]],
                        augment: bool = True) -> AbstractTransform:
    """The training pipeline; input batches are crops of :func:`initial_patch_size` when ``augment``."""
    transforms: List[AbstractTransform] = []
    if augment:
        in_plane_only = is_anisotropic_patch(patch_size)
        angle = rotation_2d(patch_size) if len(patch_size) == 2 else ROTATION  # 2D: angle_x is the in-plane one
        transforms += [
            SpatialTransform(list(patch_size), patch_center_dist_from_border=None, do_elastic_deform=False,
                             do_rotation=True, angle_x=(-angle, angle),
                             angle_y=(0, 0) if in_plane_only else (-ROTATION, ROTATION),
                             angle_z=(0, 0) if in_plane_only else (-ROTATION, ROTATION),
                             do_scale=True, scale=SCALE_RANGE, border_mode_data="constant", border_cval_data=0,
                             order_data=3, border_mode_seg="constant", border_cval_seg=-1, order_seg=1,
                             random_crop=False, p_rot_per_sample=0.2, p_scale_per_sample=0.2,
                             independent_scale_for_each_axis=False),
            GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_sample=0.1),
            GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
            BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
            ContrastAugmentationTransform(contrast_range=(0.75, 1.25), p_per_sample=0.15),
            SimulateLowResolutionTransform(zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5,
                                           order_downsample=0, order_upsample=3, p_per_sample=0.25,
                                           ignore_axes=(0,) if in_plane_only else None),
            GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
            GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
        ]
        if mirror_axes:
            transforms.append(MirrorTransform(tuple(mirror_axes)))
    transforms.append(RemoveLabelTransform(-1, 0))
    return Compose(transforms)


def validation_transforms() -> AbstractTransform:
    """Validation batches are only cleaned: -1 (outside the image) becomes background."""
    return Compose([RemoveLabelTransform(-1, 0)])

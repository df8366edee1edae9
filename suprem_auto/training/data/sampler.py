"""Patch sampling with nnU-Net's foreground oversampling and padding (0 for data, -1 for segmentation)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from suprem_auto.training.data.cases import PreprocessedCase, PreprocessedCases


class PatchSampler:
    """Draws batches of patches of ``patch_size`` from random cases.

    The last ``num_forced`` samples of each batch (nnU-Net: ``round(batch_size * 0.33)``) are forced to contain
    foreground: a class is chosen uniformly among those present in the case and the patch is centred on one of its
    stored locations.
    Patches are clamped to the image where possible and padded otherwise.
    """

    def __init__(self, cases: PreprocessedCases, patch_size: Sequence[int], batch_size: int,
                 num_forced: int, seed: int = 0) -> None:
        self.cases = cases
        self.patch_size = np.asarray(patch_size, dtype=int)
        self.batch_size = batch_size
        self.num_forced = num_forced
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def sample_batch(self) -> Dict[str, object]:
        """A batch dict: ``data`` (b, c, *patch) float32, ``seg`` (b, 1, *patch) int16, ``keys`` case IDs."""
        data: List[np.ndarray] = []
        seg: List[np.ndarray] = []
        keys: List[str] = []
        for j in range(self.batch_size):
            case = self.cases.load(self.cases.case_ids[self.rng.integers(len(self.cases))])
            force = j >= self.batch_size - self.num_forced
            d, s = self.crop(case, force)
            data.append(d)
            seg.append(s)
            keys.append(case.case_id)
        return {"data": np.stack(data), "seg": np.stack(seg), "keys": keys}

    def crop(self, case: PreprocessedCase, force_foreground: bool) -> "tuple[np.ndarray, np.ndarray]":
        """Crop (and pad) one patch of ``patch_size`` from ``case``."""
        shape = np.asarray(case.data.shape[1:])
        center = self._foreground_center(case) if force_foreground else None
        low_limit = np.minimum(0, shape - self.patch_size)  # negative when the image is smaller than the patch
        high_limit = np.maximum(0, shape - self.patch_size)
        if center is None:
            start = np.array([self.rng.integers(lo, hi + 1) for lo, hi in zip(low_limit, high_limit)])
        else:
            start = np.clip(center - self.patch_size // 2, low_limit, high_limit)
        stop = start + self.patch_size
        src_lo = np.maximum(start, 0)
        src_hi = np.minimum(stop, shape)
        region = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        pad = [(0, 0)] + [(int(a - s), int(e - b)) for a, b, s, e in zip(src_lo, src_hi, start, stop)]
        d = np.pad(np.asarray(case.data[(slice(None),) + region], dtype=np.float32), pad, constant_values=0)
        s = np.pad(np.asarray(case.seg[(slice(None),) + region], dtype=np.int16), pad, constant_values=-1)
        if case.previous is not None:  # cascade: the previous stage's labels, same window, as a 2nd seg channel
            p = np.pad(np.asarray(case.previous[(slice(None),) + region], dtype=np.int16), pad, constant_values=-1)
            s = np.concatenate([s, p])
        return d, s

    def _foreground_center(self, case: PreprocessedCase) -> Optional[np.ndarray]:
        present = [k for k, v in case.locations.items() if (isinstance(k, str) or k > 0) and len(v) > 0]  # str: region
        if not present:
            return None
        label = present[self.rng.integers(len(present))]
        locs = case.locations[label]
        return np.asarray(locs[self.rng.integers(len(locs))][1:], dtype=int)

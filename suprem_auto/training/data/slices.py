"""2D training samples: slices along axis 0 of the 3D preprocessed cases, as nnU-Net's 2D data loader draws them.

A random sample takes a random slice of a random case. A forced-foreground sample first picks a class (or
region) uniformly among those the case contains, then a slice uniformly among the slices holding one of that
class's stored locations, and centres the in-plane patch on one of the class's locations in that slice. Cropping
and padding (0 for data, -1 for segmentation) are :class:`PatchSampler`'s, applied to the slice (and to a
cascade's previous-stage labels).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import numpy as np

from suprem_auto.training.data.cases import PreprocessedCase
from suprem_auto.training.data.sampler import PatchSampler


class SliceSampler(PatchSampler):
    """Batches of 2D patches ``data`` (b, c, y, x) and ``seg`` (b, 1, y, x) from (c, z, y, x) cases."""

    def crop(self, case: PreprocessedCase, force_foreground: bool) -> "tuple[np.ndarray, np.ndarray]":
        if len(self.patch_size) != 2:
            raise ValueError(f"SliceSampler needs a 2D patch, got {tuple(self.patch_size)}")
        index, locations = self._pick_slice(case, force_foreground)
        previous = case.previous[:, index] if case.previous is not None else None
        view = PreprocessedCase(case.case_id, case.data[:, index], case.seg[:, index], locations, previous)
        return super().crop(view, force_foreground and bool(locations))

    def _pick_slice(self, case: PreprocessedCase,
                    force_foreground: bool) -> Tuple[int, Dict[Union[int, str], np.ndarray]]:
        """The slice index and, for a forced sample, the chosen class's locations in it as (c, y, x)."""
        label = self._forced_class(case) if force_foreground else None
        if label is None:
            return int(self.rng.integers(case.data.shape[1])), {}
        locs = np.asarray(case.locations[label])
        index = int(self.rng.choice(np.unique(locs[:, 1])))
        in_slice = locs[locs[:, 1] == index]
        return index, {label: in_slice[:, [0, 2, 3]]}

    def _forced_class(self, case: PreprocessedCase) -> Optional[Union[int, str]]:
        """A label (or region key "1,2") chosen uniformly among those with stored locations in the case."""
        present = [k for k, v in case.locations.items() if (isinstance(k, str) or k > 0) and len(v) > 0]
        return present[int(self.rng.integers(len(present)))] if present else None

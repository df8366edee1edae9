"""Write a direct-inference result: one file per structure or one multi-label file, statistics and the preview."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from suprem_auto.segment.pipeline import Segmentation, label_map
from suprem_auto.segment.preview import write_preview
from suprem_auto.segment.statistics import structure_statistics
from suprem_auto.utils.atomic import atomic_write_json

MULTILABEL_FILE = "segmentation.nii.gz"
LABELS_FILE = "labels.json"
STATISTICS_FILE = "statistics.json"
PREVIEW_FILE = "preview.png"


def write_outputs(segmentation: Segmentation, output: Path, multilabel: bool = False,
                  preview: bool = True) -> List[Path]:
    """Write into the folder ``output`` (in the input's exact geometry): ``<structure>.nii.gz`` per structure, or
    ``segmentation.nii.gz`` with ``multilabel``; ``labels.json`` (structure -> label value); ``statistics.json``;
    ``preview.png``."""
    from suprem_auto.imageio import write_segmentation

    output.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    labels = label_map(segmentation)
    if multilabel:
        written.append(write_segmentation(labels, output / MULTILABEL_FILE, segmentation.props))
    else:
        for name, mask in segmentation.masks.items():
            written.append(write_segmentation(mask.astype(np.uint8), output / f"{name}.nii.gz", segmentation.props))
    values: Dict[str, int] = {"background": 0, **segmentation.values}
    written.append(atomic_write_json(output / LABELS_FILE, values))  # label values, also the preview's colours
    spacing = [float(s) for s in segmentation.props["spacing"]]
    stats = structure_statistics(segmentation.masks, segmentation.image, spacing)
    written.append(atomic_write_json(output / STATISTICS_FILE, stats))
    if preview:
        written.append(write_preview(segmentation.image, labels, spacing, output / PREVIEW_FILE))
    return written

"""Dataset fingerprint (spacings, shapes, intensities, orientation) used by the planner."""
from suprem_auto.fingerprint.extractor import (extract_fingerprint, fingerprint_case, fingerprint_path,
                                               intensity_statistics, load_or_extract_fingerprint, read_fingerprint)
from suprem_auto.fingerprint.orientation import ras_axis_permutation

__all__ = ["extract_fingerprint", "fingerprint_case", "fingerprint_path", "intensity_statistics",
           "load_or_extract_fingerprint", "ras_axis_permutation", "read_fingerprint"]

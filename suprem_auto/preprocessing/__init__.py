"""Per-case preprocessing and its inverse (used by training data preparation and by inference)."""
from suprem_auto.preprocessing.case import (location_keys, preprocess_case, preprocess_files,
                                            probabilities_to_segmentation, revert_probabilities,
                                            sample_foreground_locations, target_spacing_for)
from suprem_auto.preprocessing.dataset import copy_ground_truth, preprocess_dataset
from suprem_auto.preprocessing.storage import (case_files, case_is_complete, load_class_locations,
                                               load_preprocessed_case, save_preprocessed_case)

__all__ = ["case_files", "case_is_complete", "copy_ground_truth", "load_class_locations", "load_preprocessed_case",
           "location_keys", "preprocess_case", "preprocess_dataset", "preprocess_files",
           "probabilities_to_segmentation", "revert_probabilities", "sample_foreground_locations",
           "save_preprocessed_case", "target_spacing_for"]

"""Evaluation stage: per-class metrics, folder evaluation and connected-component post-processing."""
from suprem_auto.evaluation.evaluate import EvaluationError, evaluate_case, evaluate_folder, labels_in_references
from suprem_auto.evaluation.metrics import (DEFAULT_NSD_TOLERANCE_MM, class_key, compute_class_metrics,
                                            evaluate_arrays)
from suprem_auto.evaluation.postprocessing import (apply_postprocessing, apply_postprocessing_to_folder,
                                                   determine_postprocessing, load_postprocessing)

__all__ = ["DEFAULT_NSD_TOLERANCE_MM", "EvaluationError", "apply_postprocessing", "apply_postprocessing_to_folder",
           "class_key", "compute_class_metrics", "determine_postprocessing", "evaluate_arrays", "evaluate_case",
           "evaluate_folder", "labels_in_references", "load_postprocessing"]

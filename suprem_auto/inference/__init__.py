"""Inference: sliding window, the predictor object, export back to the input's exact geometry."""
from suprem_auto.inference.cases import InputCase, find_input_cases
from suprem_auto.inference.export import write_probabilities
from suprem_auto.inference.predictor import ModelFolderError, PredictionReport, Predictor, load_checkpoint
from suprem_auto.inference.sliding_window import compute_tile_starts, gaussian_importance_map, predict_sliding_window

__all__ = ["InputCase", "ModelFolderError", "PredictionReport", "Predictor", "compute_tile_starts",
           "find_input_cases", "gaussian_importance_map", "load_checkpoint", "predict_sliding_window",
           "write_probabilities"]

"""Safe checkpoint loading with layout detection and renaming, and the model zoo (zoo.json)."""
from suprem_auto.pretrained.checkpoint_io import CheckpointError, UnsafeCheckpointError, read_checkpoint
from suprem_auto.pretrained.label_maps import label_map_name_for, label_names_for
from suprem_auto.pretrained.loader import load_pretrained
from suprem_auto.pretrained.report import LoadReport
from suprem_auto.pretrained.zoo import (PretrainedNotFound, ZooEntry, load_zoo, preprocessing_differences,
                                        resolve_pretrained)

__all__ = ["CheckpointError", "UnsafeCheckpointError", "read_checkpoint", "load_pretrained", "LoadReport",
           "PretrainedNotFound", "ZooEntry", "load_zoo", "preprocessing_differences", "resolve_pretrained",
           "label_map_name_for", "label_names_for"]

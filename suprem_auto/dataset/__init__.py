"""Raw datasets in nnU-Net v2's format: discovery, dataset.json, labels, integrity."""
from suprem_auto.dataset.labels import LabelSpec, parse_labels
from suprem_auto.dataset.raw import (Case, DatasetError, RawDataset, find_dataset_folder, list_cases,
                                     load_raw_dataset, load_raw_dataset_folder)

__all__ = ["Case", "DatasetError", "LabelSpec", "RawDataset", "find_dataset_folder", "list_cases",
           "load_raw_dataset", "load_raw_dataset_folder", "parse_labels"]

"""One-command organ segmentation with a SuPreM / Universal Model pre-trained head (no training)."""
from suprem_auto.segment.head import OrganModel, load_organ_model
from suprem_auto.segment.pipeline import SegmentOptions, segment_ct

__all__ = ["OrganModel", "load_organ_model", "SegmentOptions", "segment_ct"]

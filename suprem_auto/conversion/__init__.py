"""Converters into the raw format: MSD task folders, per-structure masks, DICOM series, dataset subsets."""
from suprem_auto.conversion.common import ConversionError
from suprem_auto.conversion.dicom import convert_dicom_series, read_dicom_series
from suprem_auto.conversion.msd import convert_msd_task
from suprem_auto.conversion.structure_masks import (OVERLAP_RULE, MaskConversionReport, convert_structure_masks,
                                                    load_label_table)
from suprem_auto.conversion.subset import make_subset

__all__ = ["ConversionError", "MaskConversionReport", "OVERLAP_RULE", "convert_dicom_series", "convert_msd_task",
           "convert_structure_masks", "load_label_table", "make_subset", "read_dicom_series"]

#!/usr/bin/env python
"""Convert per-structure masks (TotalSegmentator, AbdomenAtlas) into DatasetXXX_Name with one label map per case.

Layout: ``CASES/<case>/ct.nii.gz`` and ``CASES/<case>/segmentations/<structure>.nii.gz``. Same as
``suprem_convert masks``; see dataset_conversion/README.md for the label table and the overlap rule. Examples::

    python dataset_conversion/convert_totalsegmentator_masks.py -i Totalsegmentator_dataset_v201 -d 201 \\
        -n TotalSegmentator
    python dataset_conversion/convert_totalsegmentator_masks.py -i AbdomenAtlas1.1Mini -d 301 -n AbdomenAtlas \\
        --labels abdomenatlas_labels.json
"""
import sys

from suprem_auto.cli.convert import main

if __name__ == "__main__":
    sys.exit(main(["masks"] + sys.argv[1:]))

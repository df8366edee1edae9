#!/usr/bin/env python
"""Convert one DICOM series folder into a NIfTI file (same as ``suprem_convert dicom``). Example::

    python dataset_conversion/convert_dicom_series.py -i patient1/CT_series -o patient1_0000.nii.gz
"""
import sys

from suprem_auto.cli.convert import main

if __name__ == "__main__":
    sys.exit(main(["dicom"] + sys.argv[1:]))

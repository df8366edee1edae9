#!/usr/bin/env python
"""Convert a Medical Segmentation Decathlon task folder (e.g. Task04_Hippocampus) into DatasetXXX_Name.

Same as ``suprem_convert msd``. Example::

    python dataset_conversion/convert_msd_task.py -i ~/Downloads/Task04_Hippocampus -d 4 -o $SUPREM_RAW
"""
import sys

from suprem_auto.cli.convert import main

if __name__ == "__main__":
    sys.exit(main(["msd"] + sys.argv[1:]))

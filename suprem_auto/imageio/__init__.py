"""Reading and writing medical images with their geometry."""
from suprem_auto.imageio.sitk_io import (ImageReadError, file_ending, geometry_mismatch, read_image_file, read_images,
                                         read_segmentation, smallest_label_dtype, write_image, write_segmentation)

__all__ = ["ImageReadError", "file_ending", "geometry_mismatch", "read_image_file", "read_images",
           "read_segmentation", "smallest_label_dtype", "write_image", "write_segmentation"]

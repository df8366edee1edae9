"""suprem_auto: self-configuring 3D medical image segmentation with supervised pre-trained initialisation."""

__version__ = "0.1.0"

"""Shipped plans presets (JSON data files), installed as the package ``suprem_auto.presets``."""

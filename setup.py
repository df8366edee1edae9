"""Packaging glue: installs plans/ (shipped presets, JSON) as the data-only sub-package ``suprem_auto.presets``.

Everything else lives in pyproject.toml and setup.cfg. A computed package list is the one thing the declarative
files cannot express (an automatic find plus one mapped folder).
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["suprem_auto", "suprem_auto.*"]) + ["suprem_auto.presets"],
    package_dir={"suprem_auto.presets": "plans"},
    package_data={"suprem_auto.presets": ["*.json"], "suprem_auto.pretrained": ["*.json"],
                  "suprem_auto.training": ["recipes/*.json"]},
    include_package_data=True,
)

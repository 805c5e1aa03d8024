"""Pneumo Explorer's library: data, models, checkpoints, training, inference, Grad-CAM, metrics.

Research and teaching software; not a medical device and not for clinical use.
"""
from importlib.metadata import PackageNotFoundError, version

try:  # one version number: pyproject.toml's, as installed
    __version__ = version("pneumo-explorer")
except PackageNotFoundError:  # a checkout used without `pip install -e .`
    __version__ = "0+unknown"
NOT_FOR_CLINICAL_USE = "Research and teaching tool — not a medical device, not for clinical use."

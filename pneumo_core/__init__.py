"""Pneumo Explorer's library: data, models, checkpoints, training, inference, Grad-CAM, metrics.

Research and teaching software; not a medical device and not for clinical use.
"""
__version__ = "0.1.0"
NOT_FOR_CLINICAL_USE = "Research and teaching tool — not a medical device, not for clinical use."

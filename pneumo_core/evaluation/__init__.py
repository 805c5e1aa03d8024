"""Metrics, thresholds, calibration, bootstrap, prediction files and reports: pure functions over arrays."""

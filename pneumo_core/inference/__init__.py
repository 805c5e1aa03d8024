"""Predictors (one checkpoint, ensembles, the hierarchical model) and dataset inference."""

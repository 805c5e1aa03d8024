"""Architectures, checkpoints and where they come from (Hub, local folders, the bundle)."""

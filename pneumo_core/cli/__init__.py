"""``python -m pneumo_core <command>``."""

"""Plotly figures of what evaluation computes (no numbers of their own)."""

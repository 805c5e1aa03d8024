"""What the app's server process needs beyond the pages: its memory (heaps, the collector, uploads held by
Streamlit). Streamlit is imported inside the functions, so pneumo_core imports without it."""

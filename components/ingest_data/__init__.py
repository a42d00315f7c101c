"""Component: ingest_data (see component.py)."""

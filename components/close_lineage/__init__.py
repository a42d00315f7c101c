"""Component: close_lineage (see component.py)."""

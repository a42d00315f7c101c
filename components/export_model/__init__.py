"""Component: export_model (see component.py)."""

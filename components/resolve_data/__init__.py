"""Component: resolve_data (see component.py)."""

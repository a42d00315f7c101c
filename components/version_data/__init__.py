"""Component: version_data (see component.py)."""

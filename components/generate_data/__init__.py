"""Component: generate_data (see component.py)."""

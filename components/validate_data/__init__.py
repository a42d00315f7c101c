"""Component: validate_data (see component.py)."""

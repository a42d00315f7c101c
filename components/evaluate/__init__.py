"""Component: evaluate (see component.py)."""

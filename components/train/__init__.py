"""Component: train (see component.py)."""

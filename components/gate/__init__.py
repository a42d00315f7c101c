"""Component: gate (see component.py)."""

"""Component: register_base (see component.py)."""

"""Component: register_model (see component.py)."""

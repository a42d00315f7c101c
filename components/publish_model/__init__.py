"""Component: publish_model (see component.py)."""

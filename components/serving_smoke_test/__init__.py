"""Component: serving_smoke_test (see component.py)."""

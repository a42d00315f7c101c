"""Component: sample_benchmark (see component.py)."""

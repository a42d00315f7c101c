"""Evaluation: the papers' metrics on generated clips, and the release gate."""

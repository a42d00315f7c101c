"""Kubeflow Pipelines v2 pipelines: the release pipeline."""

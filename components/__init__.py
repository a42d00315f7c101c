"""Kubeflow Pipelines components: one folder each, thin typed wrappers over data/, model/, evaluation/ and serving/."""

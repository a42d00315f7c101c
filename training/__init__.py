"""Training: staged recipes, the DeepSpeed trainer, atomic checkpoints, MLflow stage runs, cluster job specs."""

"""Training: staged recipes, the DeepSpeed trainer, atomic checkpoints, MLflow stage runs, cluster job specs.

Modules, top to bottom:

- ``recipes``: the four stages (id, multishot, av, joint) as typed configs per preset.
- ``data``: precompute latents once per dataset version, the Dataset, the bucketed and
  interleaved batch schedule.
- ``adapter`` / ``mavin_adapter``: what the trainer needs from a model, and the project's model
  behind that interface.
- ``engine``: process group (gloo / NCCL), DeepSpeed engine, full-state gather/scatter.
- ``checkpoint``: atomic, sha256-verified checkpoints (safetensors + JSON, never pickle).
- ``trainer``: :func:`train_stage` / :func:`train_stages`, SIGTERM handling, MLflow.
- ``manifests``: the same launch as a Kubeflow TrainJob or PyTorchJob for N nodes x G GPUs.
- ``golden``: the committed debug loss curve.
- ``__main__``: ``python -m mavin_ops.training train|precompute|render-job|golden``.
"""

from .checkpoint import CheckpointError
from .data import DataError, precompute
from .recipes import PRESETS, STAGES, RecipeError, StageRecipe, get_recipe, previous_stage
from .trainer import EXIT_SIGTERM, StageResult, TrainError, load_trained_model, train_stage, train_stages

__all__ = [
    "EXIT_SIGTERM",
    "PRESETS",
    "STAGES",
    "CheckpointError",
    "DataError",
    "RecipeError",
    "StageRecipe",
    "StageResult",
    "TrainError",
    "get_recipe",
    "load_trained_model",
    "precompute",
    "previous_stage",
    "train_stage",
    "train_stages",
]

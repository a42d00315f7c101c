"""Where the platform keeps its local state, and how it finds MLflow.

Everything the embedded default writes lives under ``MAVIN_HOME`` (default ``./.mavin``):
the MLflow SQLite store and artifact root, the data registry and its DVC remote, pipeline
roots, datasets. ``MLFLOW_TRACKING_URI`` is respected when set.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["artifact_root", "home", "tracking_uri"]


def home() -> Path:
    """The local state folder: ``$MAVIN_HOME`` or ``./.mavin``; created on first use."""
    path = Path(os.environ.get("MAVIN_HOME") or Path.cwd() / ".mavin").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else SQLite under MAVIN_HOME."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def artifact_root() -> Path:
    """Artifact root for experiments the platform creates on a local store."""
    path = home() / "mlartifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path

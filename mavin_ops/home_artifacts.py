"""MLflow artifact repository for ``mavin-home:/...`` URIs: artifacts stored under the
platform's state folder, named relative to it so the folder can move.

Experiments the platform creates on a local store get the artifact location
``mavin-home:/mlartifacts`` (see :func:`mavin_ops.settings.artifact_root_uri`); every run's
artifact URI follows from it. This repository is MLflow's local-file repository rooted at
the home that :func:`mavin_ops.settings.home` names *now* (``$MAVIN_HOME``, else the folder
of a SQLite tracking database, else ``./.mavin``). It is registered with MLflow through the
``mlflow.artifact_repository`` entry point (so ``mlflow ui`` run from the project's
environment reads it too) and again on import of :mod:`mavin_ops.tracking`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from mavin_ops import settings

__all__ = ["HomeArtifactRepository", "register"]


def _root(tracking_uri: str | None) -> Path | None:
    """The home to resolve against: $MAVIN_HOME; without it, the folder of a SQLite tracking
    database named mlflow.db (``mlflow ui --backend-store-uri sqlite:////x/.mavin/mlflow.db``
    run from anywhere); else None (``./.mavin``)."""
    if os.environ.get("MAVIN_HOME"):
        return None
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if db.name == "mlflow.db" and db.is_absolute() and db.parent.is_dir():
            return db.parent
    return None


class HomeArtifactRepository(LocalArtifactRepository):
    """``mavin-home:/mlartifacts/<run>/artifacts`` read and written as the local folder
    ``<home>/mlartifacts/<run>/artifacts``."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        local = settings.local_path(artifact_uri, _root(tracking_uri))
        super().__init__(local.as_uri(), tracking_uri, registry_uri)
        self.home_uri = artifact_uri


def register() -> None:
    """Register the scheme with MLflow in this process: as an artifact repository and as a
    dataset source (``mlflow.data`` builds its sources from the repositories it saw when it
    was imported, which may be before this call, and an entry point is not seen when an older
    build's metadata comes first on ``sys.path``)."""
    from mlflow.data.artifact_dataset_sources import _create_dataset_source_for_artifact_repo
    from mlflow.data.dataset_source_registry import _dataset_source_registry, register_dataset_source
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _artifact_repository_registry.register(settings.HOME_SCHEME, HomeArtifactRepository)
    try:
        _dataset_source_registry.resolve(f"{settings.HOME_SCHEME}:/")
    except Exception:  # noqa: BLE001 - MlflowException: no resolver for the scheme yet
        register_dataset_source(_create_dataset_source_for_artifact_repo(settings.HOME_SCHEME, "HomeArtifactDatasetSource"))

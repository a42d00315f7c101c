"""Where the platform keeps its local state, and how it finds MLflow.

Everything the embedded default writes lives under ``MAVIN_HOME`` (default ``./.mavin``):
the MLflow SQLite store and artifact root, the data registry and its DVC remote, pipeline
roots, datasets. ``MLFLOW_TRACKING_URI`` is respected when set.

The folder can move (copied to another path or machine): what the platform stores about a
file under it (MLflow artifact locations, paths in tags and params, the DVC remote of the
data registry) names it relative to the home, as ``mavin-home:/<relative path>``, and
:func:`local_path` resolves such a reference against wherever the home is now. MLflow reads
the same scheme through :class:`mavin_ops.home_artifacts.HomeArtifactRepository`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["HOME_SCHEME", "artifact_root", "artifact_root_uri", "home", "home_lock", "local_path", "portable", "tracking_uri"]

#: The URI scheme of a reference relative to the home: ``mavin-home:/runs/r1/train/id``.
HOME_SCHEME = "mavin-home"


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


def artifact_root_uri() -> str:
    """The artifact location of experiments the platform creates on a local store, relative
    to the home (MLflow resolves it through the ``mavin-home`` artifact repository)."""
    artifact_root()
    return f"{HOME_SCHEME}:/mlartifacts"


def portable(path: str | os.PathLike) -> str:
    """What to store about ``path``: ``mavin-home:/<relative>`` when it lies under the home,
    else the path (or URI) unchanged. The empty string stays empty."""
    text = os.fspath(path)
    if not text or "://" in text or text.startswith(f"{HOME_SCHEME}:"):
        return text
    p = Path(text)
    if not p.is_absolute():
        return text
    try:
        rel = p.resolve().relative_to(home())
    except ValueError:
        return text
    return f"{HOME_SCHEME}:/{rel.as_posix()}" if rel.parts else f"{HOME_SCHEME}:/"


def local_path(ref: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The file a stored reference names on this machine now: ``mavin-home:/x`` under the
    current home, ``file://`` URIs and plain paths as they are. A reference that would leave
    the home (``mavin-home:/../x``) is refused with ValueError. ``root``: the home to
    resolve against (default: :func:`home`)."""
    from urllib.parse import unquote, urlparse

    text = os.fspath(ref)
    if text.startswith(f"{HOME_SCHEME}:"):
        rel = unquote(text[len(HOME_SCHEME) + 1 :]).lstrip("/")
        root = Path(root).resolve() if root else home()
        out = (root / rel).resolve() if rel else root
        if out != root and root not in out.parents:
            raise ValueError(f"{text} leaves the state folder {root}")
        return out
    u = urlparse(text)
    if u.scheme == "file":
        return Path(unquote(u.path))
    return Path(text)


@contextlib.contextmanager
def home_lock(name: str) -> Iterator[None]:
    """Hold the exclusive lock ``<home>/locks/<name>.lock`` for the block, waiting for it: one
    holder at a time on this machine (and on a shared home). It goes with the process."""
    import fcntl

    folder = home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield

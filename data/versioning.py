"""Dataset versioning with DVC: a data registry that pins every dataset version a run reads.

The registry is a git + DVC repository the platform manages (default
``$MAVIN_HOME/data-registry``). Versioning a dataset directory copies it to
``datasets/<name>/`` in the registry, ``dvc add``s it, commits the ``.dvc`` pointer, tags the
commit ``<name>-v<N>`` and pushes the content to the DVC remote: a local directory by
default (``$MAVIN_HOME/dvc-remote``) or ``s3://bucket/prefix`` with a configurable endpoint
(credentials come from the environment, never from the registry's config).

A :class:`DatasetVersion` names what a run read: the registry commit and tag, and the DVC
content hash of the directory (``<md5>.dir``), which depends only on the bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from mavin_ops import settings

__all__ = [
    "DatasetVersion",
    "VersioningError",
    "dvc",
    "init_registry",
    "pull_version",
    "resolve_version",
    "version_dataset",
]

DEFAULT_NAME = "mavinset-mini"


class VersioningError(RuntimeError):
    """A DVC or git step failed; the message names the command and its output."""


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    digest: str  # DVC content hash of the directory, e.g. "3f2c...e1.dir"
    commit: str  # data-registry git commit holding the .dvc pointer
    tag: str  # e.g. "mavinset-mini-v3"
    registry: str  # data-registry path
    remote: str  # DVC remote URL the content was pushed to
    path: str  # dataset path inside the registry, e.g. "datasets/mavinset-mini"
    nfiles: int
    size: int

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise VersioningError(f"`{' '.join(cmd)}` failed in {cwd}: {' | '.join(tail)}")
    return proc.stdout


def dvc(*args: str, cwd: Path) -> str:
    """Run the DVC CLI of this environment."""
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _git(*args: str, cwd: Path) -> str:
    return _run(
        ["git", "-c", "user.name=mavin-ops", "-c", "user.email=mavin-ops@localhost", "-c", "commit.gpgsign=false", *args],
        cwd,
    )


def init_registry(
    registry: str | os.PathLike | None = None, remote: str | None = None, endpoint_url: str | None = None
) -> Path:
    """Create the data registry when missing (git init, dvc init, default remote); when it
    exists, point its default remote at ``remote``/``endpoint_url`` if they are given."""
    root = Path(registry) if registry else settings.home() / "data-registry"
    remote = remote or str(settings.home() / "dvc-remote")
    fresh = not (root / ".dvc").is_dir()
    if fresh:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ".git").exists():
            _git("init", "-q", "-b", "main", cwd=root)
        dvc("init", "-q", cwd=root)
        dvc("config", "core.analytics", "false", cwd=root)
        (root / "datasets").mkdir(exist_ok=True)
    current = _remote_url(root)
    if current != remote:
        if current is None:
            dvc("remote", "add", "-d", "storage", remote, cwd=root)
        else:
            dvc("remote", "modify", "storage", "url", remote, cwd=root)
    if endpoint_url:
        dvc("remote", "modify", "storage", "endpointurl", endpoint_url, cwd=root)
    _git("add", "-A", ".dvc", cwd=root)
    if _git("status", "--porcelain", cwd=root).strip():
        _git("commit", "-q", "-m", "data registry: configure DVC remote", cwd=root)
    return root


def _remote_url(root: Path) -> str | None:
    try:
        return dvc("config", "remote.storage.url", cwd=root).strip() or None
    except VersioningError:
        return None


def _pointer(root: Path, name: str) -> dict:
    with open(root / "datasets" / f"{name}.dvc", encoding="utf-8") as fh:
        out = yaml.safe_load(fh)["outs"][0]
    return out


def _tags(root: Path, name: str) -> list[str]:
    """The version tags ``<name>-v<N>`` of ``name``, newest (highest N) first: v10 before v9."""
    out = _git("tag", "--list", f"{name}-v*", cwd=root)
    tags = [t for t in out.split() if t[len(name) + 2 :].isdigit()]
    return sorted(tags, key=lambda t: int(t[len(name) + 2 :]), reverse=True)


def version_dataset(
    src: str | os.PathLike,
    *,
    name: str = DEFAULT_NAME,
    registry: str | os.PathLike | None = None,
    remote: str | None = None,
    endpoint_url: str | None = None,
    push: bool = True,
    message: str = "",
) -> DatasetVersion:
    """Version the dataset directory ``src`` in the registry and push it to the remote.

    Idempotent: versioning the same bytes again returns the existing version (same digest,
    commit and tag) without a new commit."""
    src = Path(src).resolve()
    if not (src / "manifest.jsonl").is_file():
        raise VersioningError(f"{src} has no manifest.jsonl; point at a dataset directory (see data/manifest.py)")
    root = init_registry(registry, remote, endpoint_url)
    dest = root / "datasets" / name
    if dest.resolve() != src:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, symlinks=True)
    dvc("add", "-q", f"datasets/{name}", cwd=root)
    _git("add", f"datasets/{name}.dvc", "datasets/.gitignore", cwd=root)
    out = _pointer(root, name)
    digest = out["md5"]
    tags = _tags(root, name)
    if _git("status", "--porcelain", cwd=root).strip():
        _git("commit", "-q", "-m", message or f"{name}: version {digest}", cwd=root)
    commit = _git("rev-parse", "HEAD", cwd=root).strip()
    tag = next((t for t in tags if _git("rev-list", "-n", "1", t, cwd=root).strip() == commit), "")
    if not tag:
        tag = f"{name}-v{int(tags[0][len(name) + 2 :]) + 1 if tags else 1}"  # highest N + 1
        _git("tag", "-a", tag, "-m", f"{name} {digest}", cwd=root)
    if push:
        dvc("push", "-q", "-r", "storage", f"datasets/{name}", cwd=root)
    return DatasetVersion(
        name=name,
        digest=digest,
        commit=commit,
        tag=tag,
        registry=str(root),
        remote=_remote_url(root) or "",
        path=f"datasets/{name}",
        nfiles=int(out.get("nfiles", 0)),
        size=int(out.get("size", 0)),
    )


def resolve_version(
    registry: str | os.PathLike | None = None, *, name: str = DEFAULT_NAME, rev: str = "latest"
) -> DatasetVersion:
    """The version at ``rev`` (a tag such as ``mavinset-mini-v3``, a registry commit, or
    ``latest`` = the ``<name>-v<N>`` tag with the highest N at call time) without touching
    the registry's work tree."""
    root = Path(registry) if registry else settings.home() / "data-registry"
    rev = (rev or "").strip()
    hint = f"use 'latest', a tag listed by `git -C {root} tag --list '{name}-v*'`, or a registry commit"
    if not rev or rev.startswith("-"):
        raise VersioningError(f"dataset revision '{rev}' for the registry {root} is not a revision; {hint}")
    if not (root / ".dvc").is_dir():
        raise VersioningError(
            f"no data registry at {root} to resolve dataset revision '{rev}'; version a dataset there first (`mavin-ops data version <dataset>`) or pass the registry that holds it"
        )
    if rev == "latest":
        tags = _tags(root, name)
        if not tags:
            raise VersioningError(
                f"dataset revision 'latest': the registry {root} has no version of '{name}' yet; run `mavin-ops data version <dataset>` first"
            )
        rev = tags[0]
    try:
        text = _git("show", f"{rev}:datasets/{name}.dvc", cwd=root)
    except VersioningError:
        raise VersioningError(f"revision '{rev}' of the registry {root} has no dataset '{name}'; {hint}") from None
    out = yaml.safe_load(text)["outs"][0]
    commit = _git("rev-list", "-n", "1", rev, cwd=root).strip()
    tag = next((t for t in _tags(root, name) if _git("rev-list", "-n", "1", t, cwd=root).strip() == commit), "")
    return DatasetVersion(
        name=name,
        digest=out["md5"],
        commit=commit,
        tag=tag,
        registry=str(root),
        remote=_remote_url(root) or "",
        path=f"datasets/{name}",
        nfiles=int(out.get("nfiles", 0)),
        size=int(out.get("size", 0)),
    )


def pull_version(registry_url: str, rev: str, dest: str | os.PathLike, *, name: str = DEFAULT_NAME) -> Path:
    """Clone the registry at ``rev`` into ``dest`` and pull the dataset bytes from the remote
    (what a training node does). Returns the dataset directory."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise VersioningError(f"{dest} is not empty; pull into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git("clone", "-q", str(registry_url), str(dest), cwd=dest.parent)
    _git("checkout", "-q", rev, cwd=dest)
    dvc("pull", "-q", f"datasets/{name}", cwd=dest)
    return dest / "datasets" / name

"""Atomic, verifiable training checkpoints: safetensors for tensors, JSON for everything else.

Layout of a checkpoint root (one per training stage)::

    <root>/step-00000004/          a complete checkpoint (only complete ones have this name)
        model.safetensors          full model state (every rank holds the same copy)
        optimizer.safetensors      AdamW state per trainable parameter, consolidated over ranks
        rng.safetensors            RNG states of every rank
        meta.json                  step, recipe, model config, lineage, the loss curve so far
        MANIFEST.json              sha256 and size of every file above; written LAST
    <root>/.tmp-step-00000006-...  a checkpoint being written (or left by a killed writer)

Writing (:func:`save_checkpoint`): every file goes into a temporary folder and is fsynced,
then MANIFEST.json (fsynced), then the folder is renamed to its final name (a checkpoint of
the same step saved again is swapped in atomically, :func:`mavin_ops.fsutil.replace_dir`) and
the parent folder fsynced. A reader therefore sees a complete checkpoint or none; a ``kill -9`` in the
middle leaves only a ``.tmp-`` folder, which is never read and is removed by the next save.

Reading (:func:`find_resumable`): the newest ``step-*`` folder whose MANIFEST.json exists,
parses, and whose files all match their sha256; a partial or corrupt one is refused with a
one-line error naming the file and the previous one is tried. Loading uses safetensors and
``json`` only: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from mavin_ops.fsutil import fsync_dir, replace_dir
from mavin_ops.errors import MavinError
from mavin_ops.data.manifest import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "MANIFEST",
    "CheckpointError",
    "CheckpointInfo",
    "begin_checkpoint",
    "checkpoint_dirs",
    "commit_checkpoint",
    "copy_checkpoint",
    "find_resumable",
    "load_json",
    "load_tensors",
    "open_tensors",
    "prune",
    "save_checkpoint",
    "verify_checkpoint",
    "write_tensor_file",
]

MANIFEST = "MANIFEST.json"
FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(MavinError, RuntimeError):
    """A checkpoint that must not be loaded; the message is one line naming the file."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A verified complete checkpoint."""

    path: Path
    step: int
    manifest: dict[str, Any]
    refused: tuple[str, ...] = field(default=())  # one-line reasons for newer ones skipped

    @property
    def manifest_sha256(self) -> str:
        """sha256 of MANIFEST.json: one id that pins every byte of the checkpoint."""
        return sha256_file(self.path / MANIFEST)

    def file(self, name: str) -> Path:
        return self.path / name


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_fsync_dir = fsync_dir  # one implementation (mavin_ops/fsutil.py)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def begin_checkpoint(root: str | os.PathLike, step: int, token: str | None = None) -> Path:
    """The temporary folder a checkpoint of ``step`` is written into (``.tmp-step-N-<token>``).
    Every writer of one checkpoint passes the same ``token`` (the ranks of a sharded save get
    it from rank 0), so they all write into one folder; without one it is unique to this call."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{step_name(step)}-{token or f'{os.getpid()}-{uuid.uuid4().hex[:8]}'}"
    tmp.mkdir(exist_ok=token is not None)
    return tmp


def write_tensor_file(tmp: Path, name: str, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write one safetensors file into a checkpoint being written and fsync it; returns its
    manifest entry (sha256, bytes)."""
    from safetensors.torch import save_file

    if not name.endswith(".safetensors"):
        raise ValueError(f"tensor file '{name}' must end with .safetensors")
    path = Path(tmp) / name
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    _fsync_file(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def commit_checkpoint(root: str | os.PathLike, step: int, tmp: Path, files: dict[str, dict[str, Any]],
                      keep_last: int | None = None) -> CheckpointInfo:
    """Finish a checkpoint whose ``files`` (name -> manifest entry) are written and durable
    in ``tmp``: MANIFEST.json last, then the rename to ``step-N`` (an atomic swap when that
    step exists), then the parent folder fsynced. One writer (rank 0) calls it."""
    root, tmp = Path(root), Path(tmp)
    manifest = {"format": FORMAT, "step": int(step), "created": time.time(), "files": dict(files)}
    _write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    _fsync_dir(tmp)
    final = root / step_name(step)
    if final.exists():  # the same step saved again (e.g. SIGTERM right after a periodic save)
        # one atomic swap (renameat2 RENAME_EXCHANGE): the step name never goes missing; the
        # old copy, now under the .tmp- name, is deleted (or by prune if we die first)
        replace_dir(tmp, final, trash_prefix=f".tmp-replaced-{step_name(step)}-")
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    info = CheckpointInfo(final, int(step), manifest)
    if keep_last:
        prune(root, keep_last)
    return info


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    tensors: dict[str, dict[str, "torch.Tensor"]],
    json_files: dict[str, Any],
    keep_last: int | None = None,
    tensor_metadata: dict[str, dict[str, str]] | None = None,
    on_file_written: Callable[[Path], None] | None = None,
    tmp: Path | None = None,
    written: dict[str, dict[str, Any]] | None = None,
) -> CheckpointInfo:
    """Write a checkpoint for ``step`` atomically and return it.

    ``tensors`` maps a file name (``*.safetensors``) to a flat dict of tensors; ``json_files``
    maps a file name (``*.json``) to JSON-able data. ``tensor_metadata`` adds string metadata to
    a tensor file's safetensors header. ``keep_last`` prunes older complete checkpoints
    afterwards. ``on_file_written`` is called after each file is durable (the
    fault tests use it to kill the writer half way). ``tmp`` and ``written``: a folder from
    :func:`begin_checkpoint` that other writers (ranks) already put files into, and their
    manifest entries; the manifest then lists those files too."""
    root = Path(root)
    own = tmp is None
    tmp = begin_checkpoint(root, step) if own else Path(tmp)
    files: dict[str, dict[str, Any]] = dict(written or {})
    try:
        for name, tdict in tensors.items():
            files[name] = write_tensor_file(tmp, name, tdict, (tensor_metadata or {}).get(name))
            if on_file_written:
                on_file_written(tmp / name)
        for name, data in json_files.items():
            if not name.endswith(".json") or name == MANIFEST:
                raise ValueError(f"JSON file '{name}' must end with .json and not be {MANIFEST}")
            path = tmp / name
            _write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
            files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            if on_file_written:
                on_file_written(path)
        missing = [n for n in files if not (tmp / n).is_file()]
        if missing:
            raise CheckpointError(f"checkpoint of step {step}: {', '.join(missing)} not in {tmp}; another writer did not finish")
        return commit_checkpoint(root, step, tmp, files, keep_last)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_dirs(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every folder with a final checkpoint name, newest first. Temporary
    folders (``.tmp-*``) are never listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out, reverse=True)


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint folder; return its manifest or raise :class:`CheckpointError` with a
    one-line message naming the offending file."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path} is partial: {mpath} is missing (the writer stopped before finishing)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint manifest {mpath} is corrupt ({exc.__class__.__name__}); the checkpoint cannot be trusted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"checkpoint manifest {mpath} is not a format-{FORMAT} manifest; the checkpoint cannot be trusted")
    m = _NAME.match(path.name)
    if m and int(m.group(1)) != manifest.get("step"):
        raise CheckpointError(f"checkpoint manifest {mpath} says step {manifest.get('step')}, the folder name says {int(m.group(1))}")
    for name, entry in sorted(manifest["files"].items()):
        fpath = path / name
        if "/" in name or name.startswith("."):
            raise CheckpointError(f"checkpoint manifest {mpath} lists an unsafe file name '{name}'")
        if not fpath.is_file():
            raise CheckpointError(f"checkpoint file {fpath} is missing (listed in {MANIFEST})")
        size = fpath.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(f"checkpoint file {fpath} has {size} bytes, {MANIFEST} says {entry.get('bytes')}: truncated or corrupt")
        got = sha256_file(fpath)
        if got != entry.get("sha256"):
            raise CheckpointError(
                f"checkpoint file {fpath} has sha256 {got[:12]}..., {MANIFEST} says {str(entry.get('sha256'))[:12]}...: the file is corrupt"
            )
    return manifest


def find_resumable(root: str | os.PathLike, log: Callable[[str], None] | None = print) -> CheckpointInfo | None:
    """The newest complete, intact checkpoint under ``root``; None when there is none at all.

    A partial or corrupt checkpoint is refused: its one-line reason is logged, the previous
    checkpoint is tried. When checkpoints exist but every one is refused this raises
    :class:`CheckpointError` rather than silently starting over."""
    refused: list[str] = []
    dirs = checkpoint_dirs(root)
    for step, path in dirs:
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError as exc:
            refused.append(str(exc))
            if log:
                log(f"refused: {exc}; falling back to the previous checkpoint")
            continue
        return CheckpointInfo(path, step, manifest, tuple(refused))
    if refused:
        raise CheckpointError(
            f"no intact checkpoint under {root}: {len(refused)} refused, newest: {refused[0]}; "
            "delete the folder to start the stage over"
        )
    return None


def _check_file(path: Path, name: str, manifest: dict[str, Any]) -> Path:
    """Stream the file's sha256 against the manifest (no second copy in memory)."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint {path} has no file '{name}' in its {MANIFEST}")
    fpath = path / name
    got = sha256_file(fpath)
    if got != entry["sha256"]:
        raise CheckpointError(f"checkpoint file {fpath} has sha256 {got[:12]}..., {MANIFEST} says {entry['sha256'][:12]}...: the file is corrupt")
    return fpath


def _where(ckpt: "CheckpointInfo | str | os.PathLike") -> tuple[Path, dict[str, Any]]:
    if isinstance(ckpt, CheckpointInfo):
        return ckpt.path, ckpt.manifest
    path = Path(ckpt)
    return path, verify_checkpoint(path)


def load_tensors(ckpt: CheckpointInfo | str | os.PathLike, name: str, device: str = "cpu") -> dict[str, "torch.Tensor"]:
    """Read one safetensors file of a checkpoint (no pickle), checking its sha256 first."""
    from safetensors.torch import load_file

    path, manifest = _where(ckpt)
    return load_file(str(_check_file(path, name, manifest)), device=device)


@contextlib.contextmanager
def open_tensors(ckpt: CheckpointInfo | str | os.PathLike, name: str) -> Iterator[Any]:
    """A lazy safetensors reader (``.keys()``, ``.get_tensor(key)``) over one checkpoint file,
    after its sha256 check: a rank reads only the tensors it needs."""
    from safetensors import safe_open

    path, manifest = _where(ckpt)
    with safe_open(str(_check_file(path, name, manifest)), framework="pt") as fh:
        yield fh


def load_json(ckpt: CheckpointInfo | str | os.PathLike, name: str = "meta.json") -> Any:
    """Read one JSON file of a checkpoint, checking its sha256 first."""
    path, manifest = _where(ckpt)
    fpath = _check_file(path, name, manifest)
    return json.loads(fpath.read_bytes())


def prune(root: str | os.PathLike, keep_last: int) -> list[Path]:
    """Keep the ``keep_last`` newest complete checkpoints; delete older ones and leftover
    temporary folders of writers that died. Returns what was deleted."""
    root = Path(root)
    deleted: list[Path] = []
    complete = [p for _, p in checkpoint_dirs(root) if (p / MANIFEST).is_file()]
    for p in complete[keep_last:]:
        shutil.rmtree(p, ignore_errors=True)
        deleted.append(p)
    for p in root.iterdir() if root.is_dir() else []:
        if p.name.startswith(".tmp-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            deleted.append(p)
    return deleted


def copy_checkpoint(src: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Any]:
    """Copy a verified checkpoint folder's files into ``dest`` (e.g. a pipeline artifact
    folder), MANIFEST.json last, and verify the copy. Returns the manifest."""
    src, dest = Path(src), Path(dest)
    manifest = verify_checkpoint(src)
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(manifest["files"]):
        shutil.copyfile(src / name, dest / name)
        _fsync_file(dest / name)
    shutil.copyfile(src / MANIFEST, dest / MANIFEST)
    _fsync_file(dest / MANIFEST)
    _fsync_dir(dest)
    verify_checkpoint(dest)
    return manifest

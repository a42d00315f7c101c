"""The dataset-version layout: a directory holding ``manifest.jsonl`` plus media files.

One JSON object per line, one clip per object::

    {"id": "c000001",            # unique clip id
     "split": "train",           # train | eval (eval is the benchmark)
     "source": "src0001",        # the source a clip was cut from; never shared across splits
     "video": "clips/c000001.mp4",   # paths are relative to the dataset root
     "audio": "clips/c000001.wav",
     "fps": 8, "num_frames": 25, "width": 32, "height": 32,   # num_frames = 4k+1
     "sample_rate": 8000,
     "sha256": {"clips/c000001.mp4": "<hex>", "clips/c000001.wav": "<hex>",
                "refs/c000001_R1.png": "<hex>", ...},        # every media file of the clip
     "script": {... MTSS script, see data/mtss.py ...},
     "world": {...}}             # optional: synthetic-world truth (colours, voices) for metrics

Media paths must stay inside the dataset root. This module reads and writes that layout
and owns the path-safety rule every consumer uses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "MANIFEST",
    "SPLITS",
    "ManifestLine",
    "media_paths",
    "read_manifest",
    "resolve_media",
    "sha256_file",
    "write_manifest",
]

MANIFEST = "manifest.jsonl"
SPLITS = ("train", "eval")


@dataclass(frozen=True, slots=True)
class ManifestLine:
    """One line of a manifest: its 1-based line number, the decoded row, or the JSON error."""

    lineno: int
    text: str
    row: dict[str, Any] | None
    error: str | None = None


def read_manifest(root: str | os.PathLike) -> Iterator[ManifestLine]:
    """Yield every non-blank line of ``<root>/manifest.jsonl``. A line that is not a JSON
    object comes back with ``row=None`` and ``error`` set; it never stops the read."""
    path = Path(root) / MANIFEST
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield ManifestLine(n, text, None, f"malformed JSON at column {exc.colno}: {exc.msg}")
                continue
            if not isinstance(row, dict):
                yield ManifestLine(n, text, None, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield ManifestLine(n, text, row)


def write_manifest(root: str | os.PathLike, rows: list[dict[str, Any]], name: str = MANIFEST) -> Path:
    """Write rows atomically (temporary file, fsync, rename): readers see the old manifest or
    the new one, never half of one."""
    path = Path(root) / name
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":"), sort_keys=False))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def media_paths(row: dict[str, Any]) -> list[str]:
    """Every media path a row cites: video, audio and the script's reference media."""
    out = [row[k] for k in ("video", "audio") if isinstance(row.get(k), str)]
    script = row.get("script")
    if isinstance(script, dict):
        for ent in script.get("reference") or []:
            if isinstance(ent, dict):
                for k in ("reference_image", "reference_audio"):
                    if isinstance(ent.get(k), str):
                        out.append(ent[k])
    return out


def resolve_media(root: str | os.PathLike, rel: str) -> Path:
    """Resolve a manifest media path inside ``root``. Raises ValueError when the path is
    absolute, climbs out with ``..``, or is (or passes through) a symlink leading outside."""
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise ValueError(f"media path '{rel}' is absolute; use a path relative to the dataset root")
    parts = Path(rel).parts
    if ".." in parts:
        raise ValueError(f"media path '{rel}' climbs out of the dataset root with '..'")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"media path '{rel}' resolves outside the dataset root (a symlink out)")
    return target

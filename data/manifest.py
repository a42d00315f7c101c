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
     "script": {... MTSS script, see mavin_ops/mtss.py ...},
     "world": {...}}             # optional: synthetic-world truth (colours, voices) for metrics

Media paths must stay inside the dataset root. This module reads and writes that layout
and owns the path-safety rule every consumer uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from mavin_ops.fsutil import fsync_dir

__all__ = [
    "MANIFEST",
    "SPLITS",
    "ManifestLine",
    "atomic_writer",
    "decode_line",
    "media_path_problem",
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


#: The longest manifest line read (a clip's row is a few kilobytes).
MAX_LINE_BYTES = 1 << 20


def decode_line(lineno: int, text: str) -> ManifestLine | None:
    """Decode one manifest line: None for a blank line, else a :class:`ManifestLine` whose
    ``row`` is the JSON object or whose ``error`` says why the line is not one. This is the
    single rule :func:`read_manifest` and the validator share."""
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return ManifestLine(lineno, text, None, f"malformed JSON at column {exc.colno}: {exc.msg}")
    except (RecursionError, ValueError) as exc:  # nested too deep; a number of over 4300 digits
        return ManifestLine(lineno, text[:200], None, f"JSON that cannot be read ({type(exc).__name__})")
    if not isinstance(row, dict):
        return ManifestLine(lineno, text, None, f"expected a JSON object, got {type(row).__name__}")
    from mavin_ops.bounded import lone_surrogate

    if bad := lone_surrogate(row):
        return ManifestLine(lineno, text[:200], None, f"a string holds a lone UTF-16 surrogate ({bad}); write the character itself")
    return ManifestLine(lineno, text, row)


def read_manifest(root: str | os.PathLike) -> Iterator[ManifestLine]:
    """Yield every non-blank line of ``<root>/manifest.jsonl``. A line that is not a JSON
    object comes back with ``row=None`` and ``error`` set; it never stops the read."""
    path = Path(root) / MANIFEST
    with open(path, "rb") as fh:
        for n, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):  # over the cap: read no more of it, skip the rest
                while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield ManifestLine(n, "", None, f"longer than {MAX_LINE_BYTES} bytes; a manifest line describes one clip")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ManifestLine(n, "", None, f"byte {exc.start} is not UTF-8; a manifest is UTF-8 text")
                continue
            line = decode_line(n, text)
            if line is not None:
                yield line


@contextmanager
def atomic_writer(root: str | os.PathLike, name: str = MANIFEST, mode: str = "w") -> Iterator[IO[Any]]:
    """Open ``<root>/<name>`` for writing through a temporary file that is flushed, fsynced
    and renamed onto the name when the block ends, then the folder is fsynced; readers see
    the old file or the new one, never half of one. On any error (in the block, the fsync or
    the rename) the temporary file is removed and the old file is left as it was. The
    temporary name is unique (pid + random), so two writers in one process never share it.
    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. The one atomic file write of the project
    (:func:`mavin_ops.evaluation.results.write_json` uses it)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', got {mode!r}")
    path = Path(root) / name
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "x" if mode == "w" else "xb", **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_manifest(root: str | os.PathLike, rows: Iterable[dict[str, Any]], name: str = MANIFEST) -> Path:
    """Write rows atomically (see :func:`atomic_writer`). ``rows`` may be any iterable, so
    a large manifest can stream through."""
    with atomic_writer(root, name) as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":"), sort_keys=False))
            fh.write("\n")
    return Path(root) / name


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in blocks: the one file digest of the project."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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


def media_path_problem(rel: Any) -> str | None:
    """The lexical part of the path-safety rule, with no file-system access: why ``rel`` can
    never be a media path inside a dataset root (empty, absolute, or climbing out with
    ``..``), or None. :func:`resolve_media` adds the symlink check."""
    if not isinstance(rel, str):
        return f"media path {rel!r} is not a string; give a path relative to the dataset root"
    if not rel:
        return "media path is empty; give a path relative to the dataset root"
    if os.path.isabs(rel) or rel.startswith(("/", "\\")):
        return f"media path '{rel}' is absolute; use a path relative to the dataset root"
    if ".." in rel and ".." in Path(rel).parts:
        return f"media path '{rel}' climbs out of the dataset root with '..'"
    return None


def resolve_media(root: str | os.PathLike, rel: str) -> Path:
    """Resolve a manifest media path inside ``root``. Raises ValueError when the path is
    absolute, climbs out with ``..``, or is (or passes through) a symlink leading outside."""
    problem = media_path_problem(rel)
    if problem is not None:
        raise ValueError(problem)
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"media path '{rel}' resolves outside the dataset root (a symlink out)")
    return target

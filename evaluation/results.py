"""The ``metrics.json`` file: what the runner writes and the gate reads.

Layout (``schema`` = :data:`SCHEMA`)::

    {"schema": "mavin-ops/metrics/v1",
     "benchmark": {"id": "eval@3f2a...", "digest": "<sha256>", "n_clips": 8, "path": "..."},
     "generated": {"path": "...", "n_clips": 8},
     "config": {...evaluation config, detectors included...},
     "metrics": {"sta": {"mean": 0.97, "count": 8, "missing": 0}, ...,
                 "val_loss_video": {"mean": 0.41, "count": 1, "missing": 0, "per_clip": false}},
     "clips": [{"id": "c000001", "metrics": {"sta": 1.0, "cisc": null, ...},
                "notes": {"cisc": "no pairs"}, "details": {...}}, ...]}

Values are JSON numbers or ``null`` (undefined for that clip; ``notes`` says why).
Non-finite numbers are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so the
file stays strict JSON, and read back as floats so the gate sees them and fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable
from mavin_ops.errors import MavinError

__all__ = [
    "METRICS_FILE",
    "SCHEMA",
    "MetricsFileError",
    "benchmark_digest",
    "decode_nonfinite",
    "encode_nonfinite",
    "parse_metrics",
    "read_metrics",
    "write_json",
]

SCHEMA = "mavin-ops/metrics/v1"
METRICS_FILE = "metrics.json"
_NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class MetricsFileError(MavinError, ValueError):
    """A metrics.json that cannot be used: names the file and the field."""


def encode_nonfinite(obj: Any) -> Any:
    """Replace non-finite floats by their string names, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: encode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_nonfinite(v) for v in obj]
    return obj


def decode_nonfinite(obj: Any) -> Any:
    """Inverse of :func:`encode_nonfinite` for metric values."""
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: decode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_nonfinite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write strict JSON atomically through :func:`mavin_ops.data.manifest.atomic_writer`
    (unique temporary file, fsync, rename, folder fsync; nothing left behind on error)."""
    from mavin_ops.data.manifest import atomic_writer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(encode_nonfinite(data), indent=2, allow_nan=False) + "\n"  # fails before any file is opened
    with atomic_writer(path.parent, path.name) as fh:
        fh.write(text)
    return path


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a metrics.json; raises :class:`MetricsFileError` naming the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise MetricsFileError(f"{path}: no such metrics file; run 'mavin-ops evaluate' first or pass the right path")
    from mavin_ops.bounded import InputError, read_bytes

    try:
        raw = read_bytes(path, "a metrics.json", limit=256 << 20)
    except InputError as exc:
        raise MetricsFileError(str(exc)) from None
    return parse_metrics(raw, str(path))


def parse_metrics(raw: bytes, path: str) -> dict[str, Any]:
    """Check the bytes of a metrics.json read from ``path`` (named in errors)."""
    from mavin_ops.bounded import InputError, load_json

    try:
        data = load_json(raw.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise MetricsFileError(f"{path}: not UTF-8 text; regenerate it with 'mavin-ops evaluate'") from None
    except InputError as exc:
        raise MetricsFileError(f"{exc}; regenerate it with 'mavin-ops evaluate'") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        import reprlib

        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise MetricsFileError(f"{path}: schema is {reprlib.repr(got)}, expected {SCHEMA!r}; regenerate it with 'mavin-ops evaluate'")
    for key, kind in (("benchmark", dict), ("metrics", dict), ("clips", list)):
        if not isinstance(data.get(key), kind):
            raise MetricsFileError(f"{path}: field '{key}' must be a JSON {'object' if kind is dict else 'array'}")
    for n, clip in enumerate(data["clips"]):
        if not isinstance(clip, dict) or not isinstance(clip.get("id"), str) or not isinstance(clip.get("metrics"), dict):
            raise MetricsFileError(f"{path}: clips[{n}] needs a string 'id' and a 'metrics' object")
    return decode_nonfinite(data)


def benchmark_digest(rows: Iterable[dict[str, Any]]) -> str:
    """A content digest of benchmark rows: clip ids, scripts, media hashes and world truth,
    in id order. Two evaluations are comparable only when their digests agree."""
    canon = []
    for row in sorted(rows, key=lambda r: str(r.get("id"))):
        canon.append(
            {
                "id": row.get("id"),
                "script": row.get("script"),
                "sha256": row.get("sha256"),
                "fps": row.get("fps"),
                "num_frames": row.get("num_frames"),
                "sample_rate": row.get("sample_rate"),
                "world": row.get("world"),
            }
        )
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()

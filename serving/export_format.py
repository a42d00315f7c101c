"""The export folder's format, and how it is read back: ``export.json`` (format, config,
lineage, every file's sha256) beside the ONNX parts. Written by :mod:`export`; read by the
serving runners (:mod:`pipeline`) and the repository builder, without the exporter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mavin_ops.data.manifest import sha256_file
from mavin_ops.safety import safe_join

__all__ = ["EXPORT_FORMAT", "EXPORT_MANIFEST", "read_export"]

EXPORT_FORMAT = "mavin-ops/onnx-export"
EXPORT_MANIFEST = "export.json"


def read_export(export_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """``export.json`` of an export folder, with ``model_config`` (a ``ModelConfig``) added;
    ``verify`` checks every file's sha256."""
    from mavin_ops.model.config import ModelConfig

    root = Path(export_dir)
    mpath = root / EXPORT_MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{root} is not an export folder (no {EXPORT_MANIFEST}); run the export first")
    info = json.loads(mpath.read_text(encoding="utf-8"))
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{mpath}: format '{info.get('format')}' is not {EXPORT_FORMAT}")
    if verify:
        for rel, entry in info["files"].items():
            p = safe_join(root, rel, f"file listed in {mpath}")
            if not p.is_file():
                raise FileNotFoundError(f"export file {p} is missing; re-run the export")
            if sha256_file(p) != entry["sha256"]:
                raise ValueError(f"export file {p} does not match its sha256 in {EXPORT_MANIFEST}; the export is corrupt, re-run it")
    info["model_config"] = ModelConfig.from_dict(info["config"])
    return info

"""Build the Triton model repository from an export folder.

Layout (one build, both variants from one :class:`~.spec.RepositorySpec`)::

    <out>/mavin_repository.json           version, variants, models, lineage, file sha256s
    <out>/onnxruntime/<model>/config.pbtxt ONNX Runtime platform for the ONNX parts
    <out>/onnxruntime/<model>/<version>/model.onnx | model.py, mavin_model.json
    <out>/python/<model>/config.pbtxt      Python backend running the same ONNX files
    <out>/python/<model>/<version>/model.onnx + model.py, mavin_model.json

``mavin_model.json`` beside every model's weights holds the model config, the checkpoint
sha256, the lineage ids (MLflow run, dataset digest, git commit, release) and the export's
digest, so a served version can be walked back to what made it. The build is written to a
staging folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mavin_ops.safety import safe_join

from mavin_ops.data.manifest import sha256_file

from .export import EXPORT_MANIFEST, read_export, replace_dir
from .spec import ENTRY_MODEL, VARIANTS, RepositorySpec, ServingLimits, describe, render_config
from mavin_ops.errors import MavinError


class RepositoryError(MavinError, ValueError):
    """A model repository folder that cannot be trusted (format, a file that does not match)."""

__all__ = [
    "MODEL_INFO",
    "REPOSITORY_FORMAT",
    "REPOSITORY_MANIFEST",
    "BuildResult",
    "build_repository",
    "export_and_build",
    "read_repository",
    "variant_dir",
]

REPOSITORY_FORMAT = "mavin-ops/triton-repository"
REPOSITORY_MANIFEST = "mavin_repository.json"
MODEL_INFO = "mavin_model.json"
_SOURCES = Path(__file__).resolve().parent / "triton_models"


@dataclass
class BuildResult:
    path: Path
    version: int
    spec: RepositorySpec
    manifest: dict[str, Any]

    def variant(self, name: str) -> Path:
        return self.path / name


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_repository(
    export_dir: str | Path,
    out_dir: str | Path,
    *,
    version: int = 1,
    variants: tuple[str, ...] = VARIANTS,
    max_batch_size: int = 8,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 0,
    instances: int = 1,
    sampler_instances: int = 1,
    ort_threads: int = 1,
    limits: ServingLimits | None = None,
    overwrite: bool = False,
) -> BuildResult:
    """Write the model repository for the export in ``export_dir`` (verified first)."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown repository variant '{v}'; use {', '.join(VARIANTS)}")
    export_dir = Path(export_dir)
    info = read_export(export_dir)
    config = info["model_config"]
    spec = describe(
        config,
        version=version,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        sampler_instances=sampler_instances,
        ort_threads=ort_threads,
        limits=limits,
    )
    for m in spec.models:  # the description and the export must agree on every name
        if m.kind != "onnx":
            continue
        part = info["parts"].get(m.name)
        if part is None:
            raise ValueError(f"export {export_dir} has no part '{m.name}'; re-run the export")
        if part["inputs"] != [t.name for t in m.inputs] or part["outputs"] != [t.name for t in m.outputs]:
            raise ValueError(f"export {export_dir}: part '{m.name}' has inputs {part['inputs']} / outputs {part['outputs']}, the repository description expects {[t.name for t in m.inputs]} / {[t.name for t in m.outputs]}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"repository folder {out} is not empty; pass overwrite=True or choose a new folder")
    export_digest = sha256_file(export_dir / EXPORT_MANIFEST)
    common = {
        "version": version,
        "config": info["config"],
        "checkpoint": info["checkpoint"],
        "lineage": info["lineage"],
        "export": {"sha256": export_digest, "created": info["created"], "versions": info["versions"]},
    }
    parts_io = {
        m.name: {t.name: {"dims": list(t.dims), "reshape": list(t.reshape) if t.reshape is not None else None} for t in m.inputs}
        for m in spec.models
        if m.kind == "onnx"
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        for variant in variants:
            for m in spec.models:
                mdir = stage / variant / m.name
                vdir = mdir / str(version)
                vdir.mkdir(parents=True)
                (mdir / "config.pbtxt").write_text(render_config(m, variant), encoding="utf-8")
                model_info: dict[str, Any] = {"format": REPOSITORY_FORMAT, "model": m.name, "variant": variant, **common}
                if m.kind == "onnx":
                    part = info["parts"][m.name]
                    _link_or_copy(safe_join(export_dir, part["file"], f"part file of {export_dir}"), vdir / "model.onnx")
                    for extra in part["external_data"]:  # names read from export.json: checked before any write
                        src, dst = safe_join(export_dir, extra, f"external data of {export_dir}"), safe_join(vdir, extra, f"external data of {export_dir}")
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        _link_or_copy(src, dst)
                    model_info["onnx"] = {"file": "model.onnx", "sha256": info["files"][part["file"]]["sha256"], "parity_max_abs_diff": part["parity_max_abs_diff"]}
                    if variant == "python":
                        shutil.copyfile(_SOURCES / "onnx_runner.py", vdir / "model.py")
                else:
                    shutil.copyfile(_SOURCES / "generate.py", vdir / "model.py")
                    model_info["parts_io"] = parts_io
                (vdir / MODEL_INFO).write_text(json.dumps(model_info, indent=1, sort_keys=True), encoding="utf-8")
        files = {}
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                files[p.relative_to(stage).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        manifest = {
            "format": REPOSITORY_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "variants": list(variants),
            "models": list(spec.names),
            "entry_model": ENTRY_MODEL,
            "batching": {"max_batch_size": max_batch_size, "dynamic_batching": dynamic_batching, "max_queue_delay_us": max_queue_delay_us, "instances": instances},
            **common,
            "files": files,
        }
        (stage / REPOSITORY_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return BuildResult(out, version, spec, manifest)


def read_repository(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """``mavin_repository.json`` of a built (or fetched) repository; ``verify`` checks the
    sha256 of every file it lists."""
    root = Path(path)
    mpath = root / REPOSITORY_MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{root} is not a mavin-ops model repository (no {REPOSITORY_MANIFEST}); build one with build_repository")
    info = json.loads(mpath.read_text(encoding="utf-8"))
    if info.get("format") != REPOSITORY_FORMAT:
        raise RepositoryError(f"{mpath}: format '{info.get('format')}' is not {REPOSITORY_FORMAT}")
    if verify:
        for rel, entry in info["files"].items():
            p = safe_join(root, rel, f"file listed in {mpath}")
            if not p.is_file() or sha256_file(p) != entry["sha256"]:
                raise RepositoryError(f"repository file {p} is missing or does not match its sha256 in {REPOSITORY_MANIFEST}; rebuild or re-fetch the repository")
    return info


def variant_dir(path: str | Path, variant: str) -> Path:
    """The Triton model repository folder of ``variant`` inside a build."""
    info = read_repository(path)
    if variant not in info["variants"]:
        raise ValueError(f"repository {path} has no '{variant}' variant (it has {', '.join(info['variants'])})")
    return Path(path) / variant


def export_and_build(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    export_dir: str | Path | None = None,
    version: int = 1,
    lineage: dict[str, str] | None = None,
    tolerance: float = 1e-4,
    log=None,
    **build_options: Any,
) -> tuple[Any, BuildResult]:
    """``mavin-ops export``: export ``checkpoint`` to ONNX (parity-checked) into
    ``export_dir`` (default ``<out_dir>.onnx``) and build the model repository at
    ``out_dir``. Returns (ExportResult, BuildResult)."""
    from .export import export_model

    out = Path(out_dir)
    onnx_dir = Path(export_dir) if export_dir else out.parent / f"{out.name}.onnx"
    exported = export_model(checkpoint, onnx_dir, lineage=lineage, tolerance=tolerance, overwrite=True, log=log)
    built = build_repository(onnx_dir, out, version=version, overwrite=True, **build_options)
    return exported, built

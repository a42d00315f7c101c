"""ONNX export of every served part, with a parity check that fails the export.

Parts (each one ONNX file, dynamo exporter, dynamic batch and sequence axes):

- ``text_encoder``: (ids, segment, position) (B, L) int64 -> text (B, L, text_dim);
- ``denoiser``: one velocity step of both towers, routing and identity masks as inputs
  (``model/export.py``: ``export_denoiser``);
- ``video_decoder``: latent (B, C, T', H', W') -> frames (B, F, H, W, 3) in [-1, 1];
- ``audio_decoder``: latent (B, N, C) -> waveform (B, N * hop).

For every part: ``onnx.checker``; external-data locations must stay inside the export folder;
then ONNX Runtime must match torch on the same inputs, max abs diff <= ``tolerance`` (1e-4,
fp32), on the tracing example *and* on a second example with other batch and sequence sizes.
Any failure raises :class:`ExportError` and leaves nothing at the destination: the export is
written to a staging folder and renamed into place only when every check passed.

``export.json`` beside the files holds the model config, the checkpoint's sha256, the lineage
ids (MLflow run, dataset digest, git commit, release), the parity results and every file's
sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from mavin_ops.fsutil import replace_dir  # noqa: F401  (the one folder swap: repository.py imports it from here)
from mavin_ops.errors import MavinError
from mavin_ops.data.manifest import sha256_file

from .export_format import EXPORT_FORMAT, EXPORT_MANIFEST, read_export  # noqa: F401  (read back without the exporter)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mavin_ops.model import MavinModel
    from mavin_ops.model.config import ModelConfig

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_MANIFEST",
    "LINEAGE_KEYS",
    "ExportError",
    "ExportResult",
    "ModelSource",
    "check_external_data",
    "check_parity",
    "export_model",
    "load_source",
    "read_export",
]

#: The lineage ids an export (and the served repository) carries.
LINEAGE_KEYS = ("mlflow_run_id", "dataset_digest", "git_commit", "release_id", "kfp_run_id", "stage")
PART_ORDER = ("audio_decoder", "video_decoder", "text_encoder", "denoiser")  # cheap parts first: fail fast


class ExportError(MavinError, RuntimeError):
    """The export cannot be trusted (checker, external data or parity failed)."""


# --------------------------------------------------------------------------- the source checkpoint


@dataclass
class ModelSource:
    """A loaded model and where it came from."""

    model: "MavinModel"
    checkpoint: str
    checkpoint_sha256: str
    kind: str  # safetensors | training-checkpoint | in-memory
    lineage: dict[str, str] = field(default_factory=dict)


def load_source(checkpoint: str | Path) -> ModelSource:
    """Load a model checkpoint (see :func:`_load_source`); a file that is not one is an
    :class:`ExportError` naming it."""
    try:
        return _load_source(checkpoint)
    except (ValueError, KeyError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ExportError(f"{checkpoint} is not a usable mavin-ops checkpoint: {' '.join(str(exc).split())[:300]}") from None


def _load_source(checkpoint: str | Path) -> ModelSource:
    """Load a model from a ``mavin_ops.model`` safetensors checkpoint or a training
    checkpoint folder (``model.safetensors`` + ``meta.json`` + ``MANIFEST.json``).

    The checkpoint hash is the file's sha256, or for a folder the sha256 of its
    MANIFEST.json (which pins every file). Lineage ids come from the safetensors metadata or
    the folder's ``meta.json``."""
    from mavin_ops.model.mavin import load_checkpoint, read_checkpoint_metadata

    path = Path(checkpoint)
    if path.is_dir():
        manifest = path / "MANIFEST.json"
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"checkpoint folder {path} has no model.safetensors; pass a training checkpoint folder (step-*) or a .safetensors file")
        lineage: dict[str, str] = {}
        if manifest.is_file():
            from mavin_ops.training.checkpoint import verify_checkpoint

            verify_checkpoint(path)
            digest, kind = sha256_file(manifest), "training-checkpoint"
            meta_file = path / "meta.json"
            if meta_file.is_file():
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                lineage.update({k: str(v) for k, v in (meta.get("lineage") or {}).items() if v})
                digest_ds = (meta.get("dataset") or {}).get("digest")
                if digest_ds:
                    lineage["dataset_digest"] = str(digest_ds)
                if meta.get("stage"):
                    lineage["stage"] = str(meta["stage"])
        else:
            digest, kind = sha256_file(weights), "safetensors"
        model = load_checkpoint(weights)
        lineage.update({k: v for k, v in read_checkpoint_metadata(weights).items() if k in LINEAGE_KEYS and v})
        return ModelSource(model.eval(), str(path.resolve()), digest, kind, lineage)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a .safetensors checkpoint or a training checkpoint folder")
    meta = read_checkpoint_metadata(path)
    model = load_checkpoint(path)
    lineage = {k: v for k, v in meta.items() if k in LINEAGE_KEYS and v}
    return ModelSource(model.eval(), str(path.resolve()), sha256_file(path), "safetensors", lineage)


# --------------------------------------------------------------------------- graphs


def _modules() -> dict[str, Callable[["MavinModel"], Any]]:
    """The torch module exported for each part (the parity reference is the model itself)."""
    from torch import nn

    class TextEncoderGraph(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.encoder = model.text_encoder

        def forward(self, ids, segment, position):
            return self.encoder(ids, segment, position)

    class VideoDecoderGraph(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.codec = model.video_codec

        def forward(self, latent):
            return self.codec.decode(latent)

    class AudioDecoderGraph(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.codec = model.audio_codec

        def forward(self, latent):
            return self.codec.decode(latent)

    return {"text_encoder": TextEncoderGraph, "video_decoder": VideoDecoderGraph, "audio_decoder": AudioDecoderGraph}


#: Part name -> builder of the module to export. Module level so a test can swap one in.
GRAPH_MODULES: dict[str, Callable[["MavinModel"], Any]] = {}

IO = {
    "text_encoder": (("ids", "segment", "position"), ("text",)),
    "video_decoder": (("latent",), ("frames",)),
    "audio_decoder": (("latent",), ("waveform",)),
}


#: Output names per part, in graph order.
OUTPUTS = {"text_encoder": ["text"], "denoiser": ["video_velocity", "audio_velocity"], "video_decoder": ["frames"], "audio_decoder": ["waveform"]}


def _reference(model: "MavinModel", part: str, inputs: dict[str, "torch.Tensor"]) -> dict[str, np.ndarray]:
    """What torch computes for a part on ``inputs`` (the parity reference): the model's own
    modules, as the in-process torch pipeline runs them."""
    from .pipeline import TorchRunner

    return TorchRunner(model)(part, {k: v.numpy() for k, v in inputs.items()}, OUTPUTS[part])


def _examples(model: "MavinModel", seed: int = 0) -> dict[str, list[dict[str, "torch.Tensor"]]]:
    """Two examples per part: the tracing example (batch 2) and a check example with other
    batch, token and caption sizes (batch 3)."""
    import torch

    from mavin_ops.mtss import compile_caption, parse_script
    from mavin_ops.model.batch import ClipInput, RoleReference
    from mavin_ops.model.export import denoiser_example

    from .examples import example_references, example_script

    cfg = model.config

    def clip(steps: int, customized: int, s: int, cid: str) -> ClipInput:
        script = example_script(cfg, latent_steps=steps, customized=customized, clip_id=cid)
        refs = {r: RoleReference(image=m.get("image"), audio=m.get("audio")) for r, m in example_references(cfg, script, s).items()}
        return ClipInput(compile_caption(parse_script(script)), references=refs)

    g = torch.Generator().manual_seed(seed)
    batches = [
        model.prepare_batch([clip(5, 2, seed, "trace-a"), clip(3, 1, seed + 1, "trace-b")]),
        model.prepare_batch([clip(4, 0, seed + 2, "check-a"), clip(6, 2, seed + 3, "check-b"), clip(2, 1, seed + 4, "check-c")]),
    ]
    out: dict[str, list[dict[str, torch.Tensor]]] = {p: [] for p in PART_ORDER}
    vc, ac = model.video_codec, model.audio_codec
    grids = [((2, 5, 4, 4), (2, 23)), ((3, 3, 2, 6), (1, 11))]
    for n, batch in enumerate(batches):
        B = batch.video.shape[0]
        text_in = dict(ids=batch.text_ids, segment=batch.text_segment, position=batch.text_position)
        out["text_encoder"].append(text_in)
        with torch.no_grad():
            text = model.text_encoder(**text_in)
        t = torch.rand(B, generator=g)
        ex = denoiser_example(batch, text, t)
        ex["video"] = ex["video"] + torch.randn(ex["video"].shape, generator=g) * batch.video_loss_mask[..., None]
        ex["audio"] = ex["audio"] + torch.randn(ex["audio"].shape, generator=g) * batch.audio_loss_mask[..., None]
        out["denoiser"].append(ex)
        (vb, vt, vh, vw), (ab, an) = grids[n]
        out["video_decoder"].append({"latent": torch.randn((vb, vc.channels, vt, vh, vw), generator=g)})
        out["audio_decoder"].append({"latent": torch.randn((ab, an * 3, ac.channels), generator=g)})
    return out


def _export_graph(module, example: dict[str, "torch.Tensor"], names_in, names_out, dynamic: dict[str, dict[int, Any]], path: Path) -> None:
    import torch

    module.eval()
    program = torch.onnx.export(
        module,
        tuple(example[n] for n in names_in),
        dynamo=True,
        input_names=list(names_in),
        output_names=list(names_out),
        dynamic_shapes=tuple(dynamic[n] for n in names_in),
        verbose=False,
    )
    program.save(str(path))


def _dynamic_shapes(part: str) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    B = Dim("batch")
    if part == "text_encoder":
        L = Dim("text_tokens")
        return {n: {0: B, 1: L} for n in ("ids", "segment", "position")}
    if part == "video_decoder":
        return {"latent": {0: B, 2: Dim("latent_steps", min=2), 3: Dim("latent_height"), 4: Dim("latent_width")}}
    return {"latent": {0: B, 1: Dim("audio_tokens")}}


def _export_part(model: "MavinModel", part: str, example: dict[str, "torch.Tensor"], path: Path) -> None:
    """Export one part; the exporter's progress lines and registry warnings are kept quiet."""
    import contextlib
    import io
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            _export_part_loud(model, part, example, path)
    finally:
        quiet.setLevel(level)


def _export_part_loud(model: "MavinModel", part: str, example: dict[str, "torch.Tensor"], path: Path) -> None:
    if part == "denoiser":
        from mavin_ops.model.export import export_denoiser

        builder = GRAPH_MODULES.get("denoiser")
        export_denoiser(builder(model) if builder else model.denoiser, example, path)
        return
    builder = GRAPH_MODULES.get(part) or _modules()[part]
    names_in, names_out = IO[part]
    _export_graph(builder(model), example, names_in, names_out, _dynamic_shapes(part), path)


# --------------------------------------------------------------------------- checks


def check_external_data(path: str | Path, root: str | Path | None = None) -> list[str]:
    """The external-data files ``path`` references (relative to ``root``, default its folder).
    Raises :class:`ExportError` when a location is absolute, escapes ``root`` or is missing."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    path = Path(path)
    root = Path(root or path.parent).resolve()
    model = onnx.load(str(path), load_external_data=False)
    files: set[str] = set()
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        target = (path.parent / loc).resolve()
        if not loc or os.path.isabs(loc) or not target.is_relative_to(root):
            raise ExportError(f"{path.name}: tensor '{tensor.name}' keeps its data at '{loc}', outside the export folder {root}; re-export with external data beside the model")
        if not target.is_file():
            raise ExportError(f"{path.name}: tensor '{tensor.name}' keeps its data in '{loc}', which does not exist in {root}; copy the whole export folder")
        files.add(target.relative_to(root).as_posix())
    return sorted(files)


def check_parity(
    onnx_path: str | Path,
    reference: Callable[[dict[str, Any]], dict[str, np.ndarray]],
    examples: list[dict[str, Any]],
    tolerance: float = 1e-4,
    part: str = "",
) -> float:
    """Run ``onnx_path`` in ONNX Runtime on every example and compare with ``reference``
    (torch); return the largest max-abs difference, or raise :class:`ExportError` when an
    output differs by more than ``tolerance`` or has another shape."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    worst = 0.0
    label = part or Path(onnx_path).stem
    for n, ex in enumerate(examples):
        feed = {k: np.asarray(ex[k].numpy() if hasattr(ex[k], "numpy") else ex[k]) for k in names}
        got = dict(zip(outs, sess.run(outs, feed)))
        want = reference(ex)
        for name, w in want.items():
            g = got[name]
            if g.shape != w.shape:
                raise ExportError(f"parity: {label} output '{name}' has shape {g.shape} in ONNX Runtime but {w.shape} in torch on example {n}; the dynamic axes are wrong")
            diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if g.size else 0.0
            if not diff <= tolerance:
                raise ExportError(f"parity: {label} output '{name}' differs from torch by {diff:.3g} (> {tolerance:g}) on example {n}; the exported graph does not compute the model")
            worst = max(worst, diff)
    return worst


# --------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]

    @property
    def parity(self) -> dict[str, float]:
        return {p: v["parity_max_abs_diff"] for p, v in self.manifest["parts"].items()}


def export_model(
    checkpoint: "str | Path | MavinModel",
    out_dir: str | Path,
    *,
    lineage: dict[str, str] | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export every part of a model to ``out_dir`` (must not exist, or be empty, unless
    ``overwrite``), check each, and write ``export.json``. ``checkpoint`` is a checkpoint path
    (see :func:`load_source`) or an in-memory model; ``lineage`` adds or overrides lineage ids."""
    import onnx
    import torch

    say = log or (lambda _msg: None)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"export folder {out} is not empty; pass overwrite=True or choose a new folder")
    if isinstance(checkpoint, (str, Path)):
        source = load_source(checkpoint)
    else:
        sd = checkpoint.trainable_state_dict()
        h = hashlib.sha256()
        for k in sorted(sd):
            h.update(k.encode())
            h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
        source = ModelSource(checkpoint.eval(), "<in-memory>", h.hexdigest(), "in-memory", {})
    model = source.model
    lin = {**source.lineage, **{k: str(v) for k, v in (lineage or {}).items() if v not in (None, "")}}
    if "git_commit" not in lin:
        from mavin_ops import tracking

        commit, dirty = tracking.git_commit()
        lin["git_commit"] = commit + ("-dirty" if dirty else "")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        examples = _examples(model)
        parts: dict[str, Any] = {}
        from mavin_ops import progress as _progress

        report = _progress.reporter("export ONNX parts", len(PART_ORDER), "part")
        for part in PART_ORDER:
            report.update(0, part=part)
            t0 = time.time()
            file = stage / f"{part}.onnx"
            _export_part(model, part, examples[part][0], file)
            onnx.checker.check_model(str(file))
            external = check_external_data(file, stage)
            worst = check_parity(file, lambda ex, p=part: _reference(model, p, ex), examples[part], tolerance, part)
            graph = onnx.load(str(file), load_external_data=False)
            parts[part] = {
                "file": file.name,
                "external_data": external,
                "inputs": [i.name for i in graph.graph.input],
                "outputs": [o.name for o in graph.graph.output],
                "opset": max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0),
                "parity_max_abs_diff": worst,
                "parity_examples": len(examples[part]),
            }
            say(f"exported {part}: parity max abs diff {worst:.2e} ({time.time() - t0:.1f} s)")
            report.update(1)
        report.close()
        files = {}
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                rel = p.relative_to(stage).as_posix()
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        import onnxruntime

        manifest = {
            "format": EXPORT_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": model.config.to_dict(),
            "checkpoint": {"path": source.checkpoint, "sha256": source.checkpoint_sha256, "kind": source.kind},
            "lineage": lin,
            "tolerance": tolerance,
            "parts": parts,
            "files": files,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        }
        (stage / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportResult(out, manifest)

"""The generation pipeline behind ``mavin_generate``: script -> frames and waveform.

The same code runs inside Triton (the ``mavin_generate`` Python-backend model calls the other
models through BLS) and in-process (the parts run in ONNX Runtime sessions), so the two can be
compared exactly. Only the *runner* differs: ``run(model, inputs) -> outputs``.

One request, in order:

1. refuse bad requests before any inference (:class:`RequestError`, a 4xx-class error): the
   script must parse and be grounded (``mavin_ops/mtss.py``: the same located issues a validator
   reports), respect the serving limits (script size, duration, steps, customized roles,
   reference media size and type), and carry the reference media its customized roles cite;
2. build the model inputs with the model's own batch code (``model.batch.prepare_batch``:
   caption tokens, positions, identity anchors, routing and identity masks);
3. ``text_encoder`` once; then the Euler sampler of ``model.flow`` from t = 1 to 0 where every
   velocity is one ``denoiser`` call; with classifier-free guidance the conditional and the
   null-caption branch go out as one batch of two;
4. ``video_decoder`` and ``audio_decoder`` turn latent tokens into uint8 frames and a waveform.

Noise comes from ``numpy.random.default_rng(seed)``: the same request gives the same clip.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .spec import ServingLimits

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mavin_ops.mtss import Script
    from mavin_ops.model.config import ModelConfig

__all__ = [
    "GenerateRequest",
    "Generated",
    "OrtRunner",
    "Pipeline",
    "RequestError",
    "Runner",
    "TorchRunner",
    "initial_noise",
    "local_pipeline",
]

#: run(model_name, inputs, output_names) -> outputs; arrays carry the batch dimension.
Runner = Callable[[str, dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


class RequestError(ValueError):
    """A request the server refuses before inference (4xx class). One line: what and where."""


@dataclass
class GenerateRequest:
    """One generation request: an MTSS script and the reference media of its customized
    roles (``{role: {"image": (H, W, 3) uint8, "audio": (S,) float32}}``)."""

    script: Any  # dict (decoded JSON) or JSON text/bytes
    references: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None

    def script_bytes(self) -> bytes:
        if isinstance(self.script, bytes):
            return self.script
        if isinstance(self.script, str):
            return self.script.encode("utf-8")
        return json.dumps(self.script).encode("utf-8")

    def to_inputs(self) -> dict[str, np.ndarray]:
        """The ``mavin_generate`` input tensors (Triton wire layout)."""
        out: dict[str, np.ndarray] = {
            "script": np.array([self.script_bytes()], dtype=np.object_),
            "seed": np.array([self.seed], dtype=np.int64),
        }
        if self.steps is not None:
            out["steps"] = np.array([self.steps], dtype=np.int32)
        if self.guidance is not None:
            out["guidance"] = np.array([self.guidance], dtype=np.float32)
        if self.references:
            ids = sorted(self.references)
            out["reference_ids"] = np.array([r.encode("utf-8") for r in ids], dtype=np.object_)
            images = [self.references[r].get("image") for r in ids]
            shapes = {tuple(np.shape(i)) for i in images if i is not None}
            if shapes:
                if len(shapes) > 1:
                    raise RequestError(f"reference images have different sizes {sorted(shapes)}; resize them to one size")
                h, w, _ = next(iter(shapes))
                stack = np.zeros((len(ids), h, w, 3), dtype=np.uint8)
                for n, img in enumerate(images):
                    if img is not None:
                        stack[n] = img
                out["reference_images"] = stack
            voices = [self.references[r].get("audio") for r in ids]
            if any(v is not None for v in voices):
                lengths = [len(v) if v is not None else 0 for v in voices]
                pad = np.zeros((len(ids), max(lengths)), dtype=np.float32)
                for n, v in enumerate(voices):
                    if v is not None:
                        pad[n, : len(v)] = v
                out["reference_audio"] = pad
                out["reference_audio_samples"] = np.array(lengths, dtype=np.int32)
        return out

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, np.ndarray | None]) -> "GenerateRequest":
        """Decode ``mavin_generate`` input tensors; type and shape problems are RequestErrors."""

        def scalar(name: str, kind: type, default: Any) -> Any:
            value = inputs.get(name)
            if value is None:
                return default
            arr = np.asarray(value)
            if arr.size != 1:
                raise RequestError(f"input '{name}': expected one value, got shape {tuple(arr.shape)}")
            return kind(arr.reshape(-1)[0])

        raw = inputs.get("script")
        if raw is None or np.asarray(raw).size != 1:
            raise RequestError("input 'script': expected one JSON document (BYTES, shape [1])")
        script = np.asarray(raw).reshape(-1)[0]
        if not isinstance(script, (bytes, str)):
            raise RequestError(f"input 'script': expected BYTES, got {type(script).__name__}")
        refs: dict[str, dict[str, np.ndarray]] = {}
        ids_raw = inputs.get("reference_ids")
        images = inputs.get("reference_images")
        voices = inputs.get("reference_audio")
        lengths = inputs.get("reference_audio_samples")
        if ids_raw is None and (images is not None or voices is not None):
            raise RequestError("reference media sent without 'reference_ids'; name the role of each reference")
        if ids_raw is not None:
            ids = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.asarray(ids_raw).reshape(-1)]
            if len(set(ids)) != len(ids):
                raise RequestError(f"input 'reference_ids': duplicate role ids {ids}")
            if images is not None and (images.ndim != 4 or images.shape[0] != len(ids) or images.shape[-1] != 3):
                raise RequestError(f"input 'reference_images': expected shape [{len(ids)}, H, W, 3] for {len(ids)} reference ids, got {list(images.shape)}")
            if voices is not None:
                if voices.ndim != 2 or voices.shape[0] != len(ids):
                    raise RequestError(f"input 'reference_audio': expected shape [{len(ids)}, S] for {len(ids)} reference ids, got {list(voices.shape)}")
                if lengths is None or np.asarray(lengths).shape != (len(ids),):
                    raise RequestError(f"input 'reference_audio_samples': expected {len(ids)} lengths, one per reference id")
                if np.any(np.asarray(lengths) < 0) or np.any(np.asarray(lengths) > voices.shape[1]):
                    raise RequestError(f"input 'reference_audio_samples': lengths must be in 0..{voices.shape[1]}")
                if not np.all(np.isfinite(voices)):
                    raise RequestError("input 'reference_audio': has NaN or infinite samples")
            for n, rid in enumerate(ids):
                media: dict[str, np.ndarray] = {}
                if images is not None:
                    media["image"] = np.asarray(images[n])
                if voices is not None and int(lengths[n]) > 0:
                    media["audio"] = np.asarray(voices[n, : int(lengths[n])], dtype=np.float32)
                refs[rid] = media
        guidance = scalar("guidance", float, None)
        if guidance is not None and not math.isfinite(guidance):
            raise RequestError(f"input 'guidance': must be a finite number, got {guidance}")
        return cls(script=script, references=refs, seed=scalar("seed", int, 0), steps=scalar("steps", int, None), guidance=guidance)


@dataclass(frozen=True)
class Generated:
    """A generated clip: frames (F, H, W, 3) uint8 and a mono waveform (S,) float32."""

    clip_id: str
    frames: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int

    def to_outputs(self) -> dict[str, np.ndarray]:
        return {
            "frames": self.frames,
            "audio": self.audio,
            "fps": np.array([self.fps], dtype=np.float32),
            "sample_rate": np.array([self.sample_rate], dtype=np.int32),
            "clip_id": np.array([self.clip_id.encode("utf-8")], dtype=np.object_),
        }

    @classmethod
    def from_outputs(cls, out: Mapping[str, np.ndarray]) -> "Generated":
        cid = np.asarray(out["clip_id"]).reshape(-1)[0]
        return cls(
            cid.decode("utf-8") if isinstance(cid, bytes) else str(cid),
            np.asarray(out["frames"]),
            np.asarray(out["audio"]),
            float(np.asarray(out["fps"]).reshape(-1)[0]),
            int(np.asarray(out["sample_rate"]).reshape(-1)[0]),
        )


class _Front:
    """What ``model.batch.prepare_batch`` reads from a model: config, codecs (for reference
    media), tokenizer. No denoiser weights are built."""

    def __init__(self, config: "ModelConfig"):
        import torch

        self.config = config
        self.video_codec = config.video_codec.build()
        self.audio_codec = config.audio_codec.build()
        self.tokenizer = config.text.build_tokenizer()
        self.codec_device = torch.device("cpu")


class Pipeline:
    """Script -> clip with the parts run by ``run`` (BLS inside Triton, ORT in-process)."""

    def __init__(self, config: "ModelConfig", run: Runner, limits: ServingLimits | None = None):
        self.config = config
        self.run = run
        self.limits = (limits or ServingLimits()).resolved(config)
        self.front = _Front(config)

    # ------------------------------------------------------------------ validation

    def check(self, request: GenerateRequest) -> "Script":
        """The parsed, grounded script of a request that passes every limit; raises
        :class:`RequestError` naming the first problem otherwise."""
        from mavin_ops.mtss import ScriptError, check_script, parse_script

        lim, cfg = self.limits, self.config
        raw = request.script_bytes()
        if len(raw) > lim.max_script_bytes:
            raise RequestError(f"script: {len(raw)} bytes exceeds the limit of {lim.max_script_bytes}; shorten the script")
        if isinstance(request.script, (bytes, str)):
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RequestError(f"script: not valid JSON ({exc}); send the MTSS script as UTF-8 JSON") from None
        else:
            data = request.script
        try:
            script = check_script(parse_script(data), max_customized_roles=lim.max_customized_roles)
        except ScriptError as exc:
            raise RequestError(_issues_line(exc)) from None
        if script.duration > lim.max_duration_s + 1e-9:
            raise RequestError(f"script: clip {script.clip_id} lasts {script.duration:g} s, over the limit of {lim.max_duration_s:g} s; split the scene")
        steps = request.steps if request.steps is not None else cfg.flow.sample_steps
        if not 1 <= steps <= lim.max_steps:
            raise RequestError(f"steps: {steps} is outside 1..{lim.max_steps}")
        self._check_references(script, request.references)
        return script

    def _check_references(self, script: "Script", refs: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        lim, cfg = self.limits, self.config
        custom = {e.id: e for e in script.customized_roles()}
        unknown = sorted(set(refs) - set(custom))
        if unknown:
            raise RequestError(
                f"reference_ids: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a customized role of clip {script.clip_id} "
                f"(customized: {', '.join(custom) or 'none'}); cite the media in the script's reference stream"
            )
        s = cfg.video_codec.spatial_stride * cfg.denoiser.patch_size
        for rid, ent in custom.items():
            media = refs.get(rid, {})
            img, wav = media.get("image"), media.get("audio")
            if ent.reference_image is not None:
                if img is None:
                    raise RequestError(f"reference[{rid}].reference_image: the script cites an image for {rid} but the request has none; send it in reference_images")
                img = np.asarray(img)
                if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                    raise RequestError(f"reference image of {rid}: expected (H, W, 3) uint8, got {img.dtype} {tuple(img.shape)}")
                if max(img.shape[:2]) > lim.max_reference_side:
                    raise RequestError(f"reference image of {rid}: {img.shape[0]}x{img.shape[1]} exceeds the limit of {lim.max_reference_side} px a side; downscale it")
                if img.shape[0] % s or img.shape[1] % s:
                    raise RequestError(f"reference image of {rid}: {img.shape[0]}x{img.shape[1]} is not divisible by {s} (codec stride x patch); crop it")
            if ent.reference_audio is not None:
                if wav is None:
                    raise RequestError(f"reference[{rid}].reference_audio: the script cites a voice for {rid} but the request has none; send it in reference_audio")
                if len(wav) > lim.max_reference_audio_s * cfg.audio_codec.sample_rate:
                    raise RequestError(f"reference voice of {rid}: {len(wav)} samples exceeds the limit of {lim.max_reference_audio_s:g} s at {cfg.audio_codec.sample_rate} Hz")

    # ------------------------------------------------------------------ generation

    def prepare(self, request: GenerateRequest):
        """Check the request and build the model's :class:`~mavin_ops.model.Batch` for it."""
        import torch

        from mavin_ops.mtss import compile_caption
        from mavin_ops.model.batch import ClipInput, RoleReference, prepare_batch

        script = self.check(request)
        refs = {}
        for ent in script.customized_roles():
            media = request.references.get(ent.id, {})
            refs[ent.id] = RoleReference(
                image=media.get("image") if ent.reference_image is not None else None,
                audio=media.get("audio") if ent.reference_audio is not None else None,
            )
        clip = ClipInput(compile_caption(script), references=refs)
        try:
            with torch.no_grad():
                batch = prepare_batch(self.front, [clip])
        except ValueError as exc:
            raise RequestError(str(exc).splitlines()[0]) from None
        if batch.video.shape[1] > self.limits.max_video_tokens:
            raise RequestError(f"script: clip {script.clip_id} needs {batch.video.shape[1]} video tokens, over the limit of {self.limits.max_video_tokens}; shorten the clip")
        return batch

    def encode_text(self, batch) -> "torch.Tensor":
        import torch

        out = self.run("text_encoder", {k: v.numpy() for k, v in zip(("ids", "segment", "position"), (batch.text_ids, batch.text_segment, batch.text_position))}, ["text"])
        return torch.from_numpy(np.ascontiguousarray(out["text"], dtype=np.float32))

    def sample_latents(self, batch, text, z_video, z_audio, steps: int, guidance: float):
        """The Euler sampler of ``model.flow`` from the given initial state; every velocity
        is one ``denoiser`` call (cond + null caption batched together under guidance)."""
        import torch

        from mavin_ops.model.flow import euler_sample

        masks = {k: v.numpy() for k, v in batch.dense_masks().items()}
        fixed = {
            "video_pos": batch.video_pos.numpy(),
            "audio_pos": batch.audio_pos.numpy(),
            "video_role": batch.video_role.numpy().astype(np.int64),
            "audio_role": batch.audio_role.numpy().astype(np.int64),
            **masks,
        }
        text_np = text.detach().numpy()
        stash: dict[str, Any] = {}

        def call(zv: np.ndarray, za: np.ndarray, txt: np.ndarray, t: np.ndarray, repeat: int):
            inputs = {"video": zv, "audio": za, "text": txt, "t": t}
            for k, v in fixed.items():
                inputs[k] = np.concatenate([v] * repeat) if repeat > 1 else v
            out = self.run("denoiser", inputs, ["video_velocity", "audio_velocity"])
            return out["video_velocity"], out["audio_velocity"]

        def velocity(zv: "torch.Tensor", za: "torch.Tensor", t: "torch.Tensor", null: bool):
            if null:  # computed together with the conditional branch of the same step
                if stash.get("t") is not t:
                    raise RuntimeError("the sampler asked for a null branch without its conditional branch")
                return stash.pop("null")
            zv_np, za_np, t_np = zv.detach().numpy(), za.detach().numpy(), t.detach().numpy().astype(np.float32)
            if guidance == 1.0:
                v, a = call(zv_np, za_np, text_np, t_np, 1)
                return torch.from_numpy(v), torch.from_numpy(a)
            B = zv_np.shape[0]
            v, a = call(
                np.concatenate([zv_np, zv_np]),
                np.concatenate([za_np, za_np]),
                np.concatenate([text_np, np.zeros_like(text_np)]),
                np.concatenate([t_np, t_np]),
                2,
            )
            stash["t"], stash["null"] = t, (torch.from_numpy(v[B:]), torch.from_numpy(a[B:]))
            return torch.from_numpy(v[:B]), torch.from_numpy(a[:B])

        return euler_sample(velocity, z_video, z_audio, batch.video_loss_mask, batch.audio_loss_mask, steps, guidance, self.config.flow.shift)

    def decode(self, batch, z_video, z_audio) -> tuple[np.ndarray, np.ndarray]:
        """Latent tokens of the single clip -> (frames uint8, waveform float32)."""
        import torch

        from mavin_ops.model.batch import unpatchify
        from mavin_ops.model.codecs import tensor_to_audio, tensor_to_frames

        meta = batch.clips[0]
        z = unpatchify(z_video[0, : meta.video_tokens].float(), meta.latent_shape, self.config.denoiser.patch_size)
        frames = self.run("video_decoder", {"latent": z[None].numpy()}, ["frames"])["frames"][0]
        wave = self.run("audio_decoder", {"latent": z_audio[:1, : meta.audio_tokens].numpy()}, ["waveform"])["waveform"][0]
        return tensor_to_frames(torch.from_numpy(np.asarray(frames))), tensor_to_audio(torch.from_numpy(np.asarray(wave[: meta.num_samples])))

    def __call__(self, request: GenerateRequest) -> Generated:
        import torch

        batch = self.prepare(request)
        steps = request.steps if request.steps is not None else self.config.flow.sample_steps
        guidance = float(request.guidance) if request.guidance is not None else float(self.config.flow.guidance)
        with torch.no_grad():
            text = self.encode_text(batch)
            eps_v, eps_a = initial_noise(self.config, batch, int(request.seed))
            z_v = torch.where(batch.video_loss_mask[..., None], eps_v, batch.video)
            z_a = torch.where(batch.audio_loss_mask[..., None], eps_a, batch.audio)
            z_v, z_a = self.sample_latents(batch, text, z_v, z_a, steps, guidance)
            frames, audio = self.decode(batch, z_v, z_a)
        return Generated(batch.clips[0].layout.caption.clip_id, frames, audio, float(self.config.video_codec.fps), int(self.config.audio_codec.sample_rate))


def initial_noise(config, batch, seed: int):
    """The sampler's starting noise for a request (numpy's generator, so a seed gives the same
    clip on every server): standard normal audio, and video with the noise prior the model was
    trained with (``flow.video_noise_shared`` of it common over time, model/flow.py)."""
    import torch

    from mavin_ops.model.flow import time_shared_noise

    rng = np.random.default_rng(seed)
    draw = lambda shape: torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))  # noqa: E731
    eps_v, eps_a = draw(batch.video.shape), draw(batch.audio.shape)
    eps_v = time_shared_noise(eps_v, lambda: draw(batch.video.shape), batch.video_pos, config.flow.video_noise_shared, config.video_noise_channel_groups)
    return eps_v, eps_a


def _issues_line(exc: Exception) -> str:
    issues = getattr(exc, "issues", None) or []
    if not issues:
        return str(exc).splitlines()[0]
    head = "; ".join(str(i) for i in issues[:3])
    more = f" (+{len(issues) - 3} more)" if len(issues) > 3 else ""
    return f"invalid script: {head}{more}"


# --------------------------------------------------------------------------- runners


class OrtRunner:
    """Runs exported ONNX files in ONNX Runtime sessions, one per model name.
    ``files`` maps model name -> .onnx path."""

    def __init__(self, files: Mapping[str, str | Path], threads: int = 1):
        import onnxruntime as ort

        self.sessions = {}
        for name, path in files.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self.sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        sess = self.sessions[model]
        feed = {}
        for spec in sess.get_inputs():
            arr = inputs[spec.name]
            if arr.ndim == len(spec.shape) + 1 and arr.shape[-1] == 1:  # Triton's [1] -> per-item scalar
                arr = arr.reshape(arr.shape[:-1])
            feed[spec.name] = arr
        got = sess.run(outputs, feed)
        return dict(zip(outputs, got))


class TorchRunner:
    """Runs the parts in torch (the reference the exported graphs must match)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        import torch

        m = self.model
        x = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
        with torch.no_grad():
            if model == "text_encoder":
                res = {"text": m.text_encoder(x["ids"], x["segment"], x["position"])}
            elif model == "denoiser":
                v, a = m.denoiser(**x)
                res = {"video_velocity": v, "audio_velocity": a}
            elif model == "video_decoder":
                res = {"frames": m.video_codec.decode(x["latent"])}
            elif model == "audio_decoder":
                res = {"waveform": m.audio_codec.decode(x["latent"])}
            else:
                raise KeyError(f"unknown model part '{model}'")
        return {k: res[k].numpy() for k in outputs}


def local_pipeline(export_dir: str | Path, threads: int = 1, limits: ServingLimits | None = None) -> Pipeline:
    """The pipeline over an export folder's ONNX files in in-process ONNX Runtime sessions:
    the reference a served model's answers are compared with."""
    from .export_format import read_export

    info = read_export(export_dir)
    from mavin_ops.safety import safe_join

    files = {name: safe_join(export_dir, part["file"], f"export part '{name}'") for name, part in info["parts"].items()}
    return Pipeline(info["model_config"], OrtRunner(files, threads), limits)

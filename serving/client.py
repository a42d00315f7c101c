"""The client: an MTSS script (plus reference media) -> an mp4 with its audio track.

``mavin-ops generate --script scene.json --out scene.mp4`` calls :func:`generate`:

1. the script is read, parsed and grounded with ``mavin_ops/mtss.py`` *before anything is sent*:
   a bad script raises :class:`~mavin_ops.mtss.ScriptError` with its located issues;
2. the server's limits (customized roles, sample rate) are read from the model config and
   the script is checked against them, still before any inference;
3. the reference media each customized role cites is loaded (paths relative to
   ``media_root``, default the script's folder; ``images`` / ``voices`` override per role);
4. one ``mavin_generate`` request goes out over HTTP or gRPC (``tritonclient``);
5. the frames and waveform that come back are written as an mp4 (``data/media.write_video``).

A request the server refuses raises :class:`RequestRefused` (HTTP 4xx / gRPC INVALID_ARGUMENT)
with the server's one-line message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .pipeline import Generated, GenerateRequest
from .spec import ENTRY_MODEL
from mavin_ops.errors import MavinError

__all__ = [
    "DEFAULT_URLS",
    "GenerateError",
    "GenerateResult",
    "RequestRefused",
    "build_request",
    "connect",
    "generate",
    "infer",
    "server_parameters",
]

DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
_REFUSED_GRPC = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.OUT_OF_RANGE", "StatusCode.FAILED_PRECONDITION"}


class GenerateError(MavinError, RuntimeError):
    """Generation failed on the server or the server could not be reached."""

    def __init__(self, message: str, status: str = ""):
        super().__init__(message)
        self.status = status


class RequestRefused(GenerateError):
    """The server refused the request (a 4xx-class error): fix the request, not the server."""


def _module(protocol: str):
    if protocol == "http":
        import tritonclient.http as mod
    elif protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        raise ValueError(f"unknown protocol '{protocol}'; use 'http' or 'grpc'")
    return mod


def connect(url: str | None = None, protocol: str = "http", timeout_s: float = 600.0):
    """A tritonclient client for ``url`` (host:port; default the local server's port)."""
    mod = _module(protocol)
    url = url or DEFAULT_URLS[protocol]
    if protocol == "http":
        return mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    return mod.InferenceServerClient(url)


def _refused(status: str) -> bool:
    return status in _REFUSED_GRPC or (status.isdigit() and 400 <= int(status) < 500)


def _wrap(exc: Exception, url: str, what: str) -> GenerateError:
    status = str(exc.status() or "") if hasattr(exc, "status") else ""
    message = exc.message() if hasattr(exc, "message") else str(exc)
    message = " ".join(str(message).split())
    if _refused(status):
        return RequestRefused(f"the server at {url} refused the request ({status}): {message}", status)
    return GenerateError(f"{what} at {url} failed ({status or type(exc).__name__}): {message}", status)


def server_parameters(client: Any, model: str = ENTRY_MODEL) -> dict[str, str]:
    """The ``parameters`` of the served model's config (limits, fps, sample rate)."""
    cfg = client.get_model_config(model)
    if isinstance(cfg, dict):  # HTTP: JSON
        return {k: (v.get("string_value", "") if isinstance(v, dict) else str(v)) for k, v in cfg.get("parameters", {}).items()}
    return {k: v.string_value for k, v in cfg.config.parameters.items()}  # gRPC: protobuf


def _load_script(script: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], Path | None]:
    from mavin_ops.mtss import read_script_file

    if isinstance(script, Mapping):
        return dict(script), None
    path = Path(script)
    if not path.exists():
        raise FileNotFoundError(f"script {path} does not exist; pass an MTSS scene script (JSON)")
    return read_script_file(path), path  # bounded: size, depth, a folder named as one


def build_request(
    script: str | Path | Mapping[str, Any],
    *,
    media_root: str | Path | None = None,
    images: Mapping[str, str | Path] | None = None,
    voices: Mapping[str, str | Path] | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    max_customized_roles: int | None = 3,
    sample_rate: int | None = None,
) -> GenerateRequest:
    """Read, parse and ground the script (raising ``ScriptError`` before any network call)
    and load the reference media its customized roles cite."""
    from mavin_ops.data.media import read_png, read_wav
    from mavin_ops.mtss import check_script, parse_script

    data, path = _load_script(script)
    parsed = check_script(parse_script(data), max_customized_roles=max_customized_roles)
    root = Path(media_root) if media_root else (path.parent if path else Path.cwd())
    images, voices = dict(images or {}), dict(voices or {})
    custom = {e.id: e for e in parsed.customized_roles()}
    for rid in sorted(set(images) | set(voices)):
        if rid not in custom:
            raise GenerateError(f"reference media given for {rid}, which is not a customized role of clip {parsed.clip_id} (customized: {', '.join(custom) or 'none'}); cite the media in the script's reference stream")
    refs: dict[str, dict[str, np.ndarray]] = {}
    for rid, ent in custom.items():
        media: dict[str, np.ndarray] = {}
        if ent.reference_image is not None:
            img_path = Path(images.get(rid) or root / ent.reference_image)
            if not img_path.is_file():
                raise FileNotFoundError(f"reference image of {rid} ({img_path}) does not exist; pass --media-root or the image for {rid}")
            media["image"] = read_png(img_path)
        if ent.reference_audio is not None:
            wav_path = Path(voices.get(rid) or root / ent.reference_audio)
            if not wav_path.is_file():
                raise FileNotFoundError(f"reference voice of {rid} ({wav_path}) does not exist; pass --media-root or the voice for {rid}")
            wave, sr = read_wav(wav_path)
            if sample_rate is not None and sr != sample_rate:
                raise GenerateError(f"reference voice of {rid} ({wav_path}) is {sr} Hz; the served model takes {sample_rate} Hz: resample it")
            media["audio"] = wave
        refs[rid] = media
    return GenerateRequest(script=data, references=refs, seed=seed, steps=steps, guidance=guidance)


def infer(request: GenerateRequest, client: Any, protocol: str = "http", model: str = ENTRY_MODEL, url: str = "") -> Generated:
    """Send one request through ``client`` and decode the answer."""
    mod = _module(protocol)
    inputs = []
    for name, arr in request.to_inputs().items():
        dtype = "BYTES" if arr.dtype == np.object_ else mod.np_to_triton_dtype(arr.dtype)
        item = mod.InferInput(name, list(arr.shape), dtype)
        item.set_data_from_numpy(arr)
        inputs.append(item)
    outputs = [mod.InferRequestedOutput(n) for n in ("frames", "audio", "fps", "sample_rate", "clip_id")]
    try:
        result = client.infer(model, inputs, outputs=outputs)
    except Exception as exc:  # tritonclient raises InferenceServerException (and socket errors)
        raise _wrap(exc, url or "the server", "generation") from None
    return Generated.from_outputs({n: result.as_numpy(n) for n in ("frames", "audio", "fps", "sample_rate", "clip_id")})


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    clip_id: str
    num_frames: int
    height: int
    width: int
    fps: float
    audio_samples: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def generate(
    script: str | Path | Mapping[str, Any],
    out: str | Path,
    *,
    url: str | None = None,
    protocol: str = "http",
    model: str = ENTRY_MODEL,
    media_root: str | Path | None = None,
    images: Mapping[str, str | Path] | None = None,
    voices: Mapping[str, str | Path] | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    timeout_s: float = 600.0,
) -> GenerateResult:
    """``mavin-ops generate``: script -> ``out`` (mp4 with its audio track) via the server."""
    from mavin_ops.data.media import write_video

    build_request(script, media_root=media_root, images=images, voices=voices)  # refuse bad scripts before any network call
    url = url or DEFAULT_URLS[protocol]
    client = connect(url, protocol, timeout_s)
    try:
        try:
            params = server_parameters(client, model)
        except Exception as exc:
            raise _wrap(exc, url, f"reading the config of model '{model}'") from None
        roles = params.get("limit.max_customized_roles")
        rate = params.get("sample_rate")
        request = build_request(
            script,
            media_root=media_root,
            images=images,
            voices=voices,
            seed=seed,
            steps=steps,
            guidance=guidance,
            max_customized_roles=int(roles) if roles else 3,
            sample_rate=int(rate) if rate else None,
        )
        clip = infer(request, client, protocol, model, url)
    finally:
        client.close()
    fps = int(round(clip.fps))
    if not math.isclose(fps, clip.fps, abs_tol=1e-6):
        raise GenerateError(f"the served model runs at {clip.fps} fps; mp4 output needs a whole number of frames per second")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, clip.frames, fps, clip.audio, clip.sample_rate)
    F, H, W, _ = clip.frames.shape
    return GenerateResult(out, clip.clip_id, F, H, W, clip.fps, len(clip.audio), clip.sample_rate)

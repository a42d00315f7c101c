"""Media I/O for dataset clips: lossless mp4, 16-bit PCM wav, png, and :func:`load_clip`.

Video is stored losslessly (H.264 in RGB, ``libx264rgb`` at crf 0) so the frames a model
trains on are exactly the frames the generator drew, while the file still opens in an
ordinary player. The mp4 also carries the clip's audio as an AAC track, for people only:
AAC is lossy, so the exact audio a model and a metric read is the clip's wav file.

Every writer is deterministic: the same arrays give byte-identical files (one encoder
thread, bit-exact muxing, no creation time), which is what lets a dataset version be
identified by the sha256 of its files.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest as _manifest
from mavin_ops import mtss
from mavin_ops.errors import MavinError

__all__ = [
    "Clip",
    "MediaError",
    "load_clip",
    "read_png",
    "read_video",
    "read_wav",
    "write_png",
    "write_video",
    "write_wav",
]

_PCM_SCALE = 32767.0
_AAC_FRAME = 1024  # samples per AAC frame


class MediaError(MavinError, ValueError):
    """A media file that cannot be read or written, or does not match its manifest row."""


def _check_frames(frames: np.ndarray, where: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise MediaError(f"{where}: frames must be uint8 (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise MediaError(f"{where}: H.264 needs even height and width, got {frames.shape[1]}x{frames.shape[2]}")
    return np.ascontiguousarray(frames)


def _check_waveform(waveform: np.ndarray, where: str) -> np.ndarray:
    w = np.asarray(waveform)
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.floating):
        raise MediaError(f"{where}: waveform must be a 1-D float array (mono), got {w.dtype} {w.shape}")
    if not np.all(np.isfinite(w)):
        raise MediaError(f"{where}: waveform has NaN or infinite samples")
    return w.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- video


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 8000,
) -> None:
    """Write ``frames`` (F, H, W, 3) uint8 as a lossless mp4 at ``fps`` frames per second.

    ``audio`` (mono float in [-1, 1]) is muxed as an AAC track for viewing. Bytes are
    deterministic: the same inputs always give the same file.
    """
    import av

    where = str(path)
    frames = _check_frames(frames, where)
    if not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise MediaError(f"{where}: fps must be a positive integer, got {fps!r}")
    if audio is not None:
        audio = np.clip(_check_waveform(audio, where), -1.0, 1.0)
    _, height, width, _ = frames.shape
    # bitexact: no library version strings or times in the container, so bytes only depend
    # on the frames and the encoder build.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream(
            "libx264rgb", rate=int(fps), options={"crf": "0", "preset": "medium", "threads": "1"}
        )
        video.width, video.height, video.pix_fmt = width, height, "rgb24"
        video.codec_context.thread_count = 1
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=int(sample_rate))
            astream.layout = "mono"
            astream.bit_rate = 32000
            astream.codec_context.thread_count = 1
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if astream is not None and audio is not None:
            for start in range(0, len(audio), _AAC_FRAME):
                chunk = audio[start : start + _AAC_FRAME][None, :]  # (1, n)
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                aframe.sample_rate = int(sample_rate)
                aframe.pts = start
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, int | float]:
    """Decode every frame of the first video stream: ``(frames (F, H, W, 3) uint8, fps)``.
    ``fps`` is an int when the stream rate is whole."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: cannot decode video: {exc}") from None
    if not frames:
        raise MediaError(f"{path}: the video stream has no frames")
    fps: int | float = 0
    if rate is not None:
        r = Fraction(rate)
        fps = int(r) if r.denominator == 1 else float(r)
    return np.stack(frames), fps


# --------------------------------------------------------------------------- audio


def read_video_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The mono audio track of an mp4 written by :func:`write_video` (decoded AAC, float
    [-1, 1]) and its sample rate; :class:`MediaError` when there is none."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: no audio track")
            rate = int(container.streams.audio[0].rate)
            chunks = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode its audio ({exc})") from None
    return (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)), rate


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> None:
    """Write a mono float waveform in [-1, 1] as 16-bit PCM (samples clipped, then rounded
    to the nearest multiple of 1/32767)."""
    w = np.clip(_check_waveform(waveform, str(path)), -1.0, 1.0)
    pcm = np.round(w.astype(np.float64) * _PCM_SCALE).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(sample_rate))
        fh.writeframes(pcm.tobytes())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM mono wav: ``(waveform float32 in [-1, 1], sample_rate)``."""
    try:
        with wave.open(str(path), "rb") as fh:
            if fh.getnchannels() != 1 or fh.getsampwidth() != 2:
                raise MediaError(
                    f"{path}: expected mono 16-bit PCM, got {fh.getnchannels()} channels of {8 * fh.getsampwidth()} bits"
                )
            sample_rate = fh.getframerate()
            data = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise MediaError(f"{path}: cannot read wav: {exc}") from None
    pcm = np.frombuffer(data, dtype="<i2")
    return (pcm.astype(np.float32) / np.float32(_PCM_SCALE)), int(sample_rate)


# --------------------------------------------------------------------------- images


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB image (H, W, 3) uint8 as png (deterministic, no metadata)."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise MediaError(f"{path}: image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    Image.fromarray(np.ascontiguousarray(img), mode="RGB").save(str(path), format="PNG", optimize=False)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read a png as RGB (H, W, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(str(path)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"{path}: cannot read png: {exc}") from None


# --------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One dataset clip in memory.

    ``frames`` (F, H, W, 3) uint8 at ``fps``; ``waveform`` (F / fps * sample_rate,) float32;
    ``ref_images`` / ``ref_audio`` map a customized role's entity id to its reference image
    (H, W, 3) uint8 / reference waveform float32 (added to the brief's fields).
    """

    id: str
    split: str
    frames: np.ndarray
    waveform: np.ndarray
    sample_rate: int
    fps: int
    script: mtss.Script
    row: dict[str, Any]
    ref_images: dict[str, np.ndarray] = field(default_factory=dict)
    ref_audio: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def _media_path(root: str | os.PathLike, rel: Any, cid: str, what: str) -> Path:
    if not isinstance(rel, str):
        raise MediaError(f"clip {cid}: manifest field '{what}' must be a relative path string, got {rel!r}")
    try:
        path = _manifest.resolve_media(root, rel)
    except ValueError as exc:
        raise MediaError(f"clip {cid}: {what}: {exc}") from None
    if not path.is_file():
        raise MediaError(f"clip {cid}: {what} file '{rel}' is missing under {root}; regenerate the dataset or fix the manifest")
    return path


def load_clip(root: str | os.PathLike, row: dict[str, Any], verify: bool = False) -> Clip:
    """Load one manifest row: the mp4 frames, the exact wav, the parsed MTSS script and the
    reference media of customized roles. Paths resolve inside ``root`` with
    :func:`manifest.resolve_media`. With ``verify`` each file's sha256 is checked too.
    Every error names the clip id and the file."""
    cid = str(row.get("id", "?"))

    def get(rel: Any, what: str) -> Path:
        p = _media_path(root, rel, cid, what)
        if verify:
            want = (row.get("sha256") or {}).get(rel)
            got = _manifest.sha256_file(p)
            if want != got:
                raise MediaError(f"clip {cid}: {what} file '{rel}' has sha256 {got[:12]}..., the manifest says {str(want)[:12]}...; the file changed")
        return p

    video_rel, audio_rel = row.get("video"), row.get("audio")
    try:
        script = mtss.parse_script(row.get("script"), clip_id=cid)
    except mtss.ScriptError as exc:
        raise MediaError(f"clip {cid}: manifest field 'script' is not a valid MTSS script: {exc}") from None
    video_path, audio_path = get(video_rel, "video"), get(audio_rel, "audio")
    try:
        frames, fps = read_video(video_path)
    except MediaError as exc:
        raise MediaError(f"clip {cid}: video '{video_rel}': {exc}") from None
    try:
        waveform, sample_rate = read_wav(audio_path)
    except MediaError as exc:
        raise MediaError(f"clip {cid}: audio '{audio_rel}': {exc}") from None

    want_fps = row.get("fps", fps)
    if fps != want_fps:
        raise MediaError(f"clip {cid}: video '{video_rel}' runs at {fps} fps, the manifest says {want_fps}")
    want_frames = row.get("num_frames", frames.shape[0])
    if frames.shape[0] != want_frames:
        raise MediaError(f"clip {cid}: video '{video_rel}' has {frames.shape[0]} frames, the manifest says {want_frames}")
    for key, axis in (("height", 1), ("width", 2)):
        if key in row and frames.shape[axis] != row[key]:
            raise MediaError(f"clip {cid}: video '{video_rel}' is {frames.shape[axis]} pixels in {key}, the manifest says {row[key]}")
    want_sr = row.get("sample_rate", sample_rate)
    if sample_rate != want_sr:
        raise MediaError(f"clip {cid}: audio '{audio_rel}' is {sample_rate} Hz, the manifest says {want_sr}")
    want_len = round(frames.shape[0] / fps * sample_rate) if fps else len(waveform)
    if len(waveform) != want_len:
        raise MediaError(
            f"clip {cid}: audio '{audio_rel}' has {len(waveform)} samples, expected {want_len} ({frames.shape[0]} frames at {fps} fps)"
        )

    ref_images: dict[str, np.ndarray] = {}
    ref_audio: dict[str, np.ndarray] = {}
    for ent in script.reference:
        if ent.reference_image is not None:
            image_path = get(ent.reference_image, f"reference_image of {ent.id}")
            try:
                ref_images[ent.id] = read_png(image_path)
            except MediaError as exc:
                raise MediaError(f"clip {cid}: reference image '{ent.reference_image}': {exc}") from None
        if ent.reference_audio is not None:
            wav_path = get(ent.reference_audio, f"reference_audio of {ent.id}")
            try:
                ref_audio[ent.id], ref_sr = read_wav(wav_path)
            except MediaError as exc:
                raise MediaError(f"clip {cid}: reference audio '{ent.reference_audio}': {exc}") from None
            if ref_sr != sample_rate:
                raise MediaError(f"clip {cid}: reference audio '{ent.reference_audio}' is {ref_sr} Hz, the clip is {sample_rate} Hz")
    return Clip(
        id=cid,
        split=str(row.get("split", "")),
        frames=frames,
        waveform=waveform,
        sample_rate=int(sample_rate),
        fps=int(fps),
        script=script,
        row=row,
        ref_images=ref_images,
        ref_audio=ref_audio,
    )

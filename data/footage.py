"""Detectors for real footage: what ``data ingest`` measures in a source video and what the
footage evaluation profile measures in a generated clip.

Every detector runs from weights that ship inside an installed package, so nothing is
downloaded at run time:

- **shots**: PySceneDetect's ``ContentDetector`` (HSV frame differences) for hard cuts, and a
  linearity test of our own for gradual transitions (a dissolve's middle frame is the mean of
  the frames either side of it; motion inside a shot is not);
- **speech**: Silero VAD (``silero_vad/data/silero_vad.jit``);
- **speakers**: Resemblyzer's speaker encoder (``resemblyzer/pretrained.pt``), utterance
  embeddings grouped by average-linkage clustering on cosine distance;
- **faces**: OpenCV's Haar cascade ``haarcascade_frontalface_default.xml`` (ships in
  opencv-python-headless); identities by the correlation of aligned grey face crops.

:func:`detector_info` names each detector with its package version and the sha256 of its
weight file: ingest writes it into every manifest row, so a clip says how it was measured.
The thresholds live in :class:`DetectorSettings`; the defaults were checked on footage made
in the tests (hard cuts and a dissolve at known times, espeak-ng speech in two voices).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mavin_ops.data.manifest import sha256_file

__all__ = [
    "ANALYSIS_RATE",
    "DecodeError",
    "DetectorSettings",
    "FaceSighting",
    "Footage",
    "Transition",
    "decode_footage",
    "detect_faces",
    "detect_shots",
    "detect_speech",
    "detector_info",
    "embed_voices",
    "face_descriptor",
    "group_faces",
    "group_speakers",
]

#: Sample rate of the analysis audio (Silero VAD and Resemblyzer both take 16 kHz).
ANALYSIS_RATE = 16000
#: Width of the frames the shot detectors read (height keeps the aspect ratio).
SHOT_WIDTH = 96
#: Width of the grey frames the face detector reads.
FACE_WIDTH = 320


class DecodeError(ValueError):
    """A source that cannot be read as a video (not a video, unreadable, truncated)."""


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds of the footage detectors (the preset may override them)."""

    #: ContentDetector threshold on its HSV score, and the shortest shot in seconds.
    cut_threshold: float = 27.0
    min_shot_s: float = 0.25
    #: Gradual transitions: half-window in seconds, the least change across the window
    #: (mean absolute difference, 0-255 levels), and how far the middle frame may sit from the
    #: mean of its neighbours as a share of that change.
    gradual_half_window_s: tuple[float, ...] = (0.2, 0.4)
    gradual_min_change: float = 18.0
    gradual_max_nonlinearity: float = 0.3
    #: Silero VAD: speech probability threshold, shortest speech and silence in ms, padding.
    vad_threshold: float = 0.5
    vad_min_speech_ms: int = 250
    vad_min_silence_ms: int = 150
    vad_pad_ms: int = 30
    #: Two utterances whose speaker embeddings are closer than this cosine similarity (average
    #: linkage) share a speaker. espeak-ng voices: same voice 0.78-0.84, other voice 0.41-0.52.
    speaker_similarity: float = 0.65
    #: Faces: how many frames a second the detector reads, the smallest face as a share of the
    #: frame height, and the crop correlation above which two faces are one person.
    face_rate: float = 4.0
    face_min_share: float = 0.12
    face_similarity: float = 0.6


@dataclass(frozen=True)
class Transition:
    """A shot boundary: the source time where the new shot starts, and its kind."""

    t: float
    kind: str  # hard | gradual
    span: tuple[float, float]  # the frames the transition spans (equal ends for a hard cut)

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 4), "kind": self.kind, "span": [round(self.span[0], 4), round(self.span[1], 4)]}


@dataclass
class FaceSighting:
    """One detected face: when, where (x, y, w, h as shares of the frame), its descriptor
    (:func:`face_descriptor`) and a colour portrait crop at the output size."""

    t: float
    box: tuple[float, float, float, float]
    descriptor: np.ndarray
    portrait: np.ndarray


@dataclass
class Footage:
    """A decoded source, at the resolutions the detectors and the dataset writer need.

    ``times`` (N,) the presentation time of each decoded frame in seconds from the first;
    ``small`` (N, h, SHOT_WIDTH, 3) uint8 for the shot detectors; ``out`` (N, H, W, 3) uint8
    centre-cropped and scaled to the output size; ``face_times`` (M,) the times the face
    detector looked (``face_rate`` a second) and ``faces`` what it saw; ``audio16`` mono
    float32 at 16 kHz and ``audio_out`` at ``out_rate`` (None without an audio track).
    """

    fps: float
    duration_s: float
    width: int
    height: int
    codec: str
    times: np.ndarray
    small: np.ndarray
    out: np.ndarray
    face_times: np.ndarray
    faces: list["FaceSighting"]
    audio16: np.ndarray | None
    audio_out: np.ndarray | None
    out_rate: int
    problems: list[str] = field(default_factory=list)
    #: Seconds spent detecting faces while decoding (reported as its own stage).
    face_seconds: float = 0.0
    #: The spans (source seconds, on the video's clock) that the audio stream covers; the
    #: audio arrays hold silence elsewhere (a late start, a gap, an early end).
    audio_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def has_audio(self) -> bool:
        return self.audio16 is not None


# --------------------------------------------------------------------------- lineage


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


@functools.lru_cache(maxsize=1)
def _weights() -> dict[str, Path]:
    import cv2
    import resemblyzer
    import silero_vad

    return {
        "speech": Path(silero_vad.__file__).parent / "data" / "silero_vad.jit",
        "speakers": Path(resemblyzer.__file__).parent / "pretrained.pt",
        "faces": Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml",
    }


@functools.lru_cache(maxsize=1)
def _detector_info() -> dict[str, dict[str, Any]]:
    w = _weights()
    return {
        "shots": {"name": "pyscenedetect-content+linearity-dissolve", "package": "scenedetect-headless",
                  "version": _version("scenedetect-headless"), "weights_sha256": None},
        "speech": {"name": "silero-vad", "package": "silero-vad", "version": _version("silero-vad"),
                   "weights": w["speech"].name, "weights_sha256": sha256_file(w["speech"])},
        "speakers": {"name": "resemblyzer-voice-encoder", "package": "Resemblyzer", "version": _version("Resemblyzer"),
                     "weights": w["speakers"].name, "weights_sha256": sha256_file(w["speakers"])},
        "faces": {"name": "opencv-haar-frontalface", "package": "opencv-python-headless",
                  "version": _version("opencv-python-headless"), "weights": w["faces"].name,
                  "weights_sha256": sha256_file(w["faces"])},
    }


def detector_info() -> dict[str, dict[str, Any]]:
    """Each detector's name, package version, weight file and its sha256 (a fresh copy)."""
    return {k: dict(v) for k, v in _detector_info().items()}


# --------------------------------------------------------------------------- decoding


def _crop_to_aspect(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop ``img`` (H, W, C) to the aspect ratio ``width:height``."""
    h, w = img.shape[:2]
    if w * height > h * width:  # too wide
        cw = max(1, round(h * width / height))
        x0 = (w - cw) // 2
        return img[:, x0 : x0 + cw]
    ch = max(1, round(w * height / width))
    y0 = (h - ch) // 2
    return img[y0 : y0 + ch]


def decode_footage(
    path: str | os.PathLike,
    out_size: tuple[int, int],
    out_rate: int,
    settings: DetectorSettings = DetectorSettings(),
) -> Footage:
    """Decode every frame and the audio of ``path`` once, keeping only what the detectors and
    the writer need (see :class:`Footage`). ``out_size`` is (width, height). Raises
    :class:`DecodeError` for a file that is not a video or whose stream breaks off early."""
    import av

    out_w, out_h = out_size
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise DecodeError(f"not a readable video ({exc.__class__.__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise DecodeError("has no video stream")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        declared = None
        if vstream.duration is not None and vstream.time_base is not None:
            declared = float(vstream.duration * vstream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1e6
        rate = vstream.average_rate or vstream.guessed_rate
        times: list[float] = []
        small: list[np.ndarray] = []
        out: list[np.ndarray] = []
        faces: list[FaceSighting] = []
        face_times: list[float] = []
        face_seconds = 0.0
        next_face = 0.0
        # Audio is kept as (time, mono samples at the stream's rate) chunks and laid on the
        # video's clock by its timestamps once decoding ends: a track that starts late or has
        # gaps stays in sync, and the spans it covers are known.
        to_mono = av.AudioResampler(format="flt", layout="mono") if astream else None
        chunks: list[tuple[float | None, int, np.ndarray]] = []
        problems: list[str] = []
        t0: float | None = None
        shift = 0.0
        sh: int | None = None
        streams = [vstream] + ([astream] if astream is not None else [])
        try:
            for frame in container.decode(*streams):
                if isinstance(frame, av.AudioFrame):
                    for f in to_mono.resample(frame):
                        chunks.append((frame.time, int(f.sample_rate), f.to_ndarray().reshape(-1)))
                    continue
                t = float(frame.time if frame.time is not None else len(times) / float(rate or 25)) + shift
                if t0 is None:
                    t0 = t
                elif t - t0 <= times[-1] - 0.5 / float(rate or 25):
                    # Timestamps that jump back (files joined end to end, a reset clock): the
                    # picture goes on one frame later.
                    shift += times[-1] + t0 + 1.0 / float(rate or 25) - t
                    t = times[-1] + t0 + 1.0 / float(rate or 25)
                # Scaled by swscale straight from the decoded picture (about twice as fast as
                # converting the whole frame to RGB first); full RGB only for the face looks.
                # The shot frames keep the first frame's shape if the stream changes size.
                w, h = frame.width, frame.height
                sh = sh or max(2, round(SHOT_WIDTH * h / w))
                small.append(frame.to_ndarray(width=SHOT_WIDTH, height=sh, format="rgb24", interpolation="AREA"))
                if w * out_h > h * out_w:  # wider than the output: scale to its height, crop the sides
                    scaled = (max(out_w, round(out_h * w / h)), out_h)
                else:
                    scaled = (out_w, max(out_h, round(out_w * h / w)))
                big = frame.to_ndarray(width=scaled[0], height=scaled[1], format="rgb24", interpolation="AREA")
                out.append(np.ascontiguousarray(_crop_to_aspect(big, out_w, out_h)[:out_h, :out_w]))
                if t - t0 >= next_face - 1e-6:
                    tf = time.perf_counter()
                    face_times.append(t - t0)
                    faces.extend(_sightings(frame.to_ndarray(format="rgb24"), t - t0, (out_w, out_h), settings))
                    next_face += 1.0 / settings.face_rate
                    face_seconds += time.perf_counter() - tf
                times.append(t - t0)
        except (av.FFmpegError, OSError) as exc:
            problems.append(f"the stream breaks off at {times[-1] if times else 0.0:.2f} s ({exc.__class__.__name__})")
        if to_mono is not None:
            for f in to_mono.resample(None):
                chunks.append((None, int(f.sample_rate), f.to_ndarray().reshape(-1)))
        if not times:
            raise DecodeError("has no decodable video frames" + (f": {problems[0]}" if problems else ""))
        fps = float(rate) if rate else (len(times) - 1) / max(times[-1], 1e-6)
        duration = times[-1] + 1.0 / fps
        audio16 = audio_out = None
        spans: list[tuple[float, float]] = []
        if chunks:
            audio16, audio_out, spans = _lay_audio(chunks, t0, duration, int(out_rate))
        # A container's declared length may be the longer of its streams (an intact file whose
        # audio outlasts its picture): compare it with the longer decoded stream.
        decoded = max(duration, spans[-1][1] if spans else 0.0)
        if declared and decoded < 0.9 * declared:
            problems.append(f"decoded {decoded:.2f} s of a declared {declared:.2f} s (truncated file)")
        if problems:
            raise DecodeError("; ".join(problems))
        return Footage(
            fps=fps, duration_s=duration, width=int(vstream.codec_context.width), height=int(vstream.codec_context.height),
            codec=str(vstream.codec_context.name), times=np.asarray(times), small=np.stack(small), out=np.stack(out),
            face_times=np.asarray(face_times), faces=faces, face_seconds=face_seconds, audio16=audio16, audio_out=audio_out,
            out_rate=int(out_rate), audio_spans=[s for s in spans if s[0] < duration],
        )


def _lay_audio(chunks: list[tuple[float | None, int, np.ndarray]], t0: float, duration: float,
               out_rate: int) -> tuple[np.ndarray | None, np.ndarray | None, list[tuple[float, float]]]:
    """Place decoded audio chunks (presentation time or None for "right after the previous
    one", sample rate, mono samples) on the video's clock from ``t0``; return the track at
    16 kHz and at ``out_rate`` over [0, duration) (silence where no audio was) and the spans
    in seconds that audio covers (the full decoded extent, which may run past ``duration``)."""
    from scipy.signal import resample_poly

    sr = chunks[0][1]
    placed: list[tuple[int, np.ndarray]] = []
    cursor = 0
    for t, rate_k, x in chunks:
        if rate_k != sr:  # a mid-stream rate change: bring the chunk to the first rate
            x = resample_poly(x, sr, rate_k).astype(np.float32)
        start = cursor if t is None else int(round((float(t) - t0) * sr))
        if placed and start < cursor - sr // 10:  # the clock jumped back (joined files): go on after
            start = cursor
        # Timestamps jitter by a sample or two between frames: keep the stream contiguous
        # unless they say there is a real gap (or an overlap) of over 5 ms.
        if t is not None and abs(start - cursor) <= max(1, sr // 200) and placed:
            start = cursor
        placed.append((start, x))
        cursor = start + len(x)
    spans: list[tuple[float, float]] = []
    for start, x in placed:
        a, b = start / sr, (start + len(x)) / sr
        if len(x) == 0:
            continue
        if spans and a <= spans[-1][1] + 1e-3:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    spans = [(max(0.0, a), b) for a, b in spans if b > 0]
    if not spans:
        return None, None, []
    n = int(np.ceil(duration * sr))
    track = np.zeros(n, np.float32)
    for start, x in placed:
        lo, hi = max(0, start), min(n, start + len(x))
        if hi > lo:
            track[lo:hi] = x[lo - start : hi - start]

    def at(rate_out: int) -> np.ndarray:
        if rate_out == sr:
            return track.copy()
        g = np.gcd(int(rate_out), int(sr))
        return resample_poly(track, rate_out // g, sr // g).astype(np.float32)

    return at(ANALYSIS_RATE), at(out_rate), [(round(a, 4), round(b, 4)) for a, b in spans]


# --------------------------------------------------------------------------- shots


def detect_shots(small: np.ndarray, times: np.ndarray, fps: float,
                 settings: DetectorSettings = DetectorSettings()) -> list[Transition]:
    """Hard cuts (PySceneDetect ``ContentDetector``) and gradual transitions (a linearity test)
    in frames ``small`` (N, h, w, 3) RGB at ``times``. Each transition's ``t`` is the time of
    the first frame of the new shot (for a dissolve, its middle)."""
    import cv2
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    n = len(small)
    min_len = max(1, round(settings.min_shot_s * fps))
    det = ContentDetector(threshold=settings.cut_threshold, min_scene_len=min_len)
    hard: list[int] = []
    for i in range(n):
        bgr = cv2.cvtColor(small[i], cv2.COLOR_RGB2BGR)
        for tc in det.process_frame(FrameTimecode(i, fps), bgr):
            hard.append(int(tc.frame_num))
    for tc in det.post_process(FrameTimecode(max(n - 1, 0), fps)):
        hard.append(int(tc.frame_num))
    hard = sorted({i for i in hard if 0 < i < n})
    out = [Transition(float(times[i]), "hard", (float(times[i]), float(times[i]))) for i in hard]

    # Gradual: f(t) ~ (f(t-k) + f(t+k)) / 2 while f(t-k) and f(t+k) differ, with no hard cut
    # inside the window. Consecutive hits form one transition, placed at its middle frame.
    f = small.astype(np.float32)
    hit = np.zeros(n, bool)
    for half in settings.gradual_half_window_s:
        k = max(2, round(half * fps))
        if n <= 2 * k:
            continue
        a, m, b = f[: n - 2 * k], f[k : n - k], f[2 * k :]
        change = np.abs(b - a).mean(axis=(1, 2, 3))
        nonlin = np.abs(m - (a + b) / 2).mean(axis=(1, 2, 3))
        ok = (change >= settings.gradual_min_change) & (nonlin <= settings.gradual_max_nonlinearity * change)
        for j in np.nonzero(ok)[0]:
            c = j + k
            if not any(c - k <= h <= c + k for h in hard):
                hit[c] = True
    runs: list[tuple[int, int]] = []
    for i in np.nonzero(hit)[0]:
        if runs and i - runs[-1][1] <= 2:
            runs[-1] = (runs[-1][0], int(i))
        else:
            runs.append((int(i), int(i)))
    for s, e in runs:
        c = (s + e) // 2
        if all(abs(c - h) >= min_len for h in hard):
            out.append(Transition(float(times[c]), "gradual", (float(times[s]), float(times[e]))))
    return sorted(out, key=lambda tr: tr.t)


# --------------------------------------------------------------------------- speech


@functools.lru_cache(maxsize=1)
def _vad_model():
    import silero_vad

    return silero_vad.load_silero_vad(onnx=False)


def detect_speech(audio16: np.ndarray, settings: DetectorSettings = DetectorSettings()) -> list[tuple[float, float]]:
    """Speech spans ``[(start, end), ...]`` in seconds of 16 kHz mono audio (Silero VAD)."""
    import silero_vad
    import torch

    if audio16 is None or audio16.size < ANALYSIS_RATE // 10:
        return []
    spans = silero_vad.get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(audio16, dtype=np.float32)), _vad_model(), sampling_rate=ANALYSIS_RATE,
        threshold=settings.vad_threshold, min_speech_duration_ms=settings.vad_min_speech_ms,
        min_silence_duration_ms=settings.vad_min_silence_ms, speech_pad_ms=settings.vad_pad_ms,
        return_seconds=True, time_resolution=3,
    )
    return [(float(s["start"]), float(s["end"])) for s in spans]


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def embed_voices(audio16: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    """One unit-length speaker embedding (256-d, Resemblyzer) per speech span."""
    if not spans:
        return np.zeros((0, 256), np.float32)
    enc = _voice_encoder()
    rows = []
    for s, e in spans:
        seg = audio16[int(s * ANALYSIS_RATE) : int(e * ANALYSIS_RATE)].astype(np.float32)
        peak = float(np.abs(seg).max()) if seg.size else 0.0
        if peak > 0:
            seg = seg / peak * 0.9
        rows.append(enc.embed_utterance(seg))
    return np.stack(rows).astype(np.float32)


def _cluster(vectors: np.ndarray, similarity: float) -> list[int]:
    """Average-linkage clusters of unit vectors cut at cosine ``similarity``; labels 0, 1, ...
    in order of first appearance."""
    n = len(vectors)
    if n == 0:
        return []
    if n == 1:
        return [0]
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(vectors, method="average", metric="cosine")
    raw = fcluster(z, t=1.0 - similarity, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(r), len(order)) for r in raw]


def group_speakers(embeddings: np.ndarray, settings: DetectorSettings = DetectorSettings()) -> list[int]:
    """A speaker index per utterance (0, 1, ... in order of first speech)."""
    return _cluster(embeddings, settings.speaker_similarity)


# --------------------------------------------------------------------------- faces


@functools.lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    cascade = cv2.CascadeClassifier(str(_weights()["faces"]))
    if cascade.empty():
        raise RuntimeError(f"cannot load the face cascade {_weights()['faces']}")
    return cascade


def detect_faces(grey: np.ndarray, settings: DetectorSettings = DetectorSettings()) -> list[tuple[int, int, int, int]]:
    """Frontal faces in one grey frame: ``[(x, y, w, h), ...]`` in its pixels."""
    side = max(12, round(settings.face_min_share * grey.shape[0]))
    found = _face_cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    return [tuple(int(v) for v in box) for box in (found if len(found) else [])]


def _sightings(rgb: np.ndarray, t: float, out_size: tuple[int, int], settings: DetectorSettings) -> list[FaceSighting]:
    """Detect faces in one RGB frame and keep, for each, a portrait crop (head and
    shoulders: the face box grown 2x, at the output aspect) scaled to ``out_size``."""
    import cv2

    h, w = rgb.shape[:2]
    fh = max(2, round(FACE_WIDTH * h / w))
    grey = cv2.cvtColor(cv2.resize(rgb, (FACE_WIDTH, fh), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    out: list[FaceSighting] = []
    sx, sy = w / FACE_WIDTH, h / fh
    ow, oh = out_size
    for box in detect_faces(grey, settings):
        x, y, bw, bh = box
        cx, cy = (x + bw / 2) * sx, (y + bh / 2) * sy
        side_h = min(h, 2.0 * bh * sy)
        side_w = min(w, side_h * ow / oh)
        side_h = side_w * oh / ow
        x0 = int(np.clip(cx - side_w / 2, 0, w - side_w))
        y0 = int(np.clip(cy - side_h / 2, 0, h - side_h))
        crop = rgb[y0 : y0 + int(side_h), x0 : x0 + int(side_w)]
        portrait = cv2.resize(crop, (ow, oh), interpolation=cv2.INTER_AREA)
        desc = face_descriptor(grey, box)
        if not np.any(desc):  # a flat patch (no contrast) is no face, and has no direction to compare
            continue
        out.append(FaceSighting(t, (x / FACE_WIDTH, y / fh, bw / FACE_WIDTH, bh / fh), desc, portrait))
    return out


def face_descriptor(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A unit-length descriptor of a face: its crop scaled to 24x24, zero mean."""
    import cv2

    x, y, w, h = box
    crop = cv2.resize(grey[y : y + h, x : x + w], (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    crop -= crop.mean()
    norm = float(np.linalg.norm(crop))
    return crop / norm if norm > 0 else crop


def group_faces(descriptors: np.ndarray, settings: DetectorSettings = DetectorSettings()) -> list[int]:
    """A person index per face detection (0, 1, ... in order of first sight)."""
    return _cluster(descriptors, settings.face_similarity)


def settings_dict(settings: DetectorSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["gradual_half_window_s"] = list(settings.gradual_half_window_s)
    return d

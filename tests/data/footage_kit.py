"""Footage made at test time, never by the synthetic generator: PyAV encodes shots of a real
photograph (matplotlib's ``grace_hopper.jpg``, a face) and of moving shapes, with hard cuts
and a dissolve at known times, and real speech from espeak-ng (``espeakng-loader`` ships the
library and its voices) in two voices. Every maker returns the truth it put in."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

VOICES = ("en+m3", "en+f4")


@functools.lru_cache(maxsize=1)
def _espeak():
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(1, 0, espeakng_loader.get_data_path().encode(), 0)  # 1: retrieval mode
    if rate <= 0:
        raise RuntimeError("espeak-ng failed to initialise")
    chunks: list[np.ndarray] = []
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def on_audio(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = proto(on_audio)
    lib.espeak_SetSynthCallback(callback)
    return lib, rate, chunks, callback


@functools.lru_cache(maxsize=64)
def speak(voice: str, text: str, rate: int) -> np.ndarray:
    """espeak-ng speech at ``rate`` Hz, trimmed to its audible part (float32, peak 0.5)."""
    from scipy.signal import resample_poly

    lib, native, chunks, _ = _espeak()
    chunks.clear()
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise RuntimeError(f"espeak-ng has no voice {voice}")
    raw = text.encode()
    lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 0, None, None)
    lib.espeak_Synchronize()
    wav = np.concatenate(chunks).astype(np.float32) / 32768.0
    loud = np.nonzero(np.abs(wav) > 0.01)[0]
    wav = wav[loud[0] : loud[-1] + 1]
    g = np.gcd(rate, native)
    out = resample_poly(wav, rate // g, native // g).astype(np.float32)
    return out / np.abs(out).max() * 0.5


@functools.lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return np.asarray(img.convert("RGB"))


def _face_frame(u: float, w: int, h: int) -> np.ndarray:
    """The photograph, slowly zooming (u in [0, 1] along the shot)."""
    import cv2

    photo = _photo()
    ph, pw = photo.shape[:2]
    scale = 1.0 - 0.08 * u
    cw = int(pw * scale)
    ch = min(ph, int(cw * h / w))
    y0 = int((ph - ch) * 0.25)
    x0 = (pw - cw) // 2
    return cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)


def _shapes_frame(u: float, w: int, h: int, palette: int) -> np.ndarray:
    """A coloured gradient with a disc crossing it (palette picks the colours)."""
    import cv2

    colours = [((30, 60, 160), (200, 90, 40)), ((20, 140, 60), (240, 220, 80)), ((120, 30, 120), (60, 200, 220))]
    a, b = (np.array(c, np.float32) for c in colours[palette % len(colours)])
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    img = (a * (1 - ramp) + b * ramp).repeat(h, axis=0).astype(np.uint8)
    img = np.ascontiguousarray(img)
    cx, cy = int(w * (0.2 + 0.6 * u)), int(h * 0.5)
    cv2.circle(img, (cx, cy), max(4, h // 6), (250, 250, 250), -1)
    return img


@dataclass
class Shot:
    kind: str  # face | shapes
    seconds: float
    palette: int = 0


@dataclass
class Truth:
    path: Path
    duration_s: float
    cuts_s: list[float] = field(default_factory=list)  # hard cuts: first frame of the new shot
    dissolves_s: list[tuple[float, float]] = field(default_factory=list)  # span of each dissolve
    speech_s: list[tuple[float, float]] = field(default_factory=list)
    speakers: list[int] = field(default_factory=list)  # voice index per speech span
    face_shots: list[tuple[float, float]] = field(default_factory=list)


def make_source(
    path: Path,
    shots: list[Shot],
    *,
    size: tuple[int, int] = (320, 180),
    fps: int | Fraction = 25,
    codec: str = "libx264",
    container: str | None = None,
    dissolve_after: dict[int, float] | None = None,
    speech: list[tuple[float, int, str]] = (),
    audio: str | None = "aac",
    sample_rate: int = 16000,
    options: dict[str, str] | None = None,
    audio_span: tuple[float, float] | None = None,
) -> Truth:
    """Encode ``shots`` back to back. ``dissolve_after`` {i: seconds} blends shot i into shot
    i+1 over that many seconds, centred on their boundary; other boundaries are hard cuts.
    ``speech`` is (start seconds, voice index, text). ``audio_span`` (start, end) seconds: the
    audio track holds only that span, timestamped (a late start; an end past the picture's).
    Returns the truth."""
    import av

    w, h = size
    fps_f = float(fps)
    total = sum(s.seconds for s in shots)
    n = int(round(total * fps_f))
    bounds = np.cumsum([0.0] + [s.seconds for s in shots])
    dissolve_after = dissolve_after or {}
    truth = Truth(Path(path), n / fps_f)

    def frame_at(i: int) -> np.ndarray:
        t = i / fps_f
        k = int(np.searchsorted(bounds, t, side="right") - 1)
        k = min(k, len(shots) - 1)

        def draw(j: int) -> np.ndarray:
            s = shots[j]
            u = float(np.clip((t - bounds[j]) / s.seconds, 0, 1))
            return _face_frame(u, w, h) if s.kind == "face" else _shapes_frame(u, w, h, s.palette)

        for j, span in dissolve_after.items():
            mid = bounds[j + 1]
            if mid - span / 2 <= t < mid + span / 2:
                alpha = (t - (mid - span / 2)) / span
                return ((1 - alpha) * draw(j).astype(np.float32) + alpha * draw(j + 1).astype(np.float32)).astype(np.uint8)
        return draw(k)

    for j in range(1, len(shots)):
        if j - 1 in dissolve_after:
            span = dissolve_after[j - 1]
            truth.dissolves_s.append((bounds[j] - span / 2, bounds[j] + span / 2))
        else:
            truth.cuts_s.append(float(np.ceil(bounds[j] * fps_f - 1e-9) / fps_f))
    truth.face_shots = [(float(bounds[j]), float(bounds[j + 1])) for j, s in enumerate(shots) if s.kind == "face"]

    a_lo, a_hi = audio_span or (0.0, total)
    wave = np.zeros(int(round(max(total, a_hi) * sample_rate)), np.float32)
    for start, voice, text in speech:
        clip = speak(VOICES[voice], text, sample_rate)
        a = int(start * sample_rate)
        wave[a : a + len(clip)] += clip[: max(0, len(wave) - a)]
        truth.speech_s.append((start, start + len(clip) / sample_rate))
        truth.speakers.append(voice)

    with av.open(str(path), "w", format=container) as out:
        vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options or {})
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        aus = None
        if audio is not None:
            aus = out.add_stream(audio, rate=sample_rate)
            aus.layout = "mono"
        for i in range(n):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if aus is not None:
            fmt = "s16" if audio == "pcm_s16le" else "fltp"
            step = 960 if audio == "libopus" else 1024
            for a in range(int(round(a_lo * sample_rate)), int(round(a_hi * sample_rate)), step):
                chunk = wave[a : a + step]
                if len(chunk) < step:
                    chunk = np.pad(chunk, (0, step - len(chunk)))
                arr = (chunk * 32767).astype(np.int16)[None] if fmt == "s16" else chunk[None]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt, layout="mono")
                af.sample_rate = sample_rate
                af.pts = a
                for pkt in aus.encode(af):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)
    return truth


def faststart(src: Path, dst: Path) -> None:
    """Remux ``src`` with the index (moov) first, as web videos are: cut short, such a file
    still opens and breaks off part way."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is None:
                continue
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)

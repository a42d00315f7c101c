"""Pluggable detectors and feature extractors behind small interfaces, with a registry by name.

Five kinds, each a :class:`typing.Protocol`:

==================  =========================  ====================================================
kind                protocol                   built-in default (no weights)
==================  =========================  ====================================================
``cuts``            :class:`CutDetector`       ``frame_difference``: block-averaged frame difference
``speech``          :class:`SpeechDetector`    ``energy_harmonicity``: loud *and* periodic hops
``shot_features``   :class:`FeatureExtractor`  ``colour`` (dominant): a background's two main colours
``look``            :class:`FeatureExtractor`  ``colour`` (mean): a character's mean colour
``voice``           :class:`VoiceEmbedder`     ``pitch``: the median f0 of the voiced hops
==================  =========================  ====================================================

Also built in: ``colour_texture`` (colour histogram + gradient histogram of a whole region,
closer to a holistic shot descriptor) for ``shot_features`` and ``look``; ``model`` for every
kind (below). New ones register with :func:`register`.

The defaults are exact on the synthetic world (cuts are large frame-difference jumps, speech
is harmonic, sfx are noise bursts, identities are colours and fundamental frequencies).
Real models (TransNetV2, a neural VAD, ViCLIP, ArcFace, WavLM) plug in as ``name: model``
with a local ONNX (``.onnx``, run with onnxruntime) or TorchScript (``.pt`` / ``.ts``) file
``path``; a missing file is a one-line error naming the file and the config key, never a
silent fallback to a default. Nothing is downloaded.

Config (the ``detectors`` section of an evaluation config)::

    detectors:
      cuts:          {name: frame_difference, threshold: 8.0}
      speech:        {name: energy_harmonicity, energy_db: -40}
      shot_features: {name: model, path: /models/viclip.onnx, size: 224}
      look:          {name: model, path: /models/arcface.onnx, size: 112, mean: 0.5, std: 0.5}
      voice:         {name: model, path: /models/wavlm.onnx, sample_rate: 16000}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from mavin_ops.evaluation.metrics import Interval, union_intervals
from mavin_ops.errors import MavinError

__all__ = [
    "KINDS",
    "REGISTRY",
    "ColourTextureFeatures",
    "CutDetector",
    "DetectorConfigError",
    "DetectorSuite",
    "EnergyHarmonicitySpeech",
    "FOOTAGE_DETECTORS",
    "FaceLook",
    "ResemblyzerVoice",
    "SceneCuts",
    "SileroSpeech",
    "FeatureExtractor",
    "FrameDifferenceCuts",
    "ModelCutDetector",
    "ModelFeatureExtractor",
    "ModelFile",
    "ModelSpeechDetector",
    "ModelVoiceEmbedder",
    "ColourFeatures",
    "PitchVoice",
    "SpeechDetector",
    "VoiceEmbedder",
    "build_detector",
    "build_suite",
    "frame_analysis",
    "register",
]


class DetectorConfigError(MavinError, ValueError):
    """A detector config that cannot be used: names the config key, the problem and the fix."""


# --------------------------------------------------------------------------- interfaces


@runtime_checkable
class CutDetector(Protocol):
    """Finds shot cuts: returns cut frames ``k`` (frame ``k`` starts a new shot)."""

    def detect(self, frames: np.ndarray, fps: float) -> list[int]:  # frames (F, H, W, 3) uint8
        ...


@runtime_checkable
class SpeechDetector(Protocol):
    """Finds speech: returns sorted, disjoint ``(start, end)`` intervals in seconds."""

    def detect(self, waveform: np.ndarray, sample_rate: int) -> list[Interval]:
        ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """A visual feature of some pixels: ``frames`` (N, H, W, 3) uint8 and an optional mask
    (N, H, W) bool of the pixels that belong to the thing described (a character, the
    background). Returns a 1-D vector; compared with cosine similarity."""

    def features(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        ...


@runtime_checkable
class VoiceEmbedder(Protocol):
    """A voice feature of a waveform; compared with cosine similarity. ``None`` when the
    waveform holds no voice to describe."""

    def embed(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        ...


KINDS: dict[str, type] = {
    "cuts": CutDetector,
    "speech": SpeechDetector,
    "shot_features": FeatureExtractor,
    "look": FeatureExtractor,
    "voice": VoiceEmbedder,
}
#: kind -> name -> factory (a dataclass whose fields are the config options).
REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
#: The built-in default of each kind (name and options).
DEFAULTS: dict[str, dict[str, Any]] = {
    "cuts": {"name": "frame_difference"},
    "speech": {"name": "energy_harmonicity"},
    "shot_features": {"name": "colour", "statistic": "dominant", "colours": 2},
    "look": {"name": "colour", "statistic": "mean"},
    "voice": {"name": "pitch"},
}


def register(*kinds: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: make a detector buildable by ``name`` for the given kinds."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        for kind in kinds:
            if kind not in REGISTRY:
                raise ValueError(f"unknown detector kind '{kind}'; kinds: {', '.join(REGISTRY)}")
            REGISTRY[kind][name] = factory
        return factory

    return deco


# --------------------------------------------------------------------------- cuts


@register("cuts", name="frame_difference")
@dataclass
class FrameDifferenceCuts:
    """Cut at frame ``k`` when frames ``k-1`` and ``k`` differ a lot.

    The difference is the mean absolute difference (0..255 scale, over pixels and channels)
    of the frames averaged over ``block`` x ``block`` pixel blocks, which keeps per-pixel
    noise or flicker of a generated video from looking like a cut (pixel noise of std s
    drops to s / block). A cut needs both ``d_k >= threshold`` and
    ``d_k >= relative * median(d)``, so a clip that flickers everywhere does not cut at every
    frame. The synthetic world guarantees at least 12 at every cut and at most 4 inside a
    shot at full resolution (data/synth.py CUT_MIN_DIFF, INTRA_MAX_DIFF); with 2 x 2 blocks
    the tiny preset's cuts measure at least 16.8 and its intra-shot steps at most 3.8, so the
    default 8 separates them with margin. ``min_shot_frames`` > 1 keeps only the strongest
    of cuts closer than that (a flash would otherwise count twice)."""

    threshold: float = 8.0
    block: int = 2
    relative: float = 2.0
    min_shot_frames: int = 1

    def frame_differences(self, frames: np.ndarray) -> np.ndarray:
        """``d[k-1]`` = difference between frames ``k-1`` and ``k``, (F-1,) float."""
        f = np.asarray(frames)
        if f.shape[0] < 2:
            return np.zeros(0, dtype=np.float64)
        b = max(1, int(self.block))
        if b > 1:
            h, w = (f.shape[1] // b) * b, (f.shape[2] // b) * b
            f = f[:, :h, :w].astype(np.float32).reshape(f.shape[0], h // b, b, w // b, b, 3).mean(axis=(2, 4))
        else:
            f = f.astype(np.float32)
        return np.abs(f[1:] - f[:-1]).reshape(f.shape[0] - 1, -1).mean(axis=1).astype(np.float64)

    def detect(self, frames: np.ndarray, fps: float) -> list[int]:
        d = self.frame_differences(frames)
        if d.size == 0:
            return []
        floor = max(self.threshold, self.relative * float(np.median(d)))
        return _peaks(d, floor, self.min_shot_frames, offset=1)


def _peaks(scores: np.ndarray, threshold: float, min_gap: int, offset: int) -> list[int]:
    """Indices (plus ``offset``) where ``scores >= threshold``; among candidates closer than
    ``min_gap`` keep the highest (then the earliest)."""
    cand = [int(i) for i in np.flatnonzero(np.asarray(scores) >= threshold)]
    if min_gap <= 1:
        return [i + offset for i in cand]
    kept: list[int] = []
    for i in sorted(cand, key=lambda j: (-float(scores[j]), j)):
        if all(abs(i - k) >= min_gap for k in kept):
            kept.append(i)
    return sorted(k + offset for k in kept)


# --------------------------------------------------------------------------- audio analysis


@dataclass(frozen=True)
class FrameAnalysis:
    """Per analysis hop: RMS level in dBFS, harmonicity (peak normalised autocorrelation in
    the pitch range, 0..1) and the f0 estimate in Hz (NaN where not periodic)."""

    hop: int
    level_db: np.ndarray
    harmonicity: np.ndarray
    f0: np.ndarray


def frame_analysis(
    waveform: np.ndarray,
    sample_rate: int,
    hop_seconds: float = 0.01,
    window_seconds: float = 0.032,
    f0_min: float = 60.0,
    f0_max: float = 600.0,
) -> FrameAnalysis:
    """Level, harmonicity and f0 per hop of ``hop_seconds``.

    The level is the hop's own RMS, so a hop is loud only if its own samples are. Harmonicity
    is judged on two windows of ``window_seconds``, one starting at the hop and one ending
    with it, and the more periodic one counts: a hop at either edge of a voiced stretch then
    still has one window fully inside it, which keeps speech edges on the hop grid.
    Periodicity is the normalised autocorrelation ``sum x[n] x[n+T] / sqrt(E_head E_tail)``
    maximised over the lags ``T`` of the pitch range; 1 for a periodic signal, near 0 for
    noise.
    """
    x = np.asarray(waveform, dtype=np.float64).ravel()
    hop = max(1, int(round(hop_seconds * sample_rate)))
    win = max(hop, int(round(window_seconds * sample_rate)))
    n = int(math.ceil(len(x) / hop)) if len(x) else 0
    if n == 0:
        empty = np.zeros(0)
        return FrameAnalysis(hop, empty, empty, empty)
    lag_lo = max(2, int(math.floor(sample_rate / f0_max)))
    lag_hi = min(win - 8, int(math.ceil(sample_rate / f0_min)))
    if lag_hi <= lag_lo:
        raise DetectorConfigError(f"speech analysis window {window_seconds} s is too short for f0_min {f0_min} Hz")

    padded = np.concatenate([np.zeros(win), x, np.zeros(win + hop)])
    hops = np.lib.stride_tricks.sliding_window_view(padded, hop)[win : win + n * hop : hop]  # (n, hop)
    rms = np.sqrt(np.mean(hops**2, axis=1))
    level_db = 20.0 * np.log10(np.maximum(rms, 1e-10))

    views = np.lib.stride_tricks.sliding_window_view(padded, win)
    starts = win + np.arange(n) * hop
    best_h = np.zeros(n)
    best_lag = np.zeros(n)
    nfft = 1 << int(math.ceil(math.log2(2 * win)))
    lags = np.arange(lag_lo, lag_hi + 1)
    for offs in (starts, starts + hop - win):  # window starting at the hop / ending with it
        w = views[offs]  # (n, win)
        spec = np.fft.rfft(w, nfft, axis=1)
        ac = np.fft.irfft(np.abs(spec) ** 2, nfft, axis=1)[:, :win]  # (n, win)
        cs = np.cumsum(w**2, axis=1)
        total = cs[:, -1:]
        e_head = cs[:, win - lags - 1]  # energy of w[0 : win - T]
        e_tail = total - cs[:, lags - 1]  # energy of w[T : win]
        nac = ac[:, lags] / np.sqrt(np.maximum(e_head * e_tail, 1e-20))
        h = nac.max(axis=1)
        # the shortest lag that is a local peak within 0.05 of the best: the period, not a
        # multiple of it (octave errors would otherwise halve f0)
        peak = np.zeros_like(nac, dtype=bool)
        peak[:, 1:-1] = (nac[:, 1:-1] >= nac[:, :-2]) & (nac[:, 1:-1] >= nac[:, 2:])
        peak |= nac >= h[:, None]
        i = np.argmax(peak & (nac >= h[:, None] - 0.05), axis=1)
        # parabolic refinement of the best lag, for a sub-sample f0
        j = np.clip(i, 1, len(lags) - 2)
        a, b, c = nac[np.arange(n), j - 1], nac[np.arange(n), j], nac[np.arange(n), j + 1]
        den = a - 2 * b + c
        shift = np.where(np.abs(den) > 1e-12, 0.5 * (a - c) / np.where(np.abs(den) > 1e-12, den, 1.0), 0.0)
        shift = np.where(i == j, np.clip(shift, -0.5, 0.5), 0.0)
        lag = lags[i] + shift
        better = h > best_h
        best_h = np.where(better, h, best_h)
        best_lag = np.where(better, lag, best_lag)
    f0 = np.where(best_lag > 0, sample_rate / np.maximum(best_lag, 1e-9), np.nan)
    return FrameAnalysis(hop, level_db, np.clip(best_h, 0.0, 1.0), f0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index runs where ``mask`` is true."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _mask_to_intervals(
    mask: np.ndarray, hop: int, sample_rate: int, total: int, min_gap_s: float, min_len_s: float
) -> list[Interval]:
    """Turn a per-hop decision into intervals: fill gaps shorter than ``min_gap_s``, drop
    runs shorter than ``min_len_s``, clip to the waveform."""
    mask = np.asarray(mask, dtype=bool).copy()
    gap = int(round(min_gap_s * sample_rate / hop))
    runs = _runs(mask)
    for (a0, b0), (a1, _) in zip(runs, runs[1:]):
        if a1 - b0 < gap:
            mask[b0:a1] = True
    out = []
    min_len = int(round(min_len_s * sample_rate / hop))
    for a, b in _runs(mask):
        if b - a >= max(1, min_len):
            out.append((a * hop / sample_rate, min(b * hop, total) / sample_rate))
    return union_intervals(out)


# --------------------------------------------------------------------------- speech


@register("speech", name="energy_harmonicity")
@dataclass
class EnergyHarmonicitySpeech:
    """Speech = hops that are loud (level >= ``energy_db`` dBFS) *and* periodic (harmonicity
    >= ``harmonicity``). Noise bursts (sfx) are loud but not periodic; the ambient bed is
    below the level. Gaps shorter than ``min_gap`` seconds are filled (pauses between
    syllables), runs shorter than ``min_speech`` dropped."""

    energy_db: float = -40.0
    harmonicity: float = 0.6
    hop: float = 0.01
    window: float = 0.032
    f0_min: float = 60.0
    f0_max: float = 600.0
    min_gap: float = 0.1
    min_speech: float = 0.03

    def voiced(self, waveform: np.ndarray, sample_rate: int) -> tuple[FrameAnalysis, np.ndarray]:
        fa = frame_analysis(waveform, sample_rate, self.hop, self.window, self.f0_min, self.f0_max)
        return fa, (fa.level_db >= self.energy_db) & (fa.harmonicity >= self.harmonicity)

    def detect(self, waveform: np.ndarray, sample_rate: int) -> list[Interval]:
        fa, voiced = self.voiced(waveform, sample_rate)
        return _mask_to_intervals(voiced, fa.hop, sample_rate, len(waveform), self.min_gap, self.min_speech)


# --------------------------------------------------------------------------- voice


@register("voice", name="pitch")
@dataclass
class PitchVoice:
    """A voice as its typical fundamental frequency: the median f0 of the clearly voiced
    hops (level >= ``energy_db``, harmonicity >= ``harmonicity``), embedded as a unit
    Gaussian kernel on a log-frequency grid (``resolution`` cents per bin, width ``sigma``
    cents). Two voices whose median f0 differ by ``c`` cents have cosine
    ``exp(-c^2 / (4 sigma^2))``; intonation (a rising or falling line) moves the median
    little, so the same speaker stays near 1 across lines. ``None`` without voiced hops."""

    sigma: float = 100.0
    resolution: float = 5.0
    f0_min: float = 60.0
    f0_max: float = 600.0
    energy_db: float = -40.0
    harmonicity: float = 0.8
    hop: float = 0.01
    window: float = 0.032

    def median_f0(self, waveform: np.ndarray, sample_rate: int) -> float | None:
        """The median f0 in Hz of the voiced hops, ``None`` when there are none."""
        w = np.asarray(waveform)
        if w.size < int(self.window * sample_rate):
            return None
        fa = frame_analysis(w, sample_rate, self.hop, self.window, self.f0_min, self.f0_max)
        voiced = (fa.level_db >= self.energy_db) & (fa.harmonicity >= self.harmonicity) & np.isfinite(fa.f0)
        if not voiced.any():
            return None
        return float(np.median(fa.f0[voiced]))

    def embed_f0(self, f0: float) -> np.ndarray:
        """The unit-norm kernel of one f0 (Hz) on the log-frequency grid."""
        span = 1200.0 * math.log2(self.f0_max / self.f0_min)
        grid = np.arange(-3 * self.sigma, span + 3 * self.sigma + self.resolution, self.resolution)
        cents = 1200.0 * math.log2(f0 / self.f0_min)
        k = np.exp(-0.5 * ((grid - cents) / self.sigma) ** 2)
        return k / math.sqrt(float(np.sum(k * k)))

    def embed(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        f0 = self.median_f0(waveform, sample_rate)
        return None if f0 is None else self.embed_f0(f0)


# --------------------------------------------------------------------------- visual features


@register("shot_features", "look", name="colour")
@dataclass
class ColourFeatures:
    """Colours of a region, each a unit Gaussian kernel in RGB space.

    ``statistic: mean`` (a character's look): the mean colour of the masked pixels of each
    frame; frames whose means agree within ``frame_tol`` form a group, and the mean of the
    largest group counts (ties: the group of the earliest frame, the look at rest right after
    the cut), so a mouth opening or an object flashing on some frames does not move it. ``statistic: dominant`` (a background): the ``colours``
    most frequent colour bins (``bins`` levels per channel) over all frames, each represented
    by the mean RGB of its pixels; proportions do not enter, so a wall seen at another
    camera scale keeps its feature.

    The feature is the sum of kernels ``exp(-|x - c|^2 / (2 sigma^2))`` sampled on a grid that
    extends 3 sigma past 0..255, so for one colour each ``cos = exp(-|c1 - c2|^2 / (4 sigma^2))``
    (1 for the same colour, graded for a drift, near 0 for another identity colour). An
    empty mask gives an empty vector: nothing of the region is visible.
    """

    statistic: str = "mean"
    colours: int = 2
    bins: int = 8
    sigma: float = 32.0
    grid_step: float = 16.0
    frame_tol: float = 3.0

    def __post_init__(self) -> None:
        if self.statistic not in ("mean", "dominant"):
            raise TypeError(f"statistic must be 'mean' or 'dominant', got {self.statistic!r}")

    def representative(self, frames: np.ndarray, mask: np.ndarray | None = None) -> list[np.ndarray]:
        """The RGB colours the feature is made of (see the class docstring)."""
        f = np.asarray(frames)
        if f.ndim == 3:
            f = f[None]
        m = np.ones(f.shape[:3], dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), f.shape[:3])
        if self.statistic == "mean":
            means = [f[k][m[k]].astype(np.float64).mean(axis=0) for k in range(f.shape[0]) if m[k].any()]
            return [_typical(np.array(means), self.frame_tol)] if means else []
        px = f[m]
        if px.size == 0:
            return []
        from mavin_ops.evaluation.regions import colour_codes

        codes = colour_codes(px, self.bins)
        counts = np.bincount(codes, minlength=self.bins**3)
        top = [int(b) for b in np.argsort(-counts, kind="stable")[: self.colours] if counts[b] > 0]
        return [px[codes == b].astype(np.float64).mean(axis=0) for b in top]

    def embed_colours(self, colours: list[np.ndarray]) -> np.ndarray:
        """The feature of a list of RGB colours (a unit kernel each); empty for no colour."""
        if not colours:
            return np.zeros(0)
        grid = np.arange(-3 * self.sigma, 255 + 3 * self.sigma + self.grid_step, self.grid_step)
        out = np.zeros((len(grid),) * 3)
        for c in colours:
            k = [np.exp(-0.5 * ((grid - c[ch]) / self.sigma) ** 2) for ch in range(3)]
            out += k[0][:, None, None] * k[1][None, :, None] * k[2][None, None, :]
        return out.ravel()

    def features(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.embed_colours(self.representative(frames, mask))


@register("shot_features", "look", name="colour_texture")
@dataclass
class ColourTextureFeatures:
    """A colour-and-texture descriptor of the masked pixels over all given frames.

    Two unit-norm parts, weighted: a joint RGB histogram (``bins`` per channel) and a
    histogram of horizontal and vertical gradient magnitudes (``texture_bins`` bins on
    0..255). With weights ``w_c^2 + w_t^2 = 1`` the cosine of two descriptors is
    ``w_c^2 cos(colour) + w_t^2 cos(texture)``, e.g. ``w_t^2`` for two regions of the same
    texture whose colours fall in disjoint bins.
    """

    bins: int = 8
    texture_bins: int = 8
    texture_weight: float = 0.5  # w_t^2; w_c^2 = 1 - texture_weight

    def features(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        f = np.asarray(frames)
        if f.ndim == 3:
            f = f[None]
        if mask is None:
            mask = np.ones(f.shape[:3], dtype=bool)
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 2:
            mask = np.broadcast_to(mask, f.shape[:3])
        q = (f.astype(np.int32) * self.bins) // 256  # (N, H, W, 3)
        code = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
        colour = np.bincount(code[mask], minlength=self.bins**3).astype(np.float64)
        # gradient magnitude of the grey image, counted where both neighbours are in the mask
        grey = f.astype(np.float64).mean(axis=-1)
        gx = np.abs(np.diff(grey, axis=2))[mask[:, :, 1:] & mask[:, :, :-1]]
        gy = np.abs(np.diff(grey, axis=1))[mask[:, 1:, :] & mask[:, :-1, :]]
        g = np.concatenate([gx, gy])
        tq = np.minimum((g * self.texture_bins / 256.0).astype(np.int64), self.texture_bins - 1)
        texture = np.bincount(tq, minlength=self.texture_bins).astype(np.float64)
        return np.concatenate(
            [math.sqrt(1.0 - self.texture_weight) * _unit(colour), math.sqrt(self.texture_weight) * _unit(texture)]
        )


def _typical(values: np.ndarray, tol: float) -> np.ndarray:
    """The mean of the largest group of rows of ``values`` (N, D) that agree within ``tol``
    (max abs difference to the group's first row); ties go to the group met first."""
    groups: list[list[int]] = []
    for i, v in enumerate(values):
        for g in groups:
            if np.abs(values[g[0]] - v).max() <= tol:
                g.append(i)
                break
        else:
            groups.append([i])
    best = max(groups, key=len)  # max keeps the first of equal lengths
    return values[best].mean(axis=0)


def _unit(v: np.ndarray) -> np.ndarray:
    n = math.sqrt(float(np.sum(v * v)))
    return v / n if n > 0 else v


# --------------------------------------------------------------------------- model files


class ModelFile:
    """A local ONNX (onnxruntime, CPU) or TorchScript model with one array input and one
    array output. ``key`` is the config key that named the file, for error messages."""

    def __init__(self, path: str | Path, key: str):
        self.path = Path(path).expanduser()
        self.key = key
        if not str(path):
            raise DetectorConfigError(f"{key}: no model file given; set {key} to a local .onnx or TorchScript file")
        if not self.path.is_file():
            raise DetectorConfigError(
                f"{key}: model file '{self.path}' does not exist; put the file there or point {key} at it (nothing is downloaded)"
            )
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            try:
                self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types
                raise DetectorConfigError(f"{key}: cannot load ONNX model '{self.path}': {' '.join(str(exc).split())[:300]}") from None
            self._input = self._session.get_inputs()[0].name
            self.backend = "onnx"
        elif suffix in (".pt", ".ts", ".pth", ".torchscript"):
            import torch

            try:
                self._module = torch.jit.load(str(self.path), map_location="cpu").eval()
            except Exception as exc:  # torch raises RuntimeError and friends
                raise DetectorConfigError(f"{key}: cannot load TorchScript model '{self.path}': {' '.join(str(exc).split())[:300]}") from None
            self.backend = "torchscript"
        else:
            raise DetectorConfigError(f"{key}: '{self.path}' is neither .onnx nor a TorchScript file (.pt, .ts); export the model to one of them")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnx":
            return np.asarray(self._session.run(None, {self._input: x})[0])
        import torch

        with torch.no_grad():
            y = self._module(torch.from_numpy(x))
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.detach().cpu().numpy()


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, H, W, 3) uint8 frames to ``size`` = (H, W)."""
    from PIL import Image

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(fr).resize((w, h), Image.BILINEAR)) for fr in frames])


@register("shot_features", "look", name="model")
class ModelFeatureExtractor:
    """Image embedder from a model file (ViCLIP / ArcFace exported to ONNX or TorchScript).

    Input: frames cropped to the mask's bounding box, resized to ``size``, scaled to 0..1,
    normalised ``(x - mean) / std``, laid out ``(N, 3, H, W)`` float32. Output ``(N, D)``
    (or anything that flattens to N rows); the feature is the mean over frames. Frames where
    the mask is empty are skipped.
    """

    def __init__(self, path: str = "", size: int | list[int] = 224, mean: float | list[float] = 0.0,
                 std: float | list[float] = 1.0, batch: int = 32, key: str = "detectors.<kind>.path"):
        self.model = ModelFile(path, key)
        s = (size, size) if isinstance(size, int) else tuple(size)
        self.size = (int(s[0]), int(s[1]))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.batch = int(batch)

    def features(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        f = np.asarray(frames)
        if f.ndim == 3:
            f = f[None]
        masks = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), f.shape[:3])
        crops = []
        for n in range(f.shape[0]):
            if masks is None:
                crops.append(f[n])
                continue
            ys, xs = np.nonzero(masks[n])
            if ys.size == 0:
                continue
            crops.append(f[n, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        if not crops:
            return np.zeros(0, dtype=np.float32)
        x = np.stack([_resize(c[None], self.size)[0] for c in crops]).astype(np.float32) / 255.0
        x = (x.transpose(0, 3, 1, 2) - self.mean) / self.std  # (N, 3, H, W)
        outs = [self.model(x[i : i + self.batch]).reshape(min(self.batch, len(x) - i), -1) for i in range(0, len(x), self.batch)]
        return np.concatenate(outs).mean(axis=0)


@register("voice", name="model")
class ModelVoiceEmbedder:
    """Voice embedder from a model file (WavLM / a speaker encoder exported to ONNX or
    TorchScript). Input ``(1, T)`` float32 at ``sample_rate`` (resampled polyphase from the
    clip's rate); output ``(1, D)`` or ``(1, T', D)``, averaged over time."""

    def __init__(self, path: str = "", sample_rate: int = 16000, min_seconds: float = 0.1,
                 key: str = "detectors.voice.path"):
        self.model = ModelFile(path, key)
        self.sample_rate = int(sample_rate)
        self.min_seconds = float(min_seconds)

    def embed(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        w = _resample(np.asarray(waveform, dtype=np.float32), sample_rate, self.sample_rate)
        if w.size < self.min_seconds * self.sample_rate:
            return None
        y = self.model(w[None, :])
        y = y.reshape(-1, y.shape[-1]) if y.ndim > 1 else y[None]
        return y.mean(axis=0)


def _resample(w: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return w
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(w, sr_out // g, sr_in // g).astype(np.float32)


@register("cuts", name="model")
class ModelCutDetector:
    """Shot-boundary model from a file (TransNetV2 exported to ONNX or TorchScript).

    Input ``(1, F, H, W, 3)`` float32 on 0..255 at ``size`` = (H, W) (TransNetV2: 27 x 48);
    output one score per frame (``(1, F)`` or ``(1, F, 1)``), the probability that frame
    ``k + offset`` starts a new shot (TransNetV2 marks the last frame of a shot: offset 1).
    Peaks at or above ``threshold`` closer than ``min_shot_frames`` keep the strongest."""

    def __init__(self, path: str = "", size: list[int] | tuple[int, int] = (27, 48), threshold: float = 0.5,
                 offset: int = 0, min_shot_frames: int = 2, key: str = "detectors.cuts.path"):
        self.model = ModelFile(path, key)
        self.size = (int(size[0]), int(size[1]))
        self.threshold, self.offset, self.min_shot_frames = float(threshold), int(offset), int(min_shot_frames)

    def detect(self, frames: np.ndarray, fps: float) -> list[int]:
        x = _resize(np.asarray(frames), self.size).astype(np.float32)[None]
        p = self.model(x).reshape(-1)
        if p.size != frames.shape[0]:
            raise DetectorConfigError(f"detectors.cuts: the model gave {p.size} scores for {frames.shape[0]} frames; it must give one per frame")
        cuts = _peaks(p, self.threshold, self.min_shot_frames, offset=self.offset)
        return [k for k in cuts if 1 <= k <= frames.shape[0] - 1]


@register("speech", name="model")
class ModelSpeechDetector:
    """Voice activity model from a file (a neural VAD exported to ONNX or TorchScript).
    Input ``(1, T)`` float32 at ``sample_rate``; output one speech probability per ``hop``
    seconds; speech where it reaches ``threshold``, then the same gap filling and minimum
    length as the default."""

    def __init__(self, path: str = "", sample_rate: int = 16000, hop: float = 0.01, threshold: float = 0.5,
                 min_gap: float = 0.1, min_speech: float = 0.03, key: str = "detectors.speech.path"):
        self.model = ModelFile(path, key)
        self.sample_rate, self.hop, self.threshold = int(sample_rate), float(hop), float(threshold)
        self.min_gap, self.min_speech = float(min_gap), float(min_speech)

    def detect(self, waveform: np.ndarray, sample_rate: int) -> list[Interval]:
        w = _resample(np.asarray(waveform, dtype=np.float32), sample_rate, self.sample_rate)
        p = self.model(w[None, :]).reshape(-1)
        hop = int(round(self.hop * self.sample_rate))
        return _mask_to_intervals(p >= self.threshold, hop, self.sample_rate, len(w), self.min_gap, self.min_speech)


# --------------------------------------------------------------------------- footage


@register("cuts", name="scenes")
@dataclass
class SceneCuts:
    """Real-footage cuts: PySceneDetect's ``ContentDetector`` for hard cuts and the linearity
    test for dissolves (:func:`mavin_ops.data.footage.detect_shots`, what ingest measured the
    benchmark with). ``threshold`` is ContentDetector's; ``min_shot_s`` the shortest shot."""

    threshold: float = 27.0
    min_shot_s: float = 0.25

    def detect(self, frames: np.ndarray, fps: float) -> list[int]:
        from mavin_ops.data import footage as fx

        frames = np.asarray(frames)
        if len(frames) < 2:
            return []
        settings = fx.DetectorSettings(cut_threshold=self.threshold, min_shot_s=self.min_shot_s)
        times = np.arange(len(frames)) / float(fps)
        return [int(round(tr.t * fps)) for tr in fx.detect_shots(frames, times, float(fps), settings)]


@register("speech", name="silero")
@dataclass
class SileroSpeech:
    """Silero VAD (weights ship in the ``silero-vad`` wheel) on the waveform resampled to 16 kHz."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 150

    def detect(self, waveform: np.ndarray, sample_rate: int) -> list[Interval]:
        from mavin_ops.data import footage as fx

        w = _resample(np.asarray(waveform, dtype=np.float32), int(sample_rate), fx.ANALYSIS_RATE)
        settings = fx.DetectorSettings(vad_threshold=self.threshold, vad_min_speech_ms=self.min_speech_ms,
                                       vad_min_silence_ms=self.min_silence_ms)
        return [(float(a), float(b)) for a, b in fx.detect_speech(w, settings)]


@register("voice", name="resemblyzer")
@dataclass
class ResemblyzerVoice:
    """Resemblyzer's speaker encoder (weights ship in the wheel): a 256-d voice embedding of
    the waveform resampled to 16 kHz; None for less than ``min_seconds`` or silence."""

    min_seconds: float = 0.3

    def embed(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        from mavin_ops.data import footage as fx

        w = _resample(np.asarray(waveform, dtype=np.float32), int(sample_rate), fx.ANALYSIS_RATE)
        if len(w) < self.min_seconds * fx.ANALYSIS_RATE or float(np.abs(w).max(initial=0.0)) < 1e-3:
            return None
        return fx.embed_voices(w, [(0.0, len(w) / fx.ANALYSIS_RATE)])[0]


@register("look", name="face")
@dataclass
class FaceLook:
    """A character's look on real footage: OpenCV's Haar face detector on frames scaled up to
    at least ``min_height`` pixels, and the mean descriptor (an aligned grey face crop) of the
    faces it finds. No face found gives an empty vector, which the metrics score as 0 (no
    face, no likeness; a zero vector would be a broken extractor, NaN)."""

    min_height: int = 128

    def features(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        import cv2

        from mavin_ops.data import footage as fx

        frames = np.asarray(frames)
        scale = max(1.0, self.min_height / frames.shape[1])
        found = []
        for f in frames:
            big = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else f
            grey = cv2.cvtColor(np.ascontiguousarray(big), cv2.COLOR_RGB2GRAY)
            boxes = fx.detect_faces(grey)
            if boxes:
                found.append(fx.face_descriptor(grey, max(boxes, key=lambda b: b[2] * b[3])))
        if not found:
            return np.zeros(0, np.float32)
        return _unit(np.mean(found, axis=0).astype(np.float32))


#: The detectors the footage evaluation profile uses (a benchmark ``data ingest`` made): the
#: same detectors ingest measured the benchmark with.
FOOTAGE_DETECTORS: dict[str, dict[str, Any]] = {
    "cuts": {"name": "scenes"},
    "speech": {"name": "silero"},
    "shot_features": {"name": "colour_texture"},
    "look": {"name": "face"},
    "voice": {"name": "resemblyzer"},
}


# --------------------------------------------------------------------------- config


def _options(factory: Callable[..., Any]) -> list[str]:
    if dataclasses.is_dataclass(factory):
        return [f.name for f in dataclasses.fields(factory)]
    import inspect

    return [p for p in inspect.signature(factory).parameters if p not in ("self", "key")]


def build_detector(kind: str, spec: Mapping[str, Any] | str | None = None, where: str | None = None) -> Any:
    """Build one detector from its config: ``{"name": ..., <options>}`` or just a name.
    Unknown kinds, names and options are one-line errors naming the config key."""
    where = where or f"detectors.{kind}"
    if kind not in REGISTRY:
        raise DetectorConfigError(f"{where}: unknown detector kind '{kind}'; kinds: {', '.join(REGISTRY)}")
    if isinstance(spec, str):
        spec = {"name": spec}
    if not spec:
        spec = DEFAULTS[kind]
    if not isinstance(spec, Mapping):
        raise DetectorConfigError(f"{where}: expected a mapping with 'name' and options, got {type(spec).__name__}")
    opts = dict(spec)
    if "name" not in opts:
        raise DetectorConfigError(f"{where}: no 'name'; give one of {', '.join(sorted(REGISTRY[kind]))}")
    name = opts.pop("name")
    factory = REGISTRY[kind].get(name)
    if factory is None:
        raise DetectorConfigError(f"{where}.name: unknown {kind} detector '{name}'; available: {', '.join(sorted(REGISTRY[kind]))}")
    allowed = _options(factory)
    for key in opts:
        if key not in allowed:
            raise DetectorConfigError(f"{where}.{key}: unknown option for '{name}'; options: {', '.join(allowed) or 'none'}")
    if "key" in _signature_params(factory):
        opts["key"] = f"{where}.path"
    try:
        det = factory(**opts)
    except TypeError as exc:
        raise DetectorConfigError(f"{where}: bad options for '{name}': {exc}") from None
    if not isinstance(det, KINDS[kind]):
        raise DetectorConfigError(f"{where}: '{name}' does not implement the {KINDS[kind].__name__} interface")
    return det


def _signature_params(factory: Callable[..., Any]) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return []


@dataclass
class DetectorSuite:
    """One detector of each kind, and the config that built them (recorded in metrics.json)."""

    cuts: Any
    speech: Any
    shot_features: Any
    look: Any
    voice: Any
    config: dict[str, Any] = field(default_factory=dict)


def build_suite(config: Mapping[str, Any] | None = None) -> DetectorSuite:
    """Build every kind from ``config`` (the ``detectors`` section); a kind left out gets
    its built-in default (:data:`DEFAULTS`)."""
    config = dict(config or {})
    for key in config:
        if key not in KINDS:
            raise DetectorConfigError(f"detectors.{key}: unknown detector kind; kinds: {', '.join(KINDS)}")
    resolved: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        spec = config.get(kind)
        spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
        resolved[kind] = spec or dict(DEFAULTS[kind])
    built = {kind: build_detector(kind, resolved[kind]) for kind in KINDS}
    return DetectorSuite(config=resolved, **built)

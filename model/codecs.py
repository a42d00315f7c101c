"""Latent interfaces: the video and audio autoencoders behind one interface.

MAVIN section 4.1 compresses video and audio with pretrained VAEs, z0 = E(x), and the
denoiser works on latent tokens. Here every codec answers the same four questions:

- ``encode(x)`` / ``decode(z)``: media <-> latents,
- ``latent_shape(...)``: the latent shape for a given clip length,
- ``latent_times(...)``: the time in seconds of each latent step (the shared time axis that
  routing masks and the audio/video rotary alignment use).

Codecs, by ``kind``:

- video ``patch``: exact, parameter-free space-time patch transform. Like causal video VAEs
  the first frame is a latent step on its own and the following frames go in groups of
  ``temporal_stride`` (4): a clip of 4k+1 frames has k+1 latent steps. The first frame is
  replicated to fill its group on encode and the copies are averaged on decode, so
  ``decode(encode(x)) == x`` exactly (up to float rounding).
- audio ``dct``: a framing front end (non-overlapping frames of ``hop`` samples) and an
  orthonormal DCT-II per frame that keeps the ``latent_channels`` lowest coefficients.
  Exactly invertible when ``latent_channels == hop``; a low-pass autoencoder otherwise.
  At 8000 Hz, hop 320 gives 25 latents per second.
- ``vae`` (video and audio): a small convolutional autoencoder of ours whose weights are
  loaded, frozen, from a local safetensors file (the ``paper`` preset). Bringing a
  third-party VAE means adding its module here and a state-dict adapter; nothing downloads.

Video tensors are ``(B, F, H, W, 3)`` floats in [-1, 1] (``frames_to_tensor`` converts
uint8 frames); video latents are ``(B, C, T', H', W')``. Audio is ``(B, S)`` float
waveforms; audio latents are ``(B, N, C)``. Latents are ``(x_latent - shift) * scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "AudioCodecConfig",
    "ConvAudioVAE",
    "ConvVideoVAE",
    "DCTAudioCodec",
    "PatchVideoCodec",
    "VideoCodecConfig",
    "audio_to_tensor",
    "frames_to_tensor",
    "load_frozen_weights",
    "tensor_to_audio",
    "tensor_to_frames",
]


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class VideoCodecConfig:
    kind: str = "patch"  # patch | vae
    fps: float = 8.0
    temporal_stride: int = 4
    spatial_stride: int = 4
    height: int = 32  # default frame size when generating
    width: int = 32
    latent_channels: int = 0  # vae only; patch has 3 * temporal_stride * spatial_stride**2
    hidden_channels: int = 64  # vae only
    num_res_blocks: int = 1  # vae only
    weights: str = ""  # vae only: local safetensors file
    scale: float = 1.0
    shift: float = 0.0

    @property
    def channels(self) -> int:
        """Latent channels per latent voxel."""
        if self.kind == "patch":
            return 3 * self.temporal_stride * self.spatial_stride**2
        return self.latent_channels

    def build(self, device: torch.device | str | None = None, load: bool = True) -> "PatchVideoCodec | ConvVideoVAE":
        if self.kind == "patch":
            return PatchVideoCodec(self)
        if self.kind == "vae":
            if self.latent_channels <= 0:
                raise ValueError("video_codec.latent_channels must be > 0 for kind 'vae'; set it to the VAE's latent width")
            with torch.device(device or "cpu"):
                codec = ConvVideoVAE(self)
            if load:
                load_frozen_weights(codec, self.weights, "video_codec")
            return codec.requires_grad_(False).eval()
        raise ValueError(f"video_codec.kind '{self.kind}' is unknown; use 'patch' or 'vae'")


@dataclass(frozen=True)
class AudioCodecConfig:
    kind: str = "dct"  # dct | vae
    sample_rate: int = 8000
    hop: int = 320  # samples per latent step: sample_rate / hop latents per second
    latent_channels: int = 320
    hidden_channels: int = 128  # vae only
    num_res_blocks: int = 1  # vae only
    weights: str = ""  # vae only: local safetensors file
    scale: float = 1.0
    shift: float = 0.0
    max_reference_seconds: float = 2.0  # reference voices are cut to this length

    @property
    def channels(self) -> int:
        return self.latent_channels

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.hop

    def build(self, device: torch.device | str | None = None, load: bool = True) -> "DCTAudioCodec | ConvAudioVAE":
        if self.kind == "dct":
            if not 0 < self.latent_channels <= self.hop:
                raise ValueError(f"audio_codec.latent_channels={self.latent_channels} must be in 1..hop ({self.hop}) for kind 'dct'")
            return DCTAudioCodec(self)
        if self.kind == "vae":
            with torch.device(device or "cpu"):
                codec = ConvAudioVAE(self)
            if load:
                load_frozen_weights(codec, self.weights, "audio_codec")
            return codec.requires_grad_(False).eval()
        raise ValueError(f"audio_codec.kind '{self.kind}' is unknown; use 'dct' or 'vae'")


# --------------------------------------------------------------------------- media helpers


def frames_to_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 frames (F, H, W, 3) or (B, F, H, W, 3) -> float (B, F, H, W, 3) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, Tensor) else frames)
    if x.dim() == 4:
        x = x[None]
    if x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"video frames have shape {tuple(x.shape)}; expected (F, H, W, 3) uint8 frames")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float()


def tensor_to_frames(x: Tensor) -> np.ndarray:
    """float (F, H, W, 3) in [-1, 1] -> uint8 frames (F, H, W, 3)."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()


def audio_to_tensor(audio: np.ndarray | Tensor) -> Tensor:
    """Mono waveform (S,) or (B, S) -> float (B, S)."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, Tensor) else audio).float()
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"audio has shape {tuple(x.shape)}; expected a mono waveform (S,)")
    return x


def tensor_to_audio(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- video


def _check_frames(num_frames: int, ts: int) -> int:
    if num_frames < 1 or (num_frames - 1) % ts:
        k = max((num_frames - 1) // ts, 0)
        raise ValueError(
            f"video has {num_frames} frames; the video codec needs {ts}k+1 frames "
            f"(temporal stride {ts}), e.g. {ts * k + 1} or {ts * (k + 1) + 1}"
        )
    return (num_frames - 1) // ts + 1


class _VideoLatentGrid:
    """Shapes and times shared by every video codec: first frame alone, then groups of ts."""

    config: VideoCodecConfig

    @property
    def channels(self) -> int:
        return self.config.channels

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') for a clip of ``num_frames`` frames of ``height`` x ``width``."""
        s = self.config.spatial_stride
        t = _check_frames(num_frames, self.config.temporal_stride)
        if height % s or width % s:
            raise ValueError(f"frame size {height}x{width} is not divisible by the video codec's spatial stride {s}; crop or resize the frames")
        return (self.channels, t, height // s, width // s)

    def latent_times(self, num_frames: int) -> Tensor:
        """Centre time in seconds of each latent step: step 0 covers frame 0, step k >= 1
        covers frames ts*(k-1)+1 .. ts*k; frame n covers [n/fps, (n+1)/fps)."""
        ts, fps = self.config.temporal_stride, self.config.fps
        t = _check_frames(num_frames, ts)
        k = torch.arange(t, dtype=torch.float64)
        start = torch.where(k == 0, 0.0, ts * (k - 1) + 1)
        end = torch.where(k == 0, 1.0, ts * k + 1)
        return ((start + end) / 2 / fps).float()

    def num_frames(self, latent_steps: int) -> int:
        return self.config.temporal_stride * (latent_steps - 1) + 1

    def _patchify(self, x: Tensor) -> Tensor:
        """(B, F, H, W, 3) -> (B, ts*s*s*3, T', H/s, W/s); the first frame fills its group."""
        B, Fn, H, W, Cp = x.shape
        ts, s = self.config.temporal_stride, self.config.spatial_stride
        self.latent_shape(Fn, H, W)
        x = torch.cat([x[:, :1].expand(B, ts, H, W, Cp), x[:, 1:]], dim=1)  # (B, ts*T', H, W, 3)
        T = x.shape[1] // ts
        x = x.reshape(B, T, ts, H // s, s, W // s, s, Cp)
        x = x.permute(0, 2, 4, 6, 7, 1, 3, 5)  # (B, ts, s, s, 3, T', H', W')
        return x.reshape(B, ts * s * s * Cp, T, H // s, W // s)

    def _unpatchify(self, z: Tensor) -> Tensor:
        """Inverse of ``_patchify``; the replicated first-frame group is averaged."""
        B, C, T, Hs, Ws = z.shape
        ts, s = self.config.temporal_stride, self.config.spatial_stride
        x = z.reshape(B, ts, s, s, 3, T, Hs, Ws).permute(0, 5, 1, 6, 2, 7, 3, 4)  # (B, T', ts, H', s, W', s, 3)
        x = x.reshape(B, T, ts, Hs * s, Ws * s, 3)
        first = x[:, 0].mean(dim=1, keepdim=True)  # (B, 1, H, W, 3)
        return torch.cat([first, x[:, 1:].reshape(B, (T - 1) * ts, Hs * s, Ws * s, 3)], dim=1)


class PatchVideoCodec(nn.Module, _VideoLatentGrid):
    """Exact space-time patch transform: (B, 4k+1, H, W, 3) <-> (B, 3*ts*s*s, k+1, H/s, W/s)."""

    Config = VideoCodecConfig

    def __init__(self, config: VideoCodecConfig):
        super().__init__()
        self.config = config

    def encode(self, x: Tensor) -> Tensor:
        return (self._patchify(x) - self.config.shift) * self.config.scale

    def decode(self, z: Tensor) -> Tensor:
        return self._unpatchify(z / self.config.scale + self.config.shift)


class _Res3d(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, (3, 3, 3))
        self.conv2 = nn.Conv3d(ch, ch, (3, 3, 3))

    @staticmethod
    def _causal(x: Tensor) -> Tensor:
        # Causal in time (replicate the first latent step twice in front), same-size in space.
        x = torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2)
        return F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate")

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self._causal(F.silu(x)))
        return x + self.conv2(self._causal(F.silu(h)))


class ConvVideoVAE(nn.Module, _VideoLatentGrid):
    """Causal convolutional video autoencoder on the same latent grid as ``PatchVideoCodec``:
    space-time patchify, causal 3D residual convs, a 1x1x1 projection to ``latent_channels``
    (the encoder's mean; the variance head of a trained VAE is not needed at inference)."""

    Config = VideoCodecConfig

    def __init__(self, config: VideoCodecConfig):
        super().__init__()
        self.config = config
        c_in = 3 * config.temporal_stride * config.spatial_stride**2
        h, z = config.hidden_channels, config.latent_channels
        self.encoder = nn.ModuleDict(
            {
                "conv_in": nn.Conv3d(c_in, h, 1),
                "blocks": nn.ModuleList(_Res3d(h) for _ in range(config.num_res_blocks)),
                "conv_out": nn.Conv3d(h, z, 1),
            }
        )
        self.decoder = nn.ModuleDict(
            {
                "conv_in": nn.Conv3d(z, h, 1),
                "blocks": nn.ModuleList(_Res3d(h) for _ in range(config.num_res_blocks)),
                "conv_out": nn.Conv3d(h, c_in, 1),
            }
        )

    @staticmethod
    def _run(net: nn.ModuleDict, x: Tensor) -> Tensor:
        x = net["conv_in"](x)
        for block in net["blocks"]:
            x = block(x)
        return net["conv_out"](F.silu(x))

    def encode(self, x: Tensor) -> Tensor:
        return (self._run(self.encoder, self._patchify(x)) - self.config.shift) * self.config.scale

    def decode(self, z: Tensor) -> Tensor:
        return self._unpatchify(self._run(self.decoder, z / self.config.scale + self.config.shift)).clamp(-1, 1)


# --------------------------------------------------------------------------- audio


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ frame, frame = D.T @ coefficients."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi / n * (i + 0.5) * k) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


class _AudioLatentGrid:
    config: AudioCodecConfig

    @property
    def channels(self) -> int:
        return self.config.channels

    def latent_count(self, num_samples: int) -> int:
        """Latent steps for ``num_samples`` samples (the last frame is zero-padded)."""
        return max(1, math.ceil(num_samples / self.config.hop))

    def latent_shape(self, num_samples: int) -> tuple[int, int]:
        """(N, C) for a clip of ``num_samples`` samples."""
        return (self.latent_count(num_samples), self.channels)

    def latent_times(self, num_samples: int) -> Tensor:
        """Centre time in seconds of each latent step: step i covers samples [i*hop, (i+1)*hop)."""
        n = self.latent_count(num_samples)
        return ((torch.arange(n, dtype=torch.float64) + 0.5) * self.config.hop / self.config.sample_rate).float()

    def num_samples(self, duration: float) -> int:
        return int(round(duration * self.config.sample_rate))

    def _frames(self, x: Tensor) -> Tensor:
        """(B, S) -> (B, N, hop), zero-padded at the end."""
        hop = self.config.hop
        n = self.latent_count(x.shape[-1])
        return F.pad(x, (0, n * hop - x.shape[-1])).reshape(x.shape[0], n, hop)


class DCTAudioCodec(nn.Module, _AudioLatentGrid):
    """Framing + orthonormal DCT-II per frame, keeping the lowest ``latent_channels``
    coefficients: (B, S) <-> (B, ceil(S/hop), latent_channels)."""

    Config = AudioCodecConfig

    def __init__(self, config: AudioCodecConfig):
        super().__init__()
        self.config = config
        self.register_buffer("basis", dct_matrix(config.hop)[: config.latent_channels], persistent=False)  # (C, hop)

    def encode(self, x: Tensor) -> Tensor:
        return (self._frames(x) @ self.basis.T - self.config.shift) * self.config.scale  # (B, N, C)

    def decode(self, z: Tensor, num_samples: int | None = None) -> Tensor:
        frames = (z / self.config.scale + self.config.shift) @ self.basis  # (B, N, hop)
        x = frames.reshape(z.shape[0], -1)
        return x[:, :num_samples] if num_samples is not None else x


class _Res1d(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv1d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv1d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvAudioVAE(nn.Module, _AudioLatentGrid):
    """Convolutional audio autoencoder at the fixed rate sample_rate / hop: frames of ``hop``
    samples are the input channels of a 1D residual conv stack (the encoder's mean)."""

    Config = AudioCodecConfig

    def __init__(self, config: AudioCodecConfig):
        super().__init__()
        self.config = config
        h, z = config.hidden_channels, config.latent_channels
        self.encoder = nn.ModuleDict(
            {
                "conv_in": nn.Conv1d(config.hop, h, 1),
                "blocks": nn.ModuleList(_Res1d(h) for _ in range(config.num_res_blocks)),
                "conv_out": nn.Conv1d(h, z, 1),
            }
        )
        self.decoder = nn.ModuleDict(
            {
                "conv_in": nn.Conv1d(z, h, 1),
                "blocks": nn.ModuleList(_Res1d(h) for _ in range(config.num_res_blocks)),
                "conv_out": nn.Conv1d(h, config.hop, 1),
            }
        )

    @staticmethod
    def _run(net: nn.ModuleDict, x: Tensor) -> Tensor:
        x = net["conv_in"](x)
        for block in net["blocks"]:
            x = block(x)
        return net["conv_out"](F.silu(x))

    def encode(self, x: Tensor) -> Tensor:
        z = self._run(self.encoder, self._frames(x).transpose(1, 2)).transpose(1, 2)  # (B, N, C)
        return (z - self.config.shift) * self.config.scale

    def decode(self, z: Tensor, num_samples: int | None = None) -> Tensor:
        frames = self._run(self.decoder, (z / self.config.scale + self.config.shift).transpose(1, 2)).transpose(1, 2)
        x = frames.reshape(z.shape[0], -1)
        return x[:, :num_samples] if num_samples is not None else x


# --------------------------------------------------------------------------- loading


def load_frozen_weights(module: nn.Module, path: str, what: str, adapt=None) -> None:
    """Load ``module``'s weights from a local safetensors file, strictly; never unpickles.
    ``adapt`` maps the file's keys to the module's (a state-dict adapter).

    Errors are one line naming the file, the config field and what to do."""
    from safetensors.torch import load_file

    if not path:
        raise FileNotFoundError(f"{what}.weights is empty; set it to a local .safetensors file with the pretrained weights (nothing is downloaded)")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}.weights: {path} does not exist; point it at a local .safetensors file (nothing is downloaded)")
    try:
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{what}.weights: {path} is not a readable safetensors file ({exc}); re-export the weights with safetensors") from None
    if adapt is not None:  # a state-dict adapter: a third-party key layout -> ours
        state = adapt(state)
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing '{missing[0]}'" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected '{unexpected[0]}'" + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        raise ValueError(f"{what}.weights: {path} does not match the configured architecture: {', '.join(parts)}; set {what} to the sizes the file was saved with")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{what}.weights: {path}: '{k}' has shape {tuple(state[k].shape)}, the config builds {tuple(v.shape)}; set {what} to the sizes the file was saved with")
    module.load_state_dict(state, strict=True)

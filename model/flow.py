"""Flow matching (MAVIN eq. 1) and the Euler ODE sampler.

Training: z_t = (1 - t) z_0 + t eps with eps ~ N(0, I); both towers regress the velocity
v = eps - z_0 (the time derivative of z_t), loss = w_v * ||v_v - v*_v||^2 + w_a * ||v_a - v*_a||^2
with w_v = 0.85, w_a = 0.15 (MAVIN appendix C.2). The squared error is averaged over the latent
tokens only: identity anchors, conditioning and padding carry no loss. t is drawn uniformly
(eq. 1) or from a logit-normal.

Sampling: integrate dz/dt = v from t = 1 (noise) to t = 0 (data) with Euler steps
z_{t'} = z_t + (t' - t) v(z_t, t), optionally with classifier-free guidance
v = v_null + w (v_cond - v_null), where the null branch sees the null caption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "FlowConfig",
    "euler_sample",
    "euler_step",
    "interpolate",
    "masked_mse",
    "sample_timesteps",
    "time_shared_noise",
    "sampling_schedule",
    "velocity_target",
]


@dataclass(frozen=True)
class FlowConfig:
    video_weight: float = 0.85
    audio_weight: float = 0.15
    timestep_sampling: str = "uniform"  # uniform (MAVIN eq. 1) | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    caption_dropout: float = 0.1  # share of training samples that see the null caption (for CFG)
    sample_steps: int = 25
    guidance: float = 1.0  # 1 = no classifier-free guidance
    shift: float = 1.0  # sampling-schedule shift t' = s t / (1 + (s - 1) t); 1 = uniform steps
    # Share of the video noise variance common to every latent time step at one spatial
    # position and channel (the "mixed" noise prior; 0 = i.i.d. noise). See time_shared_noise.
    video_noise_shared: float = 0.0

    def __post_init__(self) -> None:
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"flow.timestep_sampling '{self.timestep_sampling}' is unknown; use 'uniform' or 'logit_normal'")
        if not 0.0 <= self.video_noise_shared < 1.0:
            raise ValueError(f"flow.video_noise_shared must be in [0, 1), got {self.video_noise_shared}")


def interpolate(z0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """z_t = (1 - t) z_0 + t eps; t (B,) broadcasts over the remaining dims."""
    t = t.reshape(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
    return (1 - t) * z0 + t * eps


def time_shared_noise(
    independent: Tensor, draw_shared: Callable[[], Tensor], video_pos: Tensor, share: float, channel_groups: int = 1
) -> Tensor:
    """Video noise correlated over time: ``sqrt(share) * shared[row, col] + sqrt(1 - share) * independent``.

    The mixed noise prior of "Preserve Your Own Correlation: A Noise Prior for Video Diffusion
    Models" (Ge et al., 2023): every latent token's noise has unit variance, and a ``share`` of
    it is the same for all latent time steps at one spatial position (row, col of
    ``video_pos``, (B, N, 3)), so a clip starts from noise that already agrees over time and
    the sampler does not have to invent the same content independently at every time step.
    ``independent`` is a standard normal (B, N, C) draw; ``draw_shared()`` makes another one,
    called only when ``share`` > 0 (so i.i.d. noise leaves the caller's random stream as it
    was), and is read at index ``row * width + col``. ``channel_groups`` > 1 says a token's channels hold that many
    consecutive frames in equal blocks (the patch codec's temporal stride): the common part is
    then also the same in every block, i.e. the same for every frame. Training and sampling
    must use the same prior."""
    if share <= 0.0:
        return independent
    shared = draw_shared()
    rows, cols = video_pos[..., 1].long(), video_pos[..., 2].long()
    width = int(cols.max().item()) + 1 if cols.numel() else 1
    index = (rows * width + cols).clamp(0, shared.shape[1] - 1)
    common = torch.gather(shared, 1, index[..., None].expand(-1, -1, shared.shape[-1]))
    C = common.shape[-1]
    if channel_groups > 1:
        if C % channel_groups:
            raise ValueError(f"{C} channels do not split into {channel_groups} equal frame blocks")
        common = common[..., : C // channel_groups].repeat(1, 1, channel_groups)
    return math.sqrt(share) * common + math.sqrt(1.0 - share) * independent


def velocity_target(z0: Tensor, eps: Tensor) -> Tensor:
    """v* = d z_t / d t = eps - z_0."""
    return eps - z0


def sample_timesteps(n: int, config: FlowConfig, generator: torch.Generator | None = None, device=None) -> Tensor:
    """n flow times in (0, 1): uniform, or sigmoid(N(mean, std)) for logit-normal."""
    if config.timestep_sampling == "uniform":
        return torch.rand(n, generator=generator, device=device)
    z = torch.randn(n, generator=generator, device=device) * config.logit_std + config.logit_mean
    return torch.sigmoid(z)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the tokens where ``mask`` (B, N) is True and all channels."""
    m = mask[..., None].to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp(min=1.0)


def sampling_schedule(steps: int, shift: float = 1.0) -> Tensor:
    """steps + 1 times from 1 to 0; with shift s, t' = s t / (1 + (s - 1) t)."""
    if steps < 1:
        raise ValueError(f"sampling needs at least 1 step, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def euler_step(z: Tensor, v: Tensor, t: float | Tensor, t_next: float | Tensor) -> Tensor:
    """One Euler step of dz/dt = v from t to t_next (t_next < t when sampling)."""
    return z + (t_next - t) * v


VelocityFn = Callable[[Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor]]


def euler_sample(
    velocity: VelocityFn,
    z_video: Tensor,
    z_audio: Tensor,
    video_mask: Tensor,
    audio_mask: Tensor,
    steps: int,
    guidance: float = 1.0,
    shift: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Integrate from t = 1 to t = 0. ``velocity(z_video, z_audio, t, null)`` returns both
    towers' velocities (``null``: the null-caption branch). Only tokens where the masks are True
    move; anchors and padding stay as given."""
    schedule = sampling_schedule(steps, shift)
    B = z_video.shape[0]
    for t, t_next in zip(schedule[:-1].tolist(), schedule[1:].tolist()):
        tt = torch.full((B,), t, dtype=z_video.dtype, device=z_video.device)
        v_v, v_a = velocity(z_video, z_audio, tt, False)
        if guidance != 1.0:
            u_v, u_a = velocity(z_video, z_audio, tt, True)
            v_v, v_a = u_v + guidance * (v_v - u_v), u_a + guidance * (v_a - u_a)
        z_video = torch.where(video_mask[..., None], euler_step(z_video, v_v, t, t_next), z_video)
        z_audio = torch.where(audio_mask[..., None], euler_step(z_audio, v_a, t, t_next), z_audio)
    return z_video, z_audio

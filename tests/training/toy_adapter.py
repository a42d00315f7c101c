"""A toy dual-tower model behind the training ModelAdapter interface.

It exercises the training machinery (precompute, schedule, DeepSpeed engine, checkpoints,
MLflow) in seconds, independently of model/: video latents are 4x4-pooled frames at the
4x temporal stride, audio latents framewise log-energy features, text tokens hashed caption
words. The towers are small but real (self-attention, text attention, A/V cross-attention,
identity embeddings), named like the project's model so recipes.PARAM_GROUPS select them.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from mavin_ops import mtss

VOCAB = 512
TOKENS = 24
AUDIO_RATE = 25  # latents per second
D = 16


class _Tower(nn.Module):
    """One tower; the audio tower's submodules carry the ``audio_`` prefix (mirrored names)."""

    def __init__(self, c_in: int, audio: bool):
        super().__init__()
        pre = "audio_" if audio else ""
        self.names = {k: pre + k for k in ("proj_in", "attn1", "attn2", "ff", "proj_out")}
        setattr(self, self.names["proj_in"], nn.Linear(c_in, D))
        setattr(self, self.names["attn1"], nn.MultiheadAttention(D, 2, batch_first=True))
        setattr(self, self.names["attn2"], nn.MultiheadAttention(D, 2, batch_first=True))
        setattr(self, self.names["ff"], nn.Sequential(nn.Linear(D + 1, 2 * D), nn.GELU(), nn.Linear(2 * D, D)))
        setattr(self, self.names["proj_out"], nn.Linear(D, c_in))

    def part(self, name: str) -> nn.Module:
        return getattr(self, self.names[name])

    def encode(self, z: torch.Tensor, text: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        h = self.part("proj_in")(z) + anchor[:, None, :]
        h = h + self.part("attn1")(h, h, h, need_weights=False)[0]  # self-attention
        return h + self.part("attn2")(h, text, text, need_weights=False)[0]  # text attention

    def decode(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t[:, None, None].expand(-1, h.shape[1], 1)
        return self.part("proj_out")(h + self.part("ff")(torch.cat([h, tt], -1)))


class ToyModel(nn.Module):
    """Two mirrored towers, text attention, and A/V cross-attention
    (``audio_to_video_attn``: Q video, K/V audio; ``video_to_audio_attn`` the mirror)."""

    def __init__(self) -> None:
        super().__init__()
        self.text_embed = nn.Embedding(VOCAB, D)
        self.role_embed = nn.Parameter(torch.zeros(4, D))
        self.timbre_proj = nn.Linear(D, D)
        self.video = _Tower(3, audio=False)
        self.audio = _Tower(4, audio=True)
        self.audio_to_video_attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.video_to_audio_attn = nn.MultiheadAttention(D, 2, batch_first=True)

    def forward(self, zv: torch.Tensor, za: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, n_roles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.text_embed(tokens)  # (B, L, D)
        ids = self.role_embed.sum(0, keepdim=True) * n_roles[:, None].float() / 4  # (B, D)
        hv = self.video.encode(zv, text, ids)  # (B, Nv, D)
        ha = self.audio.encode(za, text, self.timbre_proj(ids))  # (B, Na, D)
        hv = hv + self.audio_to_video_attn(hv, ha, ha, need_weights=False)[0]
        ha = ha + self.video_to_audio_attn(ha, hv, hv, need_weights=False)[0]
        return self.video.decode(hv, t), self.audio.decode(ha, t)


def _tokens(text: str) -> np.ndarray:
    ids = [zlib.crc32(w.encode()) % (VOCAB - 1) + 1 for w in text.lower().split()][:TOKENS]
    return np.asarray(ids + [0] * (TOKENS - len(ids)), dtype=np.int64)


class ToyAdapter:
    """ModelAdapter for :class:`ToyModel`."""

    name = "toy"

    def __init__(self, preset: str = "debug"):
        self.preset = preset

    def build(self) -> nn.Module:
        return ToyModel()

    def config(self) -> dict[str, Any]:
        return {"kind": "toy", "d": D, "vocab": VOCAB, "tokens": TOKENS}

    def encoder_fingerprint(self) -> str:
        return hashlib.sha256(b"toy-encoder-v1").hexdigest()

    def encode_clip(self, clip: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        frames = clip.frames[::4].astype(np.float32) / 127.5 - 1.0  # (F', 32, 32, 3)
        f, h, w, c = frames.shape
        zv = frames.reshape(f, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(f * 16, c)
        hop = clip.sample_rate // AUDIO_RATE
        n = len(clip.waveform) // hop
        wav = clip.waveform[: n * hop].reshape(n, hop)
        bands = np.stack([np.log1p(50 * np.abs(np.fft.rfft(wav, axis=1))[:, i::4].mean(1)) for i in range(4)], 1)
        cap = mtss.compile_caption(clip.script)
        text = " ".join(c.text for c in cap.captions())
        return (
            {"video": zv.astype(np.float32), "audio": bands.astype(np.float32), "tokens": _tokens(text)},
            {"n_roles_custom": len(clip.ref_images) + len(clip.ref_audio)},
        )

    def collate(self, records: list[Any]) -> dict[str, torch.Tensor]:
        return {
            "video": torch.stack([r.tensors["video"] for r in records]),
            "audio": torch.stack([r.tensors["audio"] for r in records]),
            "tokens": torch.stack([r.tensors["tokens"] for r in records]),
            "n_roles": torch.tensor([min(4, r.meta.get("n_custom_roles", 0)) for r in records]),
        }

    def losses(self, model: Any, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        zv, za = batch["video"], batch["audio"]
        b = zv.shape[0]
        t = torch.rand(b, generator=generator)
        ev, ea = torch.randn(zv.shape, generator=generator), torch.randn(za.shape, generator=generator)
        xv = (1 - t[:, None, None]) * zv + t[:, None, None] * ev  # flow matching: z_t = (1-t) z_0 + t eps
        xa = (1 - t[:, None, None]) * za + t[:, None, None] * ea
        pv, pa = model(xv, xa, t, batch["tokens"], batch["n_roles"])
        return {"video": ((pv - (ev - zv)) ** 2).mean(), "audio": ((pa - (ea - za)) ** 2).mean()}

"""The dual-tower diffusion transformer (MAVIN section 4.1 on an OVI / LTX-2 style backbone).

A video tower and an audio tower with mirrored names (``attn1`` / ``audio_attn1``). Per block:

1. self-attention per tower (``attn1`` / ``audio_attn1``), 3D rotary (time, row, col) for
   video and 1D rotary (time) for audio; identity-aware masks (i) and (ii);
2. hierarchical text attention (``attn2`` / ``audio_attn2``): Q from the latents, K/V from
   the caption tokens, with the boundary-aware routing mask: softmax(QK^T/sqrt(d) + log M)V
   (MAVIN eq. 3) - a boolean mask M is exactly ``+ log M`` (0 or -inf);
3. audio-video cross-attention on a shared time axis (``audio_to_video_attn``: Q video,
   K/V audio; ``video_to_audio_attn``: Q audio, K/V video), both read the same states; the
   rotary phase of every token is its time in seconds, so the attention logits depend on the
   time *difference* between a video and an audio token;
4. feed-forward (``ff`` / ``audio_ff``).

Every sub-layer is AdaLN-modulated by the timestep (shift, scale, gate); ``initialize_weights``
zeroes the modulation (adaLN-Zero, as in DiT) so each block starts as the identity and the
output heads start at zero. Identity anchors (MAVIN eq. 5) are clean conditioning tokens:
they are modulated with t = 0 while latent tokens use the sampled t.

The forward is a pure function of tensors: token features, positions, role slots and the six
attention masks (dense bool tensors, or FlexAttention block masks on CUDA), so it exports to
ONNX with the masks as inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Attention", "DiTConfig", "DualTowerBlock", "DualTowerDiT", "TimbreEncoder", "attend", "rope_tables"]


@dataclass(frozen=True)
class DiTConfig:
    width: int = 192
    heads: int = 4
    depth: int = 2  # blocks per tower
    ffn_dim: int = 384
    time_dim: int = 64  # timestep embedding width feeding the AdaLN projections
    patch_size: int = 1  # spatial patch over the video latent grid
    max_roles: int = 3  # customized roles per clip (MAVIN's limit)
    qk_norm: bool = True
    rope_theta: float = 10000.0
    rope_time_scale: float = 25.0  # rotary position units per second
    anchor_time: float = -1.0  # seconds: where identity anchors sit on the time axis
    # Reference media become identity anchor tokens (MAVIN eq. 5). False = the "w/o reference
    # anchors" ablation: the roles keep their slots, but no reference image or voice reaches
    # the model.
    reference_anchors: bool = True
    # What each tower's output head predicts: "velocity" (v directly) or "data" (the clean
    # latent x, turned into v = (z_t - x) / max(t, min_t) inside forward: callers always get v).
    prediction: str = "velocity"  # video tower
    audio_prediction: str = "velocity"
    min_t: float = 0.05

    def build(self, video_dim: int, audio_dim: int, text_dim: int) -> "DualTowerDiT":
        return DualTowerDiT(self, video_dim, audio_dim, text_dim)


# --------------------------------------------------------------------------- attention


def rope_tables(pos: Tensor, dims: tuple[int, ...], scales: tuple[float, ...], theta: float) -> tuple[Tensor, Tensor]:
    """Rotary tables from positions ``pos`` (B, N, A): axis a rotates ``dims[a]`` channels of
    the head (an even count) at frequencies theta^(-2i/dims[a]) per ``scales[a]`` position
    units. Returns cos, sin of shape (B, 1, N, sum(dims)/2)."""
    angles = []
    for a, (d, s) in enumerate(zip(dims, scales)):
        inv = theta ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d)  # (d/2,)
        angles.append(pos[..., a : a + 1].float() * s * inv)  # (B, N, d/2)
    ang = torch.cat(angles, dim=-1)[:, None]
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
    """Rotate channel pairs (i, i + hd/2) of x (B, nh, N, hd)."""
    if rope is None:
        return x
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def rope_split(head_dim: int, axes: int) -> tuple[int, ...]:
    """Split a head into per-axis even channel counts; the remainder goes to time (axis 0)."""
    each = 2 * (head_dim // (2 * axes))
    return (head_dim - each * (axes - 1),) + (each,) * (axes - 1)


_compiled_flex = None


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled_flex
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():  # eager flex on CPU is the unfused reference path; that is intended
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, block_mask=block_mask)


def attend(q: Tensor, k: Tensor, v: Tensor, mask) -> Tensor:
    """softmax(QK^T/sqrt(d) + log M) V for q (B, nh, Nq, hd), k/v (B, nh, Nk, hd).

    ``mask``: None (everything visible), a (B, Nq, Nk) bool tensor (SDPA, any backend, ONNX),
    or a FlexAttention ``BlockMask``. A query row that sees nothing (a padding token, an
    anchor with no partner) yields zeros, never NaN, in both paths."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if isinstance(mask, Tensor):
        sees = mask.any(dim=-1, keepdim=True)  # (B, Nq, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=(mask | ~sees)[:, None])
        return out * sees[:, None].to(out.dtype)
    return _flex(q, k, v, mask)  # FlexAttention returns zeros for fully masked rows


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head attention; K/V from ``context`` when given (cross-attention)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, context: Tensor | None = None, mask=None, rope_q=None, rope_k=None) -> Tensor:
        B, N, D = x.shape
        ctx = x if context is None else context
        q = self.to_q(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, N, hd)
        k = self.to_k(ctx).view(B, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)  # (B, nh, M, hd)
        v = self.to_v(ctx).view(B, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(self.norm_q(q), rope_q), apply_rope(self.norm_k(k), rope_k)
        out = attend(q, k, v, mask)  # (B, nh, N, hd)
        return self.to_out(out.transpose(1, 2).reshape(B, N, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


# --------------------------------------------------------------------------- conditioning


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to [0, 1000] as in DiT): (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimbreEncoder(nn.Module):
    """The timbre embedding e_j of MAVIN eq. 5: a per-frame MLP over role j's reference-voice
    latents, averaged over the role's frames and projected. The paper uses a pretrained
    timbre encoder on the waveform; ours is small, trainable and reads the audio front end."""

    def __init__(self, audio_dim: int, width: int, max_roles: int):
        super().__init__()
        self.max_roles = max_roles
        self.frame = nn.Sequential(nn.Linear(audio_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.proj = nn.Linear(width, width)

    def forward(self, audio: Tensor, audio_role: Tensor) -> Tensor:
        """audio (B, Na, audio_dim), audio_role (B, Na) slot or -1 -> e per token (B, Na, width), 0 off anchors."""
        onehot = (audio_role[..., None] == torch.arange(self.max_roles, device=audio.device)).to(audio.dtype)  # (B, Na, R)
        h = self.frame(audio)  # (B, Na, width)
        mean = onehot.transpose(1, 2) @ h / onehot.sum(1)[..., None].clamp(min=1.0)  # (B, R, width)
        return onehot @ self.proj(mean)  # (B, Na, width)


class _Modulation:
    """Per-token AdaLN rows (shift, scale, gate, ...): latent tokens take the row at t, anchors
    the clean row at t = 0. Scale rows are stored as 1 + scale so each use is one fused op."""

    def __init__(self, table: Tensor, shared: Tensor, is_anchor: Tensor):
        K = table.shape[0]
        one = torch.zeros(K, 1, dtype=table.dtype, device=table.device)
        one[1::3] = 1.0  # rows 1, 4, 7, 10 (and 1 of the head's two) are scales
        self.m = shared + table + one  # (B, 2, K, D): [noisy t, clean]
        self.is_anchor = is_anchor[..., None]  # (B, N, 1)

    def __getitem__(self, k: int) -> Tensor:
        return torch.where(self.is_anchor, self.m[:, 1, k][:, None], self.m[:, 0, k][:, None])  # (B, N, D)

    def modulate(self, h: Tensor, k: int) -> Tensor:
        """h * (1 + scale_k+1) + shift_k."""
        return torch.addcmul(self[k], h, self[k + 1])

    def gated(self, x: Tensor, y: Tensor, k: int) -> Tensor:
        """x + gate_k * y."""
        return torch.addcmul(x, self[k], y)


# --------------------------------------------------------------------------- block


class DualTowerBlock(nn.Module):
    """One block of both towers. Modulation rows: (shift, scale, gate) for self-attention,
    text attention, A/V cross-attention and feed-forward."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d, h, qn = cfg.width, cfg.heads, cfg.qk_norm
        norm = lambda: nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)  # noqa: E731
        # video tower                                     # audio tower (mirrored)
        self.norm1, self.audio_norm1 = norm(), norm()
        self.attn1, self.audio_attn1 = Attention(d, h, qn), Attention(d, h, qn)
        self.norm2, self.audio_norm2 = norm(), norm()
        self.attn2, self.audio_attn2 = Attention(d, h, qn), Attention(d, h, qn)
        self.norm3, self.audio_norm3 = norm(), norm()
        self.audio_to_video_attn = Attention(d, h, qn)  # Q: video; K, V: audio
        self.video_to_audio_attn = Attention(d, h, qn)  # Q: audio; K, V: video
        self.norm4, self.audio_norm4 = norm(), norm()
        self.ff, self.audio_ff = FeedForward(d, cfg.ffn_dim), FeedForward(d, cfg.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(12, d))
        self.audio_scale_shift_table = nn.Parameter(torch.zeros(12, d))

    def forward(self, x, a, text, mod_v, mod_a, is_va, is_aa, masks, ropes):
        mv = _Modulation(self.scale_shift_table, mod_v, is_va)
        ma = _Modulation(self.audio_scale_shift_table, mod_a, is_aa)

        # 1. self-attention per tower (identity-aware masks (i), (ii))
        x = mv.gated(x, self.attn1(mv.modulate(self.norm1(x), 0), mask=masks["video_self"], rope_q=ropes["video"], rope_k=ropes["video"]), 2)
        a = ma.gated(a, self.audio_attn1(ma.modulate(self.audio_norm1(a), 0), mask=masks["audio_self"], rope_q=ropes["audio"], rope_k=ropes["audio"]), 2)

        # 2. hierarchical text attention with boundary-aware routing (MAVIN eq. 3-4)
        x = mv.gated(x, self.attn2(mv.modulate(self.norm2(x), 3), context=text, mask=masks["video_text"]), 5)
        a = ma.gated(a, self.audio_attn2(ma.modulate(self.audio_norm2(a), 3), context=text, mask=masks["audio_text"]), 5)

        # 3. audio-video cross-attention on the shared time axis (both read the same states)
        hv = mv.modulate(self.norm3(x), 6)
        ha = ma.modulate(self.audio_norm3(a), 6)
        dx = self.audio_to_video_attn(hv, context=ha, mask=masks["av"], rope_q=ropes["video_time"], rope_k=ropes["audio_time"])
        da = self.video_to_audio_attn(ha, context=hv, mask=masks["va"], rope_q=ropes["audio_time"], rope_k=ropes["video_time"])
        x, a = mv.gated(x, dx, 8), ma.gated(a, da, 8)

        # 4. feed-forward
        x = mv.gated(x, self.ff(mv.modulate(self.norm4(x), 9)), 11)
        a = ma.gated(a, self.audio_ff(ma.modulate(self.audio_norm4(a), 9)), 11)
        return x, a


# --------------------------------------------------------------------------- model


class DualTowerDiT(nn.Module):
    """Velocity predictor v_theta for both towers (MAVIN eq. 1)."""

    Config = DiTConfig

    def __init__(self, config: DiTConfig, video_dim: int, audio_dim: int, text_dim: int):
        super().__init__()
        self.config = config
        self.video_dim, self.audio_dim, self.text_dim = video_dim, audio_dim, text_dim
        d = config.width
        for name in ("prediction", "audio_prediction"):
            if getattr(config, name) not in ("velocity", "data"):
                raise ValueError(f"denoiser.{name} '{getattr(config, name)}' is unknown; use 'velocity' or 'data'")
        if d % config.heads or (d // config.heads) % 2:
            raise ValueError(f"denoiser.width {d} must split into {config.heads} heads of an even size")
        # token embedders                                  # audio tower (mirrored)
        self.patch_embed = nn.Linear(video_dim, d)
        self.audio_patch_embed = nn.Linear(audio_dim, d)
        self.text_embed = nn.Sequential(nn.Linear(text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        # identity embeddings p_j^v, p_j^a and the timbre encoder (MAVIN eq. 5)
        self.role_embed = nn.Embedding(config.max_roles, d)
        self.audio_role_embed = nn.Embedding(config.max_roles, d)
        self.timbre_encoder = TimbreEncoder(audio_dim, d, config.max_roles)
        # timestep: shared embedding, one AdaLN projection per tower (12 block rows + 2 head rows)
        self.time_embed = nn.Sequential(nn.Linear(256, config.time_dim), nn.SiLU(), nn.Linear(config.time_dim, config.time_dim))
        self.time_modulation = nn.Linear(config.time_dim, 14 * d)
        self.audio_time_modulation = nn.Linear(config.time_dim, 14 * d)
        self.blocks = nn.ModuleList(DualTowerBlock(config) for _ in range(config.depth))
        # output heads
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.audio_norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, d))
        self.audio_scale_shift_table = nn.Parameter(torch.zeros(2, d))
        self.proj_out = nn.Linear(d, video_dim)
        self.audio_proj_out = nn.Linear(d, audio_dim)
        hd = d // config.heads
        self._video_rope_dims = rope_split(hd, 3)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, small embeddings, and adaLN-Zero: every modulation projection and
        table and both output projections start at zero (gates closed, outputs zero)."""
        if any(p.is_meta for p in self.parameters()):
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.role_embed.weight, std=0.02)
        nn.init.normal_(self.audio_role_embed.weight, std=0.02)
        for lin in (self.time_modulation, self.audio_time_modulation, self.proj_out, self.audio_proj_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for block in self.blocks:
            nn.init.zeros_(block.scale_shift_table)
            nn.init.zeros_(block.audio_scale_shift_table)
        nn.init.zeros_(self.scale_shift_table)
        nn.init.zeros_(self.audio_scale_shift_table)

    def forward(
        self,
        video: Tensor,  # (B, Nv, video_dim) noisy latent tokens, then clean anchors
        audio: Tensor,  # (B, Na, audio_dim)
        text: Tensor,  # (B, L, text_dim) caption features (zeros = the null caption)
        t: Tensor,  # (B,) flow time in [0, 1]
        video_pos: Tensor,  # (B, Nv, 3) time (s), row, col
        audio_pos: Tensor,  # (B, Na, 1) time (s)
        video_role: Tensor,  # (B, Nv) role slot of an anchor, -1 otherwise
        audio_role: Tensor,  # (B, Na)
        video_self_mask,  # (B, Nv, Nv) bool | BlockMask
        audio_self_mask,  # (B, Na, Na)
        video_text_mask,  # (B, Nv, L)
        audio_text_mask,  # (B, Na, L)
        av_mask,  # (B, Nv, Na): video queries, audio keys
        va_mask=None,  # (B, Na, Nv); default: av_mask transposed (dense masks; None = no masks)
    ) -> tuple[Tensor, Tensor]:
        cfg = self.config
        B = video.shape[0]
        is_va, is_aa = video_role >= 0, audio_role >= 0  # (B, N) anchor tokens

        # 1. embed tokens; anchors add their role embedding p_j (and the timbre e_j): MAVIN eq. 5
        x = self.patch_embed(video) + self.role_embed(video_role.clamp(min=0)) * is_va[..., None]  # (B, Nv, D)
        a = self.audio_patch_embed(audio) + (
            self.audio_role_embed(audio_role.clamp(min=0)) * is_aa[..., None] + self.timbre_encoder(audio, audio_role)
        )  # (B, Na, D)
        c = self.text_embed(text)  # (B, L, D)

        # 2. timestep modulation: row 0 at t for latent tokens, row 1 at t = 0 for anchors
        temb = F.silu(self.time_embed(timestep_embedding(torch.stack([t, torch.zeros_like(t)], dim=1))))  # (B, 2, time_dim)
        mod_v = self.time_modulation(temb).view(B, 2, 14, cfg.width)
        mod_a = self.audio_time_modulation(temb).view(B, 2, 14, cfg.width)

        # 3. rotary tables: (time, row, col) for video self-attention, time for the rest
        ts = cfg.rope_time_scale
        ropes = {
            "video": rope_tables(video_pos, self._video_rope_dims, (ts, 1.0, 1.0), cfg.rope_theta),
            "audio": rope_tables(audio_pos[..., :1], (cfg.width // cfg.heads,), (ts,), cfg.rope_theta),
            "video_time": rope_tables(video_pos[..., :1], (cfg.width // cfg.heads,), (ts,), cfg.rope_theta),
        }
        ropes["audio_time"] = ropes["audio"]
        masks = {
            "video_self": video_self_mask,
            "audio_self": audio_self_mask,
            "video_text": video_text_mask,
            "audio_text": audio_text_mask,
            "av": av_mask,
            "va": va_mask,
        }
        if va_mask is None and isinstance(av_mask, Tensor):
            masks["va"] = av_mask.transpose(1, 2)  # V->A sees exactly what A->V sees
        elif va_mask is None and av_mask is not None:
            raise ValueError("va_mask is required with FlexAttention block masks; pass Batch.block_masks() whole")

        # 4. blocks
        for block in self.blocks:
            x, a = block(x, a, c, mod_v[:, :, :12], mod_a[:, :, :12], is_va, is_aa, masks, ropes)

        # 5. output heads: final AdaLN, linear to latent channels
        hv = _Modulation(self.scale_shift_table, mod_v[:, :, 12:], is_va)
        ha = _Modulation(self.audio_scale_shift_table, mod_a[:, :, 12:], is_aa)
        video_out = self.proj_out(hv.modulate(self.norm_out(x), 0))  # (B, Nv, video_dim)
        audio_out = self.audio_proj_out(ha.modulate(self.audio_norm_out(a), 0))  # (B, Na, audio_dim)
        # x-prediction, v-loss ("Back to Basics: Let Denoising Generative Models Denoise",
        # Li and He, 2025): with latent tokens as wide as the model (raw patches, DCT frames),
        # predicting the clean latent is far easier than predicting the noise; v = (z_t - x) / t.
        tt = t.clamp(min=cfg.min_t)[:, None, None]
        if cfg.prediction == "data":
            video_out = (video - video_out) / tt.to(video_out.dtype)
        if cfg.audio_prediction == "data":
            audio_out = (audio - audio_out) / tt.to(audio_out.dtype)
        return video_out, audio_out

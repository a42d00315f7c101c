"""The batch API: per-clip media or latents + compiled captions + reference media -> padded
token tensors, masks and loss masks.

Per clip, the video sequence is [latent tokens | visual anchors of each customized role |
padding] and the audio sequence is [latent tokens | vocal anchors | padding] (MAVIN eq. 5:
anchors are concatenated to the latent codes). Caption tokens are the captions of
``HierarchicalCaption.captions()`` tokenized one by one and concatenated.

Positions: a video token carries (time in seconds, row, col) on the DiT patch grid, an audio
token its time. Latent times are the codecs' ``latent_times``. A reference image sits at
``anchor_time`` (default -1 s, before the clip) and a reference voice ends there, so anchors
never share a latent token's place on the time axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from torch import Tensor

from mavin_ops.mtss import HierarchicalCaption

from .codecs import audio_to_tensor, frames_to_tensor
from .masks import MASK_NAMES, GroupMask, TokenLayout, clip_group_masks
from .text import tokenize_caption

if TYPE_CHECKING:
    from .mavin import MavinModel

__all__ = ["Batch", "ClipInput", "ClipMeta", "RoleReference", "prepare_batch", "unpatchify"]


@dataclass(frozen=True)
class RoleReference:
    """Reference media of one customized role (MAVIN section 4.3)."""

    image: np.ndarray | Tensor | None = None  # (H, W, 3) uint8
    audio: np.ndarray | Tensor | None = None  # (S,) float32 at the audio codec's sample rate


@dataclass(frozen=True)
class ClipInput:
    """One clip for training (media or latents given) or generation (only the caption)."""

    caption: HierarchicalCaption
    video: np.ndarray | Tensor | None = None  # (F, H, W, 3) uint8, F = 4k+1
    audio: np.ndarray | Tensor | None = None  # (S,) float32
    references: Mapping[str, RoleReference] = field(default_factory=dict)
    video_latent: Tensor | None = None  # (C, T', H', W'), precomputed instead of ``video``
    audio_latent: Tensor | None = None  # (N, C), precomputed instead of ``audio``
    height: int | None = None  # frame size when generating (default: the codec config's)
    width: int | None = None


@dataclass(frozen=True)
class ClipMeta:
    """What decoding and the masks need to know about one clip of a batch."""

    layout: TokenLayout
    num_frames: int
    height: int
    width: int
    num_samples: int
    latent_shape: tuple[int, int, int, int]  # video (C, T', H', W')
    video_tokens: int  # latent tokens (anchors follow)
    audio_tokens: int
    text_tokens: int


@dataclass
class Batch:
    """Padded tensors for a batch of clips. ``video``/``audio`` hold the clean latent tokens z_0
    (zeros when generating) followed by the anchors; the loss masks mark latent tokens."""

    video: Tensor  # (B, Nv, Dv)
    audio: Tensor  # (B, Na, Da)
    video_pos: Tensor  # (B, Nv, 3) float: time (s), row, col
    audio_pos: Tensor  # (B, Na, 1) float: time (s)
    video_role: Tensor  # (B, Nv) long: anchor's role slot, -1 elsewhere
    audio_role: Tensor  # (B, Na) long
    video_loss_mask: Tensor  # (B, Nv) bool: latent tokens
    audio_loss_mask: Tensor  # (B, Na) bool
    text_ids: Tensor  # (B, L) long
    text_segment: Tensor  # (B, L) long: caption index 1..C, 0 = padding
    text_position: Tensor  # (B, L) long: position inside the caption
    masks: dict[str, GroupMask]  # MASK_NAMES -> factorised mask
    clips: list[ClipMeta]

    def to(self, device) -> "Batch":
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, Tensor)}
        return replace(self, **moved, masks={k: m.to(device) for k, m in self.masks.items()})

    def dense_masks(self) -> dict[str, Tensor]:
        """The five dense masks the denoiser takes (``va`` is ``av`` transposed)."""
        return {f"{n}_mask": self.masks[n].dense() for n in MASK_NAMES if n != "va"}

    def block_masks(self, block_size: int = 128, compile: bool = False) -> dict:
        """FlexAttention block masks for all six attentions (CUDA; CPU runs them eagerly)."""
        return {f"{n}_mask": self.masks[n].block_mask(block_size, compile) for n in MASK_NAMES}

    def denoiser_inputs(self, video: Tensor, audio: Tensor, text: Tensor, t: Tensor, masks: dict | None = None) -> dict:
        """Keyword arguments for ``DualTowerDiT.forward``; ``masks`` defaults to the dense ones."""
        return dict(
            video=video,
            audio=audio,
            text=text,
            t=t,
            video_pos=self.video_pos,
            audio_pos=self.audio_pos,
            video_role=self.video_role,
            audio_role=self.audio_role,
            **(masks if masks is not None else self.dense_masks()),
        )

    def text_inputs(self) -> dict:
        return dict(ids=self.text_ids, segment=self.text_segment, position=self.text_position)


def _pad(rows: list[np.ndarray | Tensor], fill, dtype) -> Tensor:
    n = max(len(r) for r in rows)
    first = torch.as_tensor(rows[0])
    out = torch.full((len(rows), n, *first.shape[1:]), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=dtype)
    return out


def _patchify(z: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """(C, T, H, W) -> tokens (T*H/p*W/p, C*p*p) and (row, col) per token on the patch grid."""
    C, T, H, W = z.shape
    if H % p or W % p:
        raise ValueError(f"latent grid {H}x{W} is not divisible by the denoiser patch size {p}; change denoiser.patch_size or the frame size")
    x = z.reshape(C, T, H // p, p, W // p, p).permute(1, 2, 4, 0, 3, 5).reshape(T * (H // p) * (W // p), C * p * p)
    rows, cols = torch.meshgrid(torch.arange(H // p), torch.arange(W // p), indexing="ij")
    rc = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float().repeat(T, 1)
    return x, rc


def unpatchify(tokens: Tensor, shape: tuple[int, int, int, int], p: int) -> Tensor:
    """Inverse of the patch tokenization: (T*H/p*W/p, C*p*p) -> (C, T, H, W)."""
    C, T, H, W = shape
    return tokens.reshape(T, H // p, W // p, C, p, p).permute(3, 0, 1, 4, 2, 5).reshape(C, T, H, W)


def _clip_tokens(model: "MavinModel", clip: ClipInput, index: int) -> dict:
    cfg = model.config
    vc, ac = model.video_codec, model.audio_codec
    cap = clip.caption
    where = f"clip {cap.clip_id} (batch item {index})"
    fps, sr = cfg.video_codec.fps, cfg.audio_codec.sample_rate
    p = cfg.denoiser.patch_size

    # 1. video latents: encode frames, take precomputed latents, or zeros of the right shape
    if clip.video is not None:
        frames = frames_to_tensor(clip.video)
        num_frames, height, width = frames.shape[1:4]
        z_video = vc.encode(frames.to(model.codec_device))[0].float().cpu()
    elif clip.video_latent is not None:
        z_video = torch.as_tensor(clip.video_latent).float()
        num_frames = vc.num_frames(z_video.shape[1])
        s = cfg.video_codec.spatial_stride
        height, width = z_video.shape[2] * s, z_video.shape[3] * s
    else:
        num_frames = int(round(cap.duration * fps))
        height, width = clip.height or cfg.video_codec.height, clip.width or cfg.video_codec.width
        z_video = torch.zeros(vc.latent_shape(num_frames, height, width))
    if abs(num_frames / fps - cap.duration) >= 1.0 / fps:
        raise ValueError(f"{where}: the video has {num_frames} frames ({num_frames / fps:.3f} s at {fps:g} fps) but the caption lasts {cap.duration:.3f} s; pass the matching clip")
    latent_shape = vc.latent_shape(num_frames, height, width)
    if tuple(z_video.shape) != latent_shape:
        raise ValueError(f"{where}: video latent has shape {tuple(z_video.shape)}, expected {latent_shape}")
    v_tokens, v_rc = _patchify(z_video, p)
    steps_t = vc.latent_times(num_frames)
    v_times = steps_t.repeat_interleave(v_tokens.shape[0] // len(steps_t))

    # 2. audio latents
    if clip.audio is not None:
        wave = audio_to_tensor(clip.audio)
        num_samples = wave.shape[1]
        a_tokens = ac.encode(wave.to(model.codec_device))[0].float().cpu()
    elif clip.audio_latent is not None:
        a_tokens = torch.as_tensor(clip.audio_latent).float()
        num_samples = ac.num_samples(cap.duration)
    else:
        num_samples = ac.num_samples(cap.duration)
        a_tokens = torch.zeros(ac.latent_shape(num_samples))
    if tuple(a_tokens.shape) != ac.latent_shape(num_samples):
        raise ValueError(f"{where}: audio latent has shape {tuple(a_tokens.shape)}, expected {ac.latent_shape(num_samples)} for {num_samples} samples")
    a_times = ac.latent_times(num_samples)

    # 3. identity anchors of the customized roles (MAVIN eq. 5), slot order = caption order
    roles = tuple(r.role_id for r in cap.roles if r.customized)
    limit = cfg.denoiser.max_roles
    if len(roles) > limit:
        raise ValueError(f"{where}: {len(roles)} customized roles ({', '.join(roles)}); the model takes at most {limit} (denoiser.max_roles); drop reference media or raise the limit")
    unknown = sorted(set(clip.references) - set(roles))
    if unknown:
        raise ValueError(f"{where}: references given for {', '.join(unknown)}, which the caption does not list as customized roles; cite the media in the script's reference stream")
    t0 = cfg.denoiser.anchor_time
    v_rows, v_pos, v_role = [v_tokens], [torch.cat([v_times[:, None], v_rc], dim=-1)], [torch.full((len(v_tokens),), -1)]
    a_rows, a_pos, a_role = [a_tokens], [a_times[:, None]], [torch.full((len(a_tokens),), -1)]
    v_counts, a_counts = [], []
    for j, rid in enumerate(roles):
        ref = clip.references.get(rid)
        if ref is None or (ref.image is None and ref.audio is None):
            raise ValueError(f"{where}: role {rid} is customized (its script cites reference media) but no reference media was passed; load its image/audio into ClipInput.references")
        n_v = n_a = 0
        if not cfg.denoiser.reference_anchors:
            ref = RoleReference()
        if ref.image is not None:
            img = frames_to_tensor(np.asarray(ref.image)[None] if not isinstance(ref.image, Tensor) else ref.image[None])
            zi = vc.encode(img.to(model.codec_device))[0].float().cpu()  # (C, 1, H', W')
            tok, rc = _patchify(zi, p)
            v_rows.append(tok)
            v_pos.append(torch.cat([torch.full((len(tok), 1), t0), rc], dim=-1))
            v_role.append(torch.full((len(tok),), j))
            n_v = len(tok)
        if ref.audio is not None:
            wave = audio_to_tensor(ref.audio)[:, : int(cfg.audio_codec.max_reference_seconds * sr)]
            za = ac.encode(wave.to(model.codec_device))[0].float().cpu()  # (N, C)
            n_a = len(za)
            hop_s = cfg.audio_codec.hop / sr
            a_rows.append(za)
            a_pos.append((t0 - (n_a - torch.arange(n_a) - 0.5) * hop_s)[:, None])  # the voice ends at anchor_time
            a_role.append(torch.full((n_a,), j))
        v_counts.append(n_v)
        a_counts.append(n_a)

    # 4. caption tokens, caption by caption
    toks = tokenize_caption(cap, model.tokenizer, cfg.text.max_caption_tokens)
    layout = TokenLayout(
        caption=cap,
        video_times=v_times.numpy().astype(np.float64),
        audio_times=a_times.numpy().astype(np.float64),
        captions=toks.captions,
        text_segment=np.asarray(toks.segment, dtype=np.int64),
        roles=roles,
        video_anchors=tuple(v_counts),
        audio_anchors=tuple(a_counts),
    )
    meta = ClipMeta(layout, num_frames, height, width, num_samples, latent_shape, len(v_tokens), len(a_tokens), len(toks.ids))
    return dict(
        video=torch.cat(v_rows),
        audio=torch.cat(a_rows),
        video_pos=torch.cat(v_pos).float(),
        audio_pos=torch.cat(a_pos).float(),
        video_role=torch.cat(v_role).long(),
        audio_role=torch.cat(a_role).long(),
        video_loss=torch.arange(sum(len(r) for r in v_rows)) < len(v_tokens),
        audio_loss=torch.arange(sum(len(r) for r in a_rows)) < len(a_tokens),
        text_ids=np.asarray(toks.ids),
        text_segment=np.asarray(toks.segment),
        text_position=np.asarray(toks.position),
        meta=meta,
    )


def prepare_batch(model: "MavinModel", clips: list[ClipInput]) -> Batch:
    """Turn clips into a padded :class:`Batch` (CPU tensors; ``.to(device)`` to move).

    ``model`` needs only ``config``, ``video_codec``, ``audio_codec``, ``tokenizer`` and
    ``codec_device`` (a ``MavinModel``, or an encoder-side object without the denoiser)."""
    if not clips:
        raise ValueError("prepare_batch got no clips; pass at least one ClipInput")
    items = [_clip_tokens(model, c, i) for i, c in enumerate(clips)]
    routing = model.config.routing
    groups = [clip_group_masks(it["meta"].layout, routing) for it in items]
    masks = {}
    for name in MASK_NAMES:
        masks[name] = GroupMask(_pad([g[name][0] for g in groups], 0, torch.long), _pad([g[name][1] for g in groups], 0, torch.long))
    return Batch(
        video=_pad([it["video"] for it in items], 0.0, torch.float32),
        audio=_pad([it["audio"] for it in items], 0.0, torch.float32),
        video_pos=_pad([it["video_pos"] for it in items], 0.0, torch.float32),
        audio_pos=_pad([it["audio_pos"] for it in items], 0.0, torch.float32),
        video_role=_pad([it["video_role"] for it in items], -1, torch.long),
        audio_role=_pad([it["audio_role"] for it in items], -1, torch.long),
        video_loss_mask=_pad([it["video_loss"] for it in items], False, torch.bool),
        audio_loss_mask=_pad([it["audio_loss"] for it in items], False, torch.bool),
        text_ids=_pad([it["text_ids"] for it in items], 0, torch.long),
        text_segment=_pad([it["text_segment"] for it in items], 0, torch.long),
        text_position=_pad([it["text_position"] for it in items], 0, torch.long),
        masks=masks,
        clips=[it["meta"] for it in items],
    )

"""Boundary-aware routing masks (MAVIN eq. 3-4) and identity-aware masks (MAVIN section 4.3).

Every attention in a block gets one boolean visibility mask, query tokens x key tokens:

=============  ======================  ======================  ===========================
name           queries                 keys                    rule
=============  ======================  ======================  ===========================
video_self     video seq               video seq               scope + identity (i)
audio_self     audio seq               audio seq               scope + identity (ii)
video_text     video seq               caption tokens          eq. 4 + identity (iii)
audio_text     audio seq               caption tokens          audio rule + identity (iii)
av             video seq               audio seq               A->V cross-attn, identity (iv)
va             audio seq               video seq               V->A cross-attn (= av^T)
=============  ======================  ======================  ===========================

A tower's sequence is its latent tokens followed by the identity anchors of the customized
roles (slot order), then padding. Latent token k has a time tau(k) in seconds (the centre of
the span it covers) and belongs to the shot i whose interval T_i^s holds tau(k) (a token whose
centre lies past the clip end belongs to the last shot).

Boundary-aware routing (``boundary_routing``; off = the paper's "w/o BTR" ablation):

- video token k in shot i sees (eq. 4): the global caption g; shot i's caption s_i; the visual
  descriptor d_j^v of every role j in R_i (the roles present in shot i).
- audio token k sees: g; the audio descriptor d_j^a of every role j with tau(k) in T_j^r (its
  dialogue intervals); and - our decision, the paper leaves it open - the caption of the shot
  holding tau(k), because shot captions carry the dialogue lines and sound events of that
  shot (``audio_sees_shot_captions``). Audio tokens never see visual descriptors.
- with routing off every latent token sees every caption token (plain cross-attention).

Identity-aware masks (``identity_mask``; off = "w/o IM"), for the anchors of eq. 5:

- (i) video token of shot i sees the video tokens of its scope and the visual anchors of the
  roles present in shot i; (ii) audio token sees the audio tokens of its scope and the vocal
  anchors of the roles speaking at tau(k); anchors of role j see only role j's anchors.
- (iii) in text attention, anchors of role j see only role j's captions (d_j^v, d_j^a).
- (iv) in A/V cross-attention, role j's visual and vocal anchors see each other only; latent
  tokens see no anchors there.
- with the identity mask off, anchors and latents see each other freely.

Latent-to-latent reach (our choices, both config):

- ``self_attention_scope``: ``clip`` (default: a latent token sees every latent token of its
  tower, as in the backbone) or ``shot`` (only its own shot: the literal reading of (i)).
- ``cross_modal_scope``: ``shot`` (default: A/V cross-attention stays inside a shot, so audio
  of shot 2 cannot carry shot 2's caption into shot 1's video) or ``clip``.

What is guaranteed, exactly: with routing on, a text-attention layer's output for shot i's
tokens does not depend on any other shot's caption. With the default scopes this holds for
the whole output of a one-block denoiser; with ``self_attention_scope='shot'`` it holds at any
depth. With ``clip`` scope, deeper blocks mix shots through self-attention (that is the
backbone working as designed, not leakage from routing). The tests check each statement.

Two implementations of the same masks. Each mask is stored factorised: every key token has a
group id (1..62; 0 = padding) and every query token a 64-bit set of visible groups, and
``visible(q, k) = (q_bits[q] >> k_group[k]) & 1``. ``GroupMask.dense()`` materialises a
(B, Nq, Nk) bool tensor for any SDPA backend and for ONNX; ``GroupMask.block_mask()`` gives the
same predicate to FlexAttention's ``create_block_mask`` (block-sparse, for CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from mavin_ops.mtss import TIME_EPS, HierarchicalCaption

__all__ = [
    "MASK_NAMES",
    "GroupMask",
    "RoutingConfig",
    "TokenLayout",
    "block_masks",
    "clip_group_masks",
    "dense_masks",
]

MASK_NAMES = ("video_self", "audio_self", "video_text", "audio_text", "av", "va")
MAX_GROUP = 62  # group ids live in bits 1..62 of an int64 (0 is padding; the sign bit is unused)


@dataclass(frozen=True)
class RoutingConfig:
    boundary_routing: bool = True  # MAVIN eq. 3-4; False = "w/o BTR"
    identity_mask: bool = True  # MAVIN section 4.3 (i)-(iv); False = "w/o IM"
    self_attention_scope: str = "clip"  # clip | shot
    cross_modal_scope: str = "shot"  # shot | clip
    audio_sees_shot_captions: bool = True

    def __post_init__(self) -> None:
        if self.self_attention_scope not in ("clip", "shot"):
            raise ValueError(f"routing.self_attention_scope '{self.self_attention_scope}' is unknown; use 'clip' or 'shot'")
        if self.cross_modal_scope not in ("clip", "shot"):
            raise ValueError(f"routing.cross_modal_scope '{self.cross_modal_scope}' is unknown; use 'shot' or 'clip'")


@dataclass(frozen=True, eq=False)
class TokenLayout:
    """Where every token of one clip sits, and when: all the masks need."""

    caption: HierarchicalCaption
    video_times: np.ndarray  # (n_video_latent,) seconds
    audio_times: np.ndarray  # (n_audio_latent,) seconds
    captions: tuple[tuple[str, str], ...]  # (level, key) per text segment 1..C
    text_segment: np.ndarray  # (n_text,) caption index 1..C of each text token
    roles: tuple[str, ...] = ()  # customized roles, slot order
    video_anchors: tuple[int, ...] = ()  # anchor tokens per slot
    audio_anchors: tuple[int, ...] = ()

    @property
    def video_len(self) -> int:
        return len(self.video_times) + sum(self.video_anchors)

    @property
    def audio_len(self) -> int:
        return len(self.audio_times) + sum(self.audio_anchors)

    def shot_index(self, times: np.ndarray) -> np.ndarray:
        """Shot i with tau in T_i^s (shots are contiguous and ordered); past the end: the last."""
        starts = np.array([s.spans[0].start for s in self.caption.shots])
        return np.clip(np.searchsorted(starts, np.asarray(times) + TIME_EPS, side="right") - 1, 0, len(starts) - 1)


@dataclass(frozen=True)
class GroupMask:
    """A factorised visibility mask: ``visible[b, q, k] = (q_bits[b, q] >> k_group[b, k]) & 1``."""

    q_bits: Tensor  # (B, Nq) int64
    k_group: Tensor  # (B, Nk) int64

    def dense(self) -> Tensor:
        """(B, Nq, Nk) bool, for SDPA and ONNX."""
        return ((self.q_bits[:, :, None] >> self.k_group[:, None, :]) & 1).bool()

    def mask_mod(self):
        q_bits, k_group = self.q_bits, self.k_group

        def mask_mod(b, h, q_idx, kv_idx):
            return ((q_bits[b, q_idx] >> k_group[b, kv_idx]) & 1) == 1

        return mask_mod

    def block_mask(self, block_size: int = 128, compile: bool = False):
        """A FlexAttention ``BlockMask`` with the same predicate (heads broadcast)."""
        from torch.nn.attention.flex_attention import create_block_mask

        B, Nq = self.q_bits.shape
        Nk = self.k_group.shape[1]
        return create_block_mask(self.mask_mod(), B, None, Nq, Nk, device=self.q_bits.device, BLOCK_SIZE=block_size, _compile=compile)

    def to(self, device) -> "GroupMask":
        return GroupMask(self.q_bits.to(device), self.k_group.to(device))


def _bits(groups) -> int:
    out = 0
    for g in groups:
        out |= 1 << int(g)
    return out


def clip_group_masks(layout: TokenLayout, routing: RoutingConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every mask of one clip, factorised: name -> (q_bits (Nq,), k_group (Nk,)) int64, no padding."""
    cap = layout.caption
    S, R = len(cap.shots), len(layout.roles)
    C = len(layout.captions)
    if 1 + S + R > MAX_GROUP or C > MAX_GROUP:
        raise ValueError(
            f"clip {cap.clip_id}: {S} shots, {R} customized roles and {C} captions exceed the {MAX_GROUP} mask groups; split the clip"
        )
    shot_ids = [s.key for s in cap.shots]
    vshot = layout.shot_index(layout.video_times)  # (Nv,) shot index per video latent token
    ashot = layout.shot_index(layout.audio_times)

    # Key groups: latent tokens of shot i -> 1 + i; anchors of slot j -> 1 + S + j; caption c -> c.
    def seq_groups(shots: np.ndarray, anchors: tuple[int, ...]) -> np.ndarray:
        g = [1 + shots] + [np.full(n, 1 + S + j) for j, n in enumerate(anchors)]
        return np.concatenate(g).astype(np.int64)

    kg_video = seq_groups(vshot, layout.video_anchors)
    kg_audio = seq_groups(ashot, layout.audio_anchors)
    kg_text = np.asarray(layout.text_segment, dtype=np.int64)

    all_shots = _bits(range(1, S + 1))
    all_anchors = _bits(range(1 + S, 1 + S + R))
    all_text = _bits(range(1, C + 1))
    anchor = [_bits([1 + S + j]) for j in range(R)]

    # Caption segments by role: the global caption, each shot's caption, role j's descriptors.
    seg = {key: c for c, key in enumerate(layout.captions, start=1)}
    g_bit = _bits([seg[("global", "")]])
    shot_cap = [_bits([seg[("shot", k)]]) if ("shot", k) in seg else 0 for k in shot_ids]
    role_caps = {}  # role id -> bits of d_j^v and d_j^a
    for level, key in layout.captions:
        if level in ("role_visual", "role_audio"):
            role_caps[key] = role_caps.get(key, 0) | _bits([seg[(level, key)]])
    # R_i: roles present in shot i (visual descriptor routing); T_j^r: dialogue spans.
    present = [[r.role_id for r in cap.roles if sid in r.visual.shots] for sid in shot_ids]
    visual_in_shot = [_bits(seg[("role_visual", rid)] for rid in rids if ("role_visual", rid) in seg) for rids in present]
    slot = {rid: j for j, rid in enumerate(layout.roles)}
    anchors_in_shot = [_bits(1 + S + slot[rid] for rid in rids if rid in slot) for rids in present]

    def speaking(tau: float) -> list[str]:
        return [r.role_id for r in cap.roles if r.audio is not None and any(sp.contains(tau) for sp in r.audio.spans)]

    im, btr = routing.identity_mask, routing.boundary_routing
    self_scope = (lambda i: all_shots) if routing.self_attention_scope == "clip" else (lambda i: _bits([1 + i]))
    cross_scope = (lambda i: all_shots) if routing.cross_modal_scope == "clip" else (lambda i: _bits([1 + i]))
    free = all_shots | all_anchors  # what an anchor sees without the identity mask

    def with_anchor_rows(latent_rows: list[int], anchors: tuple[int, ...], im_rows, free_rows: int) -> np.ndarray:
        rows = list(latent_rows)
        for j, n in enumerate(anchors):
            rows += [im_rows(j) if im else free_rows] * n
        return np.array(rows, dtype=np.int64)

    # Video self-attention: (i).
    v_self = [self_scope(i) | (anchors_in_shot[i] if im else all_anchors) for i in vshot]
    # Audio self-attention: (ii), vocal anchors of the roles speaking at tau(k).
    a_speak = [speaking(float(t)) for t in layout.audio_times]
    a_self = [self_scope(i) | (_bits(1 + S + slot[r] for r in sp if r in slot) if im else all_anchors) for i, sp in zip(ashot, a_speak)]
    # Text attention: eq. 4 for video; the audio rule; (iii) for anchors.
    if btr:
        v_text = [g_bit | shot_cap[i] | visual_in_shot[i] for i in vshot]
        a_text = [
            g_bit
            | (shot_cap[i] if routing.audio_sees_shot_captions else 0)
            | _bits(seg[("role_audio", r)] for r in sp if ("role_audio", r) in seg)
            for i, sp in zip(ashot, a_speak)
        ]
    else:
        v_text = [all_text] * len(vshot)
        a_text = [all_text] * len(ashot)
    role_text = lambda j: role_caps.get(layout.roles[j], 0)  # noqa: E731
    # A/V cross-attention: latent tokens by shot; (iv) anchors of the same role only.
    av = [cross_scope(i) | (0 if im else all_anchors) for i in vshot]
    va = [cross_scope(i) | (0 if im else all_anchors) for i in ashot]

    return {
        "video_self": (with_anchor_rows(v_self, layout.video_anchors, lambda j: anchor[j], free), kg_video),
        "audio_self": (with_anchor_rows(a_self, layout.audio_anchors, lambda j: anchor[j], free), kg_audio),
        "video_text": (with_anchor_rows(v_text, layout.video_anchors, role_text, all_text), kg_text),
        "audio_text": (with_anchor_rows(a_text, layout.audio_anchors, role_text, all_text), kg_text),
        "av": (with_anchor_rows(av, layout.video_anchors, lambda j: anchor[j], free), kg_audio),
        "va": (with_anchor_rows(va, layout.audio_anchors, lambda j: anchor[j], free), kg_video),
    }


def dense_masks(layout: TokenLayout, routing: RoutingConfig) -> dict[str, np.ndarray]:
    """One clip's masks as (Nq, Nk) bool arrays (no padding)."""
    return {name: ((q[:, None] >> k[None, :]) & 1).astype(bool) for name, (q, k) in clip_group_masks(layout, routing).items()}


def block_masks(masks: dict[str, GroupMask], block_size: int = 128, compile: bool = False) -> dict:
    """FlexAttention block masks for every attention of a batch."""
    return {name: m.block_mask(block_size, compile) for name, m in masks.items()}

"""Text: tokenizers and text encoders for the hierarchical caption.

MAVIN section 4.2 conditions the towers on a hierarchical caption (eq. 2): a global caption,
one caption per shot and, per role, a visual and an audio descriptor. Routing (eq. 3-4)
needs to know which caption every text token came from, so the caption is tokenized
*caption by caption* and concatenated, and every token keeps its caption index
(``segment``, 1-based; 0 is padding) and its position inside its caption.

The encoders attend only within a caption (a block-diagonal mask), so a token's features
depend on its own caption alone: editing shot 2's caption cannot change the global
caption's features, which is what lets the routing mask keep shot 1 clean.

Tokenizers (deterministic, nothing downloaded):

- ``bytes``: UTF-8 bytes, ids 3..258.
- ``words``: lower-cased words and punctuation; a fixed word list (``vocab``, built from text
  with :func:`build_vocab` and stored in the model config) and hashed buckets (CRC-32) for
  words outside it, so any text tokenizes.
- ``unigram``: a SentencePiece-style unigram model read from a local ``tokenizer.json``
  (the format T5/UMT5 tokenizers ship in), segmented by Viterbi. Used with the pretrained
  ``t5`` encoder of the ``paper`` preset.

Encoders: ``small`` (a trainable pre-LN transformer, debug/tiny) and ``t5`` (a frozen T5 /
UMT5 encoder loaded from a local safetensors file in the usual T5 key layout).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mavin_ops.mtss import HierarchicalCaption

from .codecs import load_frozen_weights

__all__ = [
    "ByteTokenizer",
    "CaptionTokens",
    "SmallTextEncoder",
    "T5Encoder",
    "TextConfig",
    "UnigramTokenizer",
    "WordTokenizer",
    "build_vocab",
    "tokenize_caption",
]

PAD, BOS, UNK = 0, 1, 2
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TextConfig:
    tokenizer: str = "words"  # bytes | words | unigram
    vocab: tuple[str, ...] = ()  # words: the fixed word list
    vocab_size: int = 2048  # words: total ids (3 specials + vocab + hashed buckets); t5: token table size
    tokenizer_file: str = ""  # unigram: local tokenizer.json
    max_caption_tokens: int = 48  # each caption is cut to this many tokens
    encoder: str = "small"  # small | t5
    width: int = 64  # small: model width; t5: d_model
    depth: int = 2
    heads: int = 2
    ffn_dim: int = 128
    # t5 only
    weights: str = ""  # local safetensors (T5 / UMT5 encoder key layout)
    head_dim: int = 64
    relative_buckets: int = 32
    relative_max_distance: int = 128
    bias_per_layer: bool = True  # UMT5: a relative bias table in every layer; T5: first layer only

    @property
    def trainable(self) -> bool:
        return self.encoder == "small"

    def build_tokenizer(self) -> "ByteTokenizer | WordTokenizer | UnigramTokenizer":
        if self.tokenizer == "bytes":
            return ByteTokenizer()
        if self.tokenizer == "words":
            return WordTokenizer(self.vocab, self.vocab_size)
        if self.tokenizer == "unigram":
            return UnigramTokenizer.from_file(self.tokenizer_file)
        raise ValueError(f"text.tokenizer '{self.tokenizer}' is unknown; use 'bytes', 'words' or 'unigram'")

    def build(self, device: torch.device | str | None = None, load: bool = True) -> "SmallTextEncoder | T5Encoder":
        if self.encoder == "small":
            with torch.device(device or "cpu"):
                return SmallTextEncoder(self)
        if self.encoder == "t5":
            with torch.device(device or "cpu"):
                enc = T5Encoder(self)
            if load:
                load_frozen_weights(enc, self.weights, "text", adapt=_t5_state_adapter)
            return enc.requires_grad_(False).eval()
        raise ValueError(f"text.encoder '{self.encoder}' is unknown; use 'small' or 't5'")


def _t5_state_adapter(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A full T5 / UMT5 checkpoint -> the encoder's keys: drop the decoder and LM head; the
    token table is ``shared.weight`` (or the tied ``encoder.embed_tokens.weight``)."""
    out = {k: v for k, v in state.items() if not k.startswith(("decoder.", "lm_head.", "encoder.embed_tokens."))}
    if "shared.weight" not in out and "encoder.embed_tokens.weight" in state:
        out["shared.weight"] = state["encoder.embed_tokens.weight"]
    return out


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return [BOS] + [b + 3 for b in text.encode("utf-8")]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocab(texts: Iterable[str], max_size: int | None = None) -> tuple[str, ...]:
    """A fixed word list from text: most frequent first, ties alphabetical (deterministic)."""
    counts = Counter(w for t in texts for w in _words(t))
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return tuple(ranked[:max_size] if max_size is not None else ranked)


class WordTokenizer:
    """Words and punctuation: ids 3.. for the fixed vocabulary, then hashed buckets."""

    def __init__(self, vocab: Sequence[str], vocab_size: int):
        buckets = vocab_size - 3 - len(vocab)
        if buckets < 1:
            raise ValueError(f"text.vocab_size={vocab_size} leaves no hashed bucket for {len(vocab)} vocabulary words; set it above {len(vocab) + 3}")
        self.vocab_size = vocab_size
        self._index = {w: 3 + i for i, w in enumerate(vocab)}
        self._base = 3 + len(vocab)
        self._buckets = buckets

    def encode(self, text: str) -> list[int]:
        ids = [BOS]
        for w in _words(text):
            i = self._index.get(w)
            ids.append(i if i is not None else self._base + zlib.crc32(w.encode("utf-8")) % self._buckets)
        return ids


class UnigramTokenizer:
    """SentencePiece-style unigram segmentation from a local ``tokenizer.json``.

    Normalization is NFKC plus whitespace collapsing with the metaspace '▁' prefix; the
    precompiled character map some tokenizers ship is not applied (NFKC covers the common
    cases). An end-of-sequence piece '</s>' is appended when the vocabulary has one."""

    def __init__(self, pieces: Sequence[tuple[str, float]], unk_id: int):
        self.vocab_size = len(pieces)
        self._score = {p: s for p, s in pieces}
        self._id = {p: i for i, (p, _) in enumerate(pieces)}
        self._max_len = max(len(p) for p, _ in pieces)
        self.unk_id = unk_id
        self.eos_id = self._id.get("</s>")

    @classmethod
    def from_file(cls, path: str) -> "UnigramTokenizer":
        p = Path(path) if path else None
        if p is None or not p.is_file():
            raise FileNotFoundError(f"text.tokenizer_file: '{path}' does not exist; point it at a local tokenizer.json (unigram model)")
        try:
            model = json.loads(p.read_text(encoding="utf-8"))["model"]
        except (KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"text.tokenizer_file: {path} is not a tokenizer.json with a 'model' entry ({exc})") from None
        if model.get("type") != "Unigram":
            raise ValueError(f"text.tokenizer_file: {path} holds a '{model.get('type')}' model; only 'Unigram' is supported")
        pieces = [(str(p), float(s)) for p, s in model["vocab"]]
        return cls(pieces, int(model.get("unk_id") or 0))

    def encode(self, text: str) -> list[int]:
        text = "▁" + "▁".join(unicodedata.normalize("NFKC", text).split())
        n = len(text)
        best = [0.0] + [-math.inf] * n  # best log-probability of text[:i]
        back: list[tuple[int, int]] = [(0, -1)] * (n + 1)  # (start, piece id or -1 for unknown char)
        for end in range(1, n + 1):
            for start in range(max(0, end - self._max_len), end):
                if best[start] == -math.inf:
                    continue
                piece = text[start:end]
                score = self._score.get(piece)
                if score is None and end - start == 1:
                    score, pid = -1e4, -1  # unknown character
                elif score is None:
                    continue
                else:
                    pid = self._id[piece]
                if best[start] + score > best[end]:
                    best[end], back[end] = best[start] + score, (start, pid)
        ids: list[int] = []
        end = n
        while end > 0:
            start, pid = back[end]
            ids.append(self.unk_id if pid < 0 else pid)
            end = start
        ids.reverse()
        return ids + ([self.eos_id] if self.eos_id is not None else [])


# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class CaptionTokens:
    """One clip's caption, tokenized caption by caption."""

    ids: tuple[int, ...]
    segment: tuple[int, ...]  # 1-based caption index per token
    position: tuple[int, ...]  # position inside its caption
    captions: tuple[tuple[str, str], ...]  # (level, key) per caption index - 1


def tokenize_caption(caption: HierarchicalCaption, tokenizer, max_caption_tokens: int) -> CaptionTokens:
    """Tokenize every caption of ``caption.captions()`` on its own (cut to
    ``max_caption_tokens``) and concatenate, keeping (level, key) per caption."""
    ids: list[int] = []
    seg: list[int] = []
    pos: list[int] = []
    keys: list[tuple[str, str]] = []
    for c, cap in enumerate(caption.captions(), start=1):
        toks = tokenizer.encode(cap.text)[:max_caption_tokens] or [UNK]
        ids += toks
        seg += [c] * len(toks)
        pos += list(range(len(toks)))
        keys.append((cap.level, cap.key))
    return CaptionTokens(tuple(ids), tuple(seg), tuple(pos), tuple(keys))


def _segment_mask(segment: Tensor) -> Tensor:
    """(B, L) caption index -> (B, 1, L, L) bool: a token sees its own caption only (padding
    sees padding, so no row is empty)."""
    return (segment[:, :, None] == segment[:, None, :])[:, None]


# --------------------------------------------------------------------------- small encoder


class _EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, width))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, L, hd)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return x + self.ff(self.norm2(x))


class SmallTextEncoder(nn.Module):
    """Trainable text encoder: token + in-caption position embeddings, pre-LN transformer
    layers that attend within a caption only. (B, L) ids -> (B, L, width)."""

    Config = TextConfig

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        vocab = config.build_tokenizer().vocab_size
        self.token_embed = nn.Embedding(vocab, config.width)
        self.pos_embed = nn.Embedding(config.max_caption_tokens, config.width)
        self.layers = nn.ModuleList(_EncoderLayer(config.width, config.heads, config.ffn_dim) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed.weight, std=0.02)

    @property
    def dim(self) -> int:
        return self.config.width

    def forward(self, ids: Tensor, segment: Tensor, position: Tensor) -> Tensor:
        mask = _segment_mask(segment)
        x = self.token_embed(ids) + self.pos_embed(position.clamp(max=self.config.max_caption_tokens - 1))
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * (segment > 0)[..., None]


# --------------------------------------------------------------------------- T5 encoder


class _T5Norm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class _T5Attention(nn.Module):
    def __init__(self, cfg: TextConfig, has_bias: bool):
        super().__init__()
        inner = cfg.heads * cfg.head_dim
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.q = nn.Linear(cfg.width, inner, bias=False)
        self.k = nn.Linear(cfg.width, inner, bias=False)
        self.v = nn.Linear(cfg.width, inner, bias=False)
        self.o = nn.Linear(inner, cfg.width, bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(cfg.relative_buckets, cfg.heads)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        B, L, _ = x.shape
        q, k, v = (m(x).reshape(B, L, self.heads, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # T5 folds the scale into its init
        return self.o(a.transpose(1, 2).reshape(B, L, -1))


class _T5Block(nn.Module):
    def __init__(self, cfg: TextConfig, has_bias: bool):
        super().__init__()
        attn = nn.Module()
        attn.SelfAttention = _T5Attention(cfg, has_bias)
        attn.layer_norm = _T5Norm(cfg.width)
        ff = nn.Module()
        ff.DenseReluDense = nn.Module()
        ff.DenseReluDense.wi_0 = nn.Linear(cfg.width, cfg.ffn_dim, bias=False)
        ff.DenseReluDense.wi_1 = nn.Linear(cfg.width, cfg.ffn_dim, bias=False)
        ff.DenseReluDense.wo = nn.Linear(cfg.ffn_dim, cfg.width, bias=False)
        ff.layer_norm = _T5Norm(cfg.width)
        self.layer = nn.ModuleList([attn, ff])


class T5Encoder(nn.Module):
    """A frozen T5 / UMT5 encoder (gated-GELU, RMS norm, bucketed relative position bias) with
    the usual T5 parameter names, so an encoder's safetensors file loads as is. Positions
    are counted inside each caption and attention stays inside a caption."""

    Config = TextConfig

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.width)
        self.encoder = nn.Module()
        self.encoder.block = nn.ModuleList(_T5Block(config, config.bias_per_layer or i == 0) for i in range(config.depth))
        self.encoder.final_layer_norm = _T5Norm(config.width)

    @property
    def dim(self) -> int:
        return self.config.width

    def _buckets(self, rel: Tensor) -> Tensor:
        """T5's bidirectional log-bucketing of relative positions (key - query)."""
        n = self.config.relative_buckets // 2
        out = (rel > 0).long() * n
        rel = rel.abs()
        exact = n // 2
        large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(self.config.relative_max_distance / exact) * (n - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=n - 1))

    def forward(self, ids: Tensor, segment: Tensor, position: Tensor) -> Tensor:
        buckets = self._buckets(position[:, None, :] - position[:, :, None])  # (B, L, L)
        masked = torch.zeros(buckets.shape, dtype=torch.float32, device=ids.device).masked_fill(~_segment_mask(segment)[:, 0], float("-inf"))
        x = self.shared(ids)
        bias = None
        for block in self.encoder.block:
            attn, ff = block.layer
            table = getattr(attn.SelfAttention, "relative_attention_bias", None)
            if table is not None:
                bias = table(buckets).permute(0, 3, 1, 2) + masked[:, None]  # (B, nh, L, L)
            x = x + attn.SelfAttention(attn.layer_norm(x), bias)
            h = ff.layer_norm(x)
            d = ff.DenseReluDense
            x = x + d.wo(F.gelu(d.wi_0(h), approximate="tanh") * d.wi_1(h))
        return self.encoder.final_layer_norm(x) * (segment > 0)[..., None]

"""Tokenizers and text encoders: deterministic, caption by caption, local files only."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mavin_ops.model.text import (
    BOS,
    ByteTokenizer,
    SmallTextEncoder,
    T5Encoder,
    TextConfig,
    UnigramTokenizer,
    WordTokenizer,
    build_vocab,
    tokenize_caption,
)


def test_byte_and_word_tokenizers_are_deterministic():
    assert ByteTokenizer().encode("Hi!") == [BOS, ord("H") + 3, ord("i") + 3, ord("!") + 3]
    vocab = build_vocab(["the man, the girl", "a man"])
    assert vocab == ("man", "the", ",", "a", "girl")  # by count, then alphabetical
    tok = WordTokenizer(vocab, vocab_size=64)
    ids = tok.encode("The MAN, zebra")
    assert ids[:4] == [BOS, 4, 3, 5]  # vocabulary words have fixed ids
    assert 3 + len(vocab) <= ids[4] < 64  # unknown words land in a hashed bucket
    assert WordTokenizer(vocab, vocab_size=64).encode("zebra") == [BOS, ids[4]]  # same bucket every time
    with pytest.raises(ValueError, match="leaves no hashed bucket"):
        WordTokenizer(vocab, vocab_size=8)


def test_caption_is_tokenized_caption_by_caption(kit):
    hc = kit.caption_of(kit.two_shot_script())
    toks = tokenize_caption(hc, ByteTokenizer(), max_caption_tokens=10)
    caps = hc.captions()
    assert toks.captions == tuple((c.level, c.key) for c in caps)
    assert len(toks.ids) == sum(min(10, len(c.text.encode()) + 1) for c in caps)
    for c in range(1, len(caps) + 1):
        positions = [p for p, s in zip(toks.position, toks.segment) if s == c]
        assert positions == list(range(len(positions)))  # positions restart per caption
        first = toks.segment.index(c)
        assert toks.ids[first] == BOS


def test_small_encoder_keeps_captions_apart(kit):
    torch.manual_seed(0)
    cfg = TextConfig(tokenizer="words", vocab_size=128, encoder="small", width=16, depth=2, heads=2, ffn_dim=32, max_caption_tokens=16)
    enc = SmallTextEncoder(cfg).eval()
    tok = cfg.build_tokenizer()
    script = kit.two_shot_script()
    a = tokenize_caption(kit.caption_of(script), tok, 16)
    script["shot"][1]["visual_description"] = "the dog sits near an old red car"
    b = tokenize_caption(kit.caption_of(script), tok, 16)
    assert len(a.ids) == len(b.ids)
    fa, fb = (enc(torch.tensor([t.ids]), torch.tensor([t.segment]), torch.tensor([t.position])) for t in (a, b))
    seg = torch.tensor(a.segment)
    assert torch.equal(fa[0, seg != 3], fb[0, seg != 3])  # only shot 2's caption (segment 3) moves
    assert not torch.allclose(fa[0, seg == 3], fb[0, seg == 3])


def _tokenizer_json(path, pieces):
    path.write_text(json.dumps({"model": {"type": "Unigram", "unk_id": 2, "vocab": pieces}}), encoding="utf-8")
    return str(path)


def test_unigram_tokenizer_viterbi(tmp_path):
    pieces = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁", -2.0], ["▁a", -1.0], ["b", -3.0], ["▁ab", -3.5], ["a", -1.0], ["c", -1.0]]
    tok = UnigramTokenizer.from_file(_tokenizer_json(tmp_path / "tokenizer.json", pieces))
    # "▁ab": one piece (-3.5) beats "▁a" + "b" (-4.0); eos appended
    assert tok.encode("ab") == [6, 1]
    # "▁ac  ▁a": whitespace collapsed, "c" is a piece, "z" is unknown
    assert tok.encode("ac   a") == [4, 8, 4, 1]
    assert tok.encode("az") == [4, 2, 1]
    with pytest.raises(FileNotFoundError, match="text.tokenizer_file: '' does not exist"):
        UnigramTokenizer.from_file("")
    bpe = tmp_path / "bpe.json"
    bpe.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match="holds a 'BPE' model; only 'Unigram' is supported"):
        UnigramTokenizer.from_file(str(bpe))


def _t5_config(tmp_path, **kw) -> TextConfig:
    pieces = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]] + [[f"▁{w}", -1.0] for w in "a man girl in the garden kitchen".split()]
    tok = _tokenizer_json(tmp_path / "tokenizer.json", pieces)
    base = dict(tokenizer="unigram", tokenizer_file=tok, vocab_size=len(pieces), encoder="t5", width=16, depth=2, heads=2, head_dim=8, ffn_dim=24, relative_buckets=8, relative_max_distance=16)
    return TextConfig(**{**base, **kw})


def test_t5_encoder_loads_a_t5_layout_file(tmp_path):
    cfg = _t5_config(tmp_path, bias_per_layer=False)
    torch.manual_seed(0)
    source = T5Encoder(cfg)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in state
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in state  # T5: first layer only
    assert "encoder.block.1.layer.1.DenseReluDense.wi_1.weight" in state
    # a full checkpoint: decoder and tied embedding keys are ignored by the adapter
    state["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(16, 16)
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    save_file({k: v.clone() for k, v in state.items()}, str(tmp_path / "t5.safetensors"))
    enc = TextConfig(**{**cfg.__dict__, "weights": str(tmp_path / "t5.safetensors")}).build()
    assert not any(p.requires_grad for p in enc.parameters())
    ids = torch.tensor([[3, 4, 1, 5, 6, 1, 0]])
    seg = torch.tensor([[1, 1, 1, 2, 2, 2, 0]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 0]])
    out = enc(ids, seg, pos)
    torch.testing.assert_close(out, source(ids, seg, pos))
    assert torch.equal(out[0, 6], torch.zeros(16))  # padding
    # captions stay apart here too
    ids2 = ids.clone()
    ids2[0, 4] = 7
    assert torch.equal(enc(ids2, seg, pos)[0, :3], out[0, :3])


def test_t5_relative_buckets(tmp_path):
    # 8 buckets: 4 per direction (+4 for keys after the query), distances 0-1 exact, then
    # 2 + floor(log(d / 2) / log(16 / 2) * 2) capped at 3: d = 2..5 -> 2, d >= 6 (> 2 sqrt 8) -> 3.
    enc = T5Encoder(_t5_config(tmp_path))
    rel = torch.tensor([0, 1, -1, 2, 5, 6, 100, -100])
    assert enc._buckets(rel).tolist() == [0, 5, 1, 6, 6, 7, 7, 3]


def test_t5_missing_weights_is_a_clear_error(tmp_path):
    cfg = _t5_config(tmp_path)
    source = T5Encoder(cfg)
    state = {k: v.contiguous() for k, v in source.state_dict().items() if "final_layer_norm" not in k}
    save_file(state, str(tmp_path / "t5.safetensors"))
    with pytest.raises(ValueError, match=r"text.weights: .* missing 'encoder.final_layer_norm.weight'; set text to the sizes"):
        TextConfig(**{**cfg.__dict__, "weights": str(tmp_path / "t5.safetensors")}).build()

"""Attention: the dense mask and the FlexAttention block mask are the same mask; masked rows
never produce NaN; the dense path is exactly softmax(QK^T/sqrt(d) + log M) V (MAVIN eq. 3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from mavin_ops.model.dit import attend, rope_tables, apply_rope
from mavin_ops.model.masks import MASK_NAMES

CUDA = torch.cuda.is_available()


def _batch(kit, model):
    """Two clips of different lengths, so padding rows and columns are in every mask."""
    script = kit.two_shot_script()
    short = dict(script, duration=1.125, event=[script["event"][0]])
    short["shot"] = [dict(script["shot"][0], time_range=[0.0, 1.125])]
    from mavin_ops.model import ClipInput

    video, audio = kit.random_media(4, frames=9, samples=9000)
    clips = [
        kit.two_shot_clip(script),
        ClipInput(kit.caption_of(short), video=video, audio=audio, references={"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)}),
    ]
    return model.prepare_batch(clips)


def test_eq3_closed_form():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 8, generator=g)
    k, v = torch.randn(2, 3, 7, 8, generator=g), torch.randn(2, 3, 7, 8, generator=g)
    mask = torch.rand(2, 5, 7, generator=g) > 0.4
    mask[0, 1] = False  # a row that sees nothing
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + torch.log(mask.float())[:, None]
    expected = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0) @ v
    got = attend(q, k, v, mask)
    assert not got.isnan().any()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[0, :, 1], torch.zeros(3, 8))


def test_block_mask_predicate_equals_dense_mask(kit):
    model = kit.debug_model()
    batch = _batch(kit, model)
    for name in MASK_NAMES:
        gm = batch.masks[name]
        B, Nq = gm.q_bits.shape
        flex_dense = create_mask(gm.mask_mod(), B, None, Nq, gm.k_group.shape[1], device="cpu")[:, 0]
        assert torch.equal(flex_dense, gm.dense()), name
    dense = batch.dense_masks()
    assert torch.equal(batch.masks["va"].dense(), dense["av_mask"].transpose(1, 2))


def _forward(model, batch, masks):
    with torch.no_grad():
        text = model.encode_text(batch)
        t = torch.tensor([0.3, 0.8])
        return model.denoiser(**batch.denoiser_inputs(batch.video, batch.audio, text, t, masks))


def test_dense_and_flex_give_the_same_denoiser_output_on_cpu(kit):
    # FlexAttention runs eagerly on CPU in torch 2.13 (the unfused reference path).
    model = kit.debug_model(**{"denoiser.depth": 2})
    batch = _batch(kit, model)
    dense = _forward(model, batch, batch.dense_masks())
    flex = _forward(model, batch, batch.block_masks(block_size=16))
    for d, f, valid in zip(dense, flex, (batch.video_loss_mask, batch.audio_loss_mask)):
        assert not f.isnan().any() and not d.isnan().any()
        torch.testing.assert_close(f, d, atol=1e-4, rtol=1e-4)
        assert d[valid].abs().mean() > 0.1  # the comparison is about real outputs


def test_padded_training_step_has_finite_gradients(kit):
    # padding rows and an anchor with no cross-modal partner (R2) see nothing
    model = kit.debug_model(std=0.1).train()
    batch = _batch(kit, model)
    out = model(**model.training_inputs(batch, torch.Generator().manual_seed(0)))
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.slow
def test_dense_and_compiled_flex_agree_on_cpu(kit):
    from torch.nn.attention.flex_attention import flex_attention

    model = kit.debug_model()
    batch = _batch(kit, model)
    gm = batch.masks["video_text"]
    g = torch.Generator().manual_seed(0)
    B, Nq = gm.q_bits.shape
    L = gm.k_group.shape[1]
    q, k, v = torch.randn(B, 2, Nq, 16, generator=g), torch.randn(B, 2, L, 16, generator=g), torch.randn(B, 2, L, 16, generator=g)
    got = torch.compile(flex_attention)(q, k, v, block_mask=gm.block_mask(block_size=16))
    torch.testing.assert_close(got, attend(q, k, v, gm.dense()), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="FlexAttention's fused block-sparse kernel needs CUDA; this machine has none")
def test_dense_and_flex_agree_on_cuda(kit):
    model = kit.debug_model(**{"denoiser.depth": 2}).cuda()
    batch = _batch(kit, model).to("cuda")
    dense = _forward(model, batch, batch.dense_masks())
    flex = _forward(model, batch, batch.block_masks(block_size=128, compile=True))
    for d, f in zip(dense, flex):
        torch.testing.assert_close(f, d, atol=2e-3, rtol=2e-3)


def test_rope_makes_cross_attention_depend_on_time_difference_only():
    # Shifting every video and audio time by the same offset leaves q.k unchanged.
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 4, 16, generator=g), torch.randn(1, 2, 6, 16, generator=g)
    tq, tk = torch.rand(1, 4, 1, generator=g) * 3, torch.rand(1, 6, 1, generator=g) * 3

    def logits(shift):
        rq = rope_tables(tq + shift, (16,), (25.0,), 10000.0)
        rk = rope_tables(tk + shift, (16,), (25.0,), 10000.0)
        return apply_rope(q, rq) @ apply_rope(k, rk).transpose(-1, -2)

    torch.testing.assert_close(logits(0.0), logits(1.7), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(0.0), q @ k.transpose(-1, -2), atol=1e-3)

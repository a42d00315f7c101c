"""Leakage: what the routing and identity masks guarantee, checked bit for bit.

The paper's claim (MAVIN eq. 3-4) is about the hierarchical text-attention layer: a latent
token of shot 1 attends to no caption token of shot 2. What that buys end to end depends on
the other attentions:

- text encoder: attends within a caption, so shot 2's caption cannot alter other captions;
- A/V cross-attention: stays inside a shot (``cross_modal_scope='shot'``);
- self-attention: with the default ``clip`` scope a block's self-attention reads the block's
  *input*, so in a one-block denoiser shot 1's output is independent of shot 2's caption; in
  deeper stacks self-attention carries shot 2's (routed) state into shot 1 - the backbone at
  work, not routing leakage. With ``self_attention_scope='shot'`` (the literal reading of
  identity mask (i)) the independence holds at any depth.

Each statement is a test below; "changes" tests prove the inputs do reach the model.
Caption edits keep the token count so the tensors keep their shapes.
"""

from __future__ import annotations

import numpy as np
import torch

from mavin_ops.model import MavinModel

V_S1 = slice(0, 48)
A_S1 = slice(0, 25)


def _outputs(model: MavinModel, clip) -> tuple[torch.Tensor, torch.Tensor]:
    batch = model.prepare_batch([clip])
    with torch.no_grad():
        text = model.encode_text(batch)
        t = torch.full((1,), 0.7)
        return model.denoiser(**batch.denoiser_inputs(batch.video, batch.audio, text, t))


def _edit_shot2(script):
    script["shot"][1]["visual_description"] = "the dog sits near an old red car"  # same word count
    return script


def _pair(kit, model, edit):
    a = kit.two_shot_clip(kit.two_shot_script())
    b = kit.two_shot_clip(edit(kit.two_shot_script()))
    ba, bb = model.prepare_batch([a]), model.prepare_batch([b])
    assert ba.text_ids.shape == bb.text_ids.shape and not torch.equal(ba.text_ids, bb.text_ids)
    return _outputs(model, a), _outputs(model, b)


def test_text_attention_layer_routes_shot1_away_from_shot2_caption(kit):
    model = kit.debug_model()
    block = model.denoiser.blocks[0]
    outs = []
    for script in (kit.two_shot_script(), _edit_shot2(kit.two_shot_script())):
        batch = model.prepare_batch([kit.two_shot_clip(script)])
        with torch.no_grad():
            text = model.denoiser.text_embed(model.encode_text(batch))
            x = model.denoiser.patch_embed(batch.video)
            outs.append(block.attn2(x, context=text, mask=batch.dense_masks()["video_text_mask"]))
    assert torch.equal(outs[0][:, V_S1], outs[1][:, V_S1])
    assert not torch.allclose(outs[0][:, 48:80], outs[1][:, 48:80])


def test_one_block_denoiser_shot1_is_bit_identical_when_shot2_caption_changes(kit):
    model = kit.debug_model()
    (va, aa), (vb, ab) = _pair(kit, model, _edit_shot2)
    assert torch.equal(va[:, V_S1], vb[:, V_S1])
    assert torch.equal(aa[:, A_S1], ab[:, A_S1])
    assert not torch.allclose(va[:, 48:80], vb[:, 48:80])  # shot 2 itself does change


def test_without_routing_shot2_caption_reaches_shot1(kit):
    model = kit.debug_model(**{"routing.boundary_routing": False})
    (va, _), (vb, _) = _pair(kit, model, _edit_shot2)
    assert (va[:, V_S1] - vb[:, V_S1]).abs().max() > 1e-4


def test_shot_scoped_self_attention_keeps_the_guarantee_at_depth(kit):
    model = kit.debug_model(**{"denoiser.depth": 3, "routing.self_attention_scope": "shot"})
    (va, aa), (vb, ab) = _pair(kit, model, _edit_shot2)
    assert torch.equal(va[:, V_S1], vb[:, V_S1])
    assert torch.equal(aa[:, A_S1], ab[:, A_S1])


def test_clip_scoped_self_attention_mixes_shots_in_deeper_blocks(kit):
    # Documents the limit of the guarantee: block 2's self-attention reads shot 2's state.
    model = kit.debug_model(**{"denoiser.depth": 2})
    (va, _), (vb, _) = _pair(kit, model, _edit_shot2)
    assert (va[:, V_S1] - vb[:, V_S1]).abs().max() > 1e-6


# --------------------------------------------------------------------------- identity


def _swap_r2_reference(kit, model, **ref_kwargs):
    refs_a = {"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)}
    refs_b = {"R1": kit.random_reference(1), "R2": kit.random_reference(99, seconds=None)}
    return (
        _outputs(model, kit.two_shot_clip(references=refs_a)),
        _outputs(model, kit.two_shot_clip(references=refs_b)),
    )


def test_identity_mask_keeps_r2_reference_out_of_shot1(kit):
    # R2 appears only in S2: with the identity mask its image cannot touch S1's tokens.
    model = kit.debug_model()
    (va, aa), (vb, ab) = _swap_r2_reference(kit, model)
    assert torch.equal(va[:, V_S1], vb[:, V_S1])
    assert torch.equal(aa[:, A_S1], ab[:, A_S1])  # S1's audio: cross-attention stays in S1
    assert torch.equal(va[:, 80:96], vb[:, 80:96])  # R1's anchors ignore R2's
    assert not torch.allclose(va[:, 48:80], vb[:, 48:80])  # S2, where R2 is, does change


def test_without_identity_mask_r2_reference_reaches_shot1(kit):
    model = kit.debug_model(**{"routing.identity_mask": False})
    (va, _), (vb, _) = _swap_r2_reference(kit, model)
    assert (va[:, V_S1] - vb[:, V_S1]).abs().max() > 1e-4


def test_role_anchors_stay_apart_at_any_depth(kit):
    model = kit.debug_model(**{"denoiser.depth": 3})
    (va, _), (vb, _) = _swap_r2_reference(kit, model)
    assert torch.equal(va[:, 80:96], vb[:, 80:96])  # R1's visual anchors, three blocks deep


def test_voice_reference_reaches_audio_only_while_the_role_speaks(kit):
    # Identity mask (ii): R1's vocal anchors are seen by audio tokens inside T_R1^r only.
    model = kit.debug_model()
    rng = np.random.default_rng(5)
    other_voice = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    from mavin_ops.model import RoleReference

    refs_a = {"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)}
    refs_b = {"R1": RoleReference(image=refs_a["R1"].image, audio=other_voice), "R2": refs_a["R2"]}
    (va, aa), (vb, ab) = _outputs(model, kit.two_shot_clip(references=refs_a)), _outputs(model, kit.two_shot_clip(references=refs_b))
    for quiet in (slice(0, 5), slice(20, 25), slice(30, 40), slice(50, 54)):  # silence, R3 speaking
        assert torch.equal(aa[:, quiet], ab[:, quiet]), quiet
    assert torch.equal(va[:, 96:112], vb[:, 96:112])  # R2's visual anchors never meet R1's voice
    assert not torch.allclose(va[:, 80:96], vb[:, 80:96])  # (iv): R1's visual anchors meet R1's voice
    assert not torch.allclose(aa[:, 40:50], ab[:, 40:50])  # R1 speaking in S2 (off screen)
    assert not torch.allclose(aa[:, 5:20], ab[:, 5:20])  # R1 speaking in S1

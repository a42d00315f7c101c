"""Truth tables of the routing mask (MAVIN eq. 4 and the audio rule) and of the identity-aware
masks (MAVIN section 4.3, (i)-(iv)) on a hand-written two-shot script (see conftest)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mavin_ops.model.masks import MASK_NAMES, GroupMask, RoutingConfig, dense_masks

G, S1, S2 = ("global", ""), ("shot", "S1"), ("shot", "S2")
R1V, R1A, R2V, R3V, R3A, R4V = ("role_visual", "R1"), ("role_audio", "R1"), ("role_visual", "R2"), ("role_visual", "R3"), ("role_audio", "R3"), ("role_visual", "R4")
ALL = {G, S1, S2, R1V, R1A, R2V, R3V, R3A, R4V}

# Token indices (debug preset: 16 video tokens per latent step, 5 steps; 54 audio latents).
V_S1, V_S2 = range(0, 48), range(48, 80)
A_S1, A_S2 = range(0, 25), range(25, 54)
A_R1_S1, A_R3, A_R1_S2 = range(5, 20), range(30, 40), range(40, 50)
V_R1_ANCHORS, V_R2_ANCHORS = range(80, 96), range(96, 112)  # one 16x16 image = 16 tokens each
A_R1_ANCHORS = range(54, 67)  # 0.5 s of reference voice = 13 latents


def _layout(kit, **routing):
    model = kit.debug_model()
    batch = model.prepare_batch([kit.two_shot_clip()])
    layout = batch.clips[0].layout
    return layout, dense_masks(layout, RoutingConfig(**routing))


def _captions(layout, row: np.ndarray) -> set:
    """The (level, key) of every caption a query row sees (and a check that it sees whole captions)."""
    segs = layout.text_segment
    seen = {int(s) for s in segs[row]}
    for s in seen:
        assert row[segs == s].all(), f"caption {s} is only partly visible"
    return {layout.captions[s - 1] for s in seen}


def test_layout_matches_the_script(kit):
    layout, _ = _layout(kit)
    assert layout.captions == (G, S1, S2, R1V, R1A, R2V, R3V, R3A, R4V)
    assert layout.roles == ("R1", "R2")
    assert layout.video_anchors == (16, 16) and layout.audio_anchors == (13, 0)
    np.testing.assert_allclose(np.unique(layout.video_times), [0.0625, 0.375, 0.875, 1.375, 1.875])
    assert list(layout.shot_index(layout.video_times[::16])) == [0, 0, 0, 1, 1]
    assert list(np.flatnonzero(layout.shot_index(layout.audio_times) == 1)) == list(A_S2)


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (V_S1, {G, S1, R1V, R4V}),  # eq. 4: global; shot 1 inside shot 1; roles in shot 1
        (V_S2, {G, S2, R2V, R3V}),  # R1 speaks in S2 off screen: its visual descriptor stays out
    ],
)
def test_video_routing_is_eq4(kit, tokens, expected):
    layout, m = _layout(kit)
    for k in tokens:
        assert _captions(layout, m["video_text"][k]) == expected, k


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (A_R1_S1, {G, S1, R1A}),  # R1's audio descriptor inside T_R1^r, with its shot's caption
        (range(0, 5), {G, S1}),  # nobody speaks: global + shot
        (range(20, 25), {G, S1}),
        (A_R3, {G, S2, R3A}),
        (A_R1_S2, {G, S2, R1A}),  # off-screen speech still routes R1's voice descriptor
        (range(50, 54), {G, S2}),  # 53 lies past the clip end: it belongs to the last shot
    ],
)
def test_audio_routing(kit, tokens, expected):
    layout, m = _layout(kit)
    for k in tokens:
        assert _captions(layout, m["audio_text"][k]) == expected, k


def test_audio_without_shot_captions(kit):
    layout, m = _layout(kit, audio_sees_shot_captions=False)
    assert _captions(layout, m["audio_text"][7]) == {G, R1A}
    assert _captions(layout, m["audio_text"][0]) == {G}


def test_routing_off_is_plain_cross_attention(kit):
    layout, m = _layout(kit, boundary_routing=False)
    for k in list(V_S1) + list(V_S2):
        assert _captions(layout, m["video_text"][k]) == ALL
    for k in range(54):
        assert _captions(layout, m["audio_text"][k]) == ALL


def _cols(row: np.ndarray) -> set[int]:
    return set(np.flatnonzero(row).tolist())


def test_identity_mask_i_video_self_attention(kit):
    _, m = _layout(kit)
    vs = m["video_self"]
    latents = set(range(80))
    for k in V_S1:  # all latent tokens (clip scope) + the anchors of R1, who is in S1
        assert _cols(vs[k]) == latents | set(V_R1_ANCHORS)
    for k in V_S2:
        assert _cols(vs[k]) == latents | set(V_R2_ANCHORS)
    for k in V_R1_ANCHORS:  # anchors of role j see role j's anchors only
        assert _cols(vs[k]) == set(V_R1_ANCHORS)
    _, m = _layout(kit, self_attention_scope="shot")
    assert _cols(m["video_self"][0]) == set(V_S1) | set(V_R1_ANCHORS)
    assert _cols(m["video_self"][60]) == set(V_S2) | set(V_R2_ANCHORS)


def test_identity_mask_ii_audio_self_attention(kit):
    _, m = _layout(kit)
    a = m["audio_self"]
    latents = set(range(54))
    for k in list(A_R1_S1) + list(A_R1_S2):  # R1 speaks: its vocal anchors are visible
        assert _cols(a[k]) == latents | set(A_R1_ANCHORS)
    for k in list(A_R3) + [0, 4, 20, 24, 50, 53]:  # R3 is not customized; silence: no anchors
        assert _cols(a[k]) == latents
    for k in A_R1_ANCHORS:
        assert _cols(a[k]) == set(A_R1_ANCHORS)


def test_identity_mask_iii_text_attention(kit):
    layout, m = _layout(kit)
    for k in V_R1_ANCHORS:
        assert _captions(layout, m["video_text"][k]) == {R1V, R1A}
    for k in V_R2_ANCHORS:
        assert _captions(layout, m["video_text"][k]) == {R2V}
    for k in A_R1_ANCHORS:
        assert _captions(layout, m["audio_text"][k]) == {R1V, R1A}


def test_identity_mask_iv_cross_attention(kit):
    _, m = _layout(kit)
    av, va = m["av"], m["va"]
    assert np.array_equal(va, av.T)
    for k in V_S1:  # latents: the other tower's latents of the same shot, no anchors
        assert _cols(av[k]) == set(A_S1)
    for k in V_S2:
        assert _cols(av[k]) == set(A_S2)
    for k in V_R1_ANCHORS:  # R1's visual anchors <-> R1's vocal anchors only
        assert _cols(av[k]) == set(A_R1_ANCHORS)
    for k in V_R2_ANCHORS:  # R2 has no voice reference: the row sees nothing (guarded in attention)
        assert _cols(av[k]) == set()
    _, m = _layout(kit, cross_modal_scope="clip")
    assert _cols(m["av"][0]) == set(range(54))


def test_identity_mask_off_lets_anchors_mix(kit):
    layout, m = _layout(kit, identity_mask=False)
    assert _cols(m["video_self"][0]) == set(range(112))
    assert _cols(m["video_self"][V_R2_ANCHORS[0]]) == set(range(112))
    assert _cols(m["audio_self"][A_R3[0]]) == set(range(67))
    assert _captions(layout, m["video_text"][V_R1_ANCHORS[0]]) == ALL
    assert _cols(m["av"][0]) == set(A_S1) | set(A_R1_ANCHORS)
    assert np.array_equal(m["va"], m["av"].T)
    # routing itself is unchanged for latent tokens
    assert _captions(layout, m["video_text"][0]) == {G, S1, R1V, R4V}


def test_batch_masks_pad_to_invisible(kit):
    model = kit.debug_model()
    short = kit.caption_of({**kit.two_shot_script(), "duration": 1.125, "shot": [dict(kit.two_shot_script()["shot"][0], time_range=[0.0, 1.125], references_in_shot=["R1"], active_events=[])], "event": []})
    video, audio = kit.random_media(3, frames=9, samples=9000)
    from mavin_ops.model import ClipInput

    clips = [kit.two_shot_clip(), ClipInput(short, video=video, audio=audio, references={"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)})]
    batch = model.prepare_batch(clips)
    dense = batch.dense_masks()
    n_v = batch.clips[1].layout.video_len
    n_t = batch.clips[1].text_tokens
    assert batch.video.shape[1] == 112 and n_v < 112
    vs = dense["video_self_mask"][1]
    assert not vs[:, n_v:].any() and not vs[n_v:].any()  # padding: no one sees it, it sees nothing
    assert not dense["video_text_mask"][1][:, n_t:].any()
    assert not batch.video_loss_mask[1, batch.clips[1].video_tokens :].any()
    assert batch.video_loss_mask[1, : batch.clips[1].video_tokens].all()
    # clip 0's masks are exactly the per-clip tables
    per_clip = dense_masks(batch.clips[0].layout, model.config.routing)
    for name in MASK_NAMES:
        key = f"{name}_mask"
        if key in dense:
            got = dense[key][0][: per_clip[name].shape[0], : per_clip[name].shape[1]].numpy()
            assert np.array_equal(got, per_clip[name]), name


def test_group_mask_dense_is_the_bit_predicate():
    q = torch.tensor([[0b0110, 0b0001, 0]])
    k = torch.tensor([[1, 2, 0, 3]])
    expected = torch.tensor([[[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]], dtype=torch.bool)
    assert torch.equal(GroupMask(q, k).dense(), expected)


def test_too_many_customized_roles_is_a_clear_error(kit, script):
    for rid in ("R3", "R4"):
        entity = next(e for e in script["reference"] if e["id"] == rid)
        entity["reference_image"] = f"refs/{rid}.png"
    model = kit.debug_model()
    refs = {r: kit.random_reference(i) for i, r in enumerate(("R1", "R2", "R3", "R4"))}
    with pytest.raises(ValueError, match=r"4 customized roles \(R1, R2, R3, R4\); the model takes at most 3 \(denoiser.max_roles\)"):
        model.prepare_batch([kit.two_shot_clip(script, references=refs)])
    # the limit is config
    big = kit.debug_model(**{"denoiser.max_roles": 4})
    batch = big.prepare_batch([kit.two_shot_clip(script, references=refs)])
    assert batch.clips[0].layout.roles == ("R1", "R2", "R3", "R4")


def test_missing_reference_media_is_a_clear_error(kit):
    model = kit.debug_model()
    with pytest.raises(ValueError, match="role R2 is customized .* no reference media was passed"):
        model.prepare_batch([kit.two_shot_clip(references={"R1": kit.random_reference(1)})])
    with pytest.raises(ValueError, match="references given for R3, which the caption does not list as customized"):
        model.prepare_batch([kit.two_shot_clip(references={"R1": kit.random_reference(1), "R2": kit.random_reference(2), "R3": kit.random_reference(3)})])


def test_without_reference_anchors_no_reference_reaches_the_model(kit):
    """The "w/o reference anchors" ablation (bench/learn.py): the roles keep their slots, no
    anchor token is made, and the output no longer depends on the reference media."""
    import torch

    on, off = kit.debug_model(), kit.debug_model(**{"denoiser.reference_anchors": False})
    with_refs = on.prepare_batch([kit.two_shot_clip()]).clips[0].layout
    assert sum(with_refs.video_anchors) > 0 and sum(with_refs.audio_anchors) > 0
    clip_a = kit.two_shot_clip()
    clip_b = kit.two_shot_clip(references={"R1": kit.random_reference(7), "R2": kit.random_reference(8, seconds=None)})
    a, b = off.prepare_batch([clip_a]), off.prepare_batch([clip_b])
    layout = a.clips[0].layout
    assert layout.roles == with_refs.roles and sum(layout.video_anchors) == sum(layout.audio_anchors) == 0
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)


def test_without_reference_anchors_the_model_trains_and_generates(kit):
    import torch

    model = kit.debug_model(**{"denoiser.reference_anchors": False})
    batch = model.prepare_batch([kit.two_shot_clip(), kit.two_shot_clip(seed=1)])
    out = model(**model.training_inputs(batch, torch.Generator().manual_seed(0)))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    [g] = model.generate([kit.two_shot_clip()], steps=2, generator=torch.Generator().manual_seed(0))
    assert g.frames.shape[0] == kit.NUM_FRAMES and np.isfinite(g.audio).all()

"""Flow matching (MAVIN eq. 1) and the Euler sampler against their closed forms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mavin_ops.model.flow import (
    FlowConfig,
    euler_sample,
    euler_step,
    interpolate,
    masked_mse,
    sample_timesteps,
    sampling_schedule,
    velocity_target,
)


def test_interpolation_closed_form():
    z0 = torch.tensor([[1.0, -2.0], [4.0, 0.5]])
    eps = torch.tensor([[3.0, 2.0], [0.0, -1.5]])
    t = torch.tensor([0.25, 1.0])
    expected = torch.tensor([[0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 2], [0.0, -1.5]])
    torch.testing.assert_close(interpolate(z0, eps, t), expected)
    torch.testing.assert_close(interpolate(z0, eps, torch.zeros(2)), z0)
    # v* = eps - z0 is the exact time derivative of the straight path
    h = 1e-3
    slope = (interpolate(z0, eps, t + h) - interpolate(z0, eps, t)) / h
    torch.testing.assert_close(slope, velocity_target(z0, eps), atol=1e-3, rtol=1e-3)


def test_euler_step_closed_form():
    z = torch.tensor([1.0, 2.0])
    v = torch.tensor([4.0, -8.0])
    torch.testing.assert_close(euler_step(z, v, 1.0, 0.75), torch.tensor([0.0, 4.0]))


def test_schedule_goes_from_noise_to_data():
    s = sampling_schedule(4)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = sampling_schedule(4, shift=3.0)
    torch.testing.assert_close(shifted, torch.tensor([1.0, 2.25 / 2.5, 1.5 / 2.0, 0.75 / 1.5, 0.0]))
    with pytest.raises(ValueError, match="at least 1 step"):
        sampling_schedule(0)


def _oracle(z0_v, z0_a):
    """The exact velocity field of a point mass at z0: v(z, t) = (z - z0) / t."""

    def velocity(zv, za, t, null):
        tt = t[:, None, None]
        return (zv - z0_v) / tt, (za - z0_a) / tt

    return velocity


@pytest.mark.parametrize("steps", [1, 3])
def test_one_step_sample_round_trip(steps):
    g = torch.Generator().manual_seed(0)
    z0_v, z0_a = torch.randn(2, 5, 4, generator=g), torch.randn(2, 3, 6, generator=g)
    eps_v, eps_a = torch.randn(2, 5, 4, generator=g), torch.randn(2, 3, 6, generator=g)
    mask_v = torch.ones(2, 5, dtype=torch.bool)
    mask_v[1, 3:] = False  # anchors / padding stay put
    mask_a = torch.ones(2, 3, dtype=torch.bool)
    start_v = torch.where(mask_v[..., None], eps_v, z0_v * 10)
    out_v, out_a = euler_sample(_oracle(z0_v, z0_a), start_v, eps_a, mask_v, mask_a, steps)
    torch.testing.assert_close(out_v[mask_v], z0_v[mask_v], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_a, z0_a, atol=1e-5, rtol=1e-5)
    assert torch.equal(out_v[~mask_v], (z0_v * 10)[~mask_v])


def test_classifier_free_guidance_combines_branches():
    cond, uncond = torch.full((1, 2, 3), 2.0), torch.full((1, 2, 3), -1.0)

    def velocity(zv, za, t, null):
        return (uncond, uncond[:, :1]) if null else (cond, cond[:, :1])

    z = torch.zeros(1, 2, 3)
    ones = torch.ones(1, 2, dtype=torch.bool)
    out_v, out_a = euler_sample(velocity, z, z[:, :1], ones, ones[:, :1], steps=1, guidance=3.0)
    # v = u + w (c - u) = -1 + 3 * 3 = 8; one step from t=1 to 0: z - v
    torch.testing.assert_close(out_v, torch.full((1, 2, 3), -8.0))
    torch.testing.assert_close(out_a, torch.full((1, 1, 3), -8.0))


def test_timestep_sampling():
    g = torch.Generator().manual_seed(0)
    u = sample_timesteps(4000, FlowConfig(timestep_sampling="uniform"), g)
    assert u.min() >= 0 and u.max() < 1 and abs(float(u.mean()) - 0.5) < 0.03
    ln = sample_timesteps(4000, FlowConfig(timestep_sampling="logit_normal", logit_mean=1.0, logit_std=1.0), g)
    assert ln.min() > 0 and ln.max() < 1
    assert abs(float(ln.median()) - float(torch.sigmoid(torch.tensor(1.0)))) < 0.03
    with pytest.raises(ValueError, match="timestep_sampling 'cosine' is unknown"):
        FlowConfig(timestep_sampling="cosine")


def test_masked_mse_ignores_masked_tokens():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mse(pred, target, mask), torch.tensor(2.5))


def _loss(model, batch, inputs, **overrides):
    with torch.no_grad():
        return model(**{**inputs, **overrides})


def test_loss_weights_and_no_loss_on_anchors_or_padding(kit):
    model = kit.debug_model()
    from mavin_ops.model import ClipInput

    script = kit.two_shot_script()
    short = dict(script, duration=1.125, event=[script["event"][0]], shot=[dict(script["shot"][0], time_range=[0.0, 1.125])])
    video, audio = kit.random_media(7, frames=9, samples=9000)
    clips = [kit.two_shot_clip(), ClipInput(kit.caption_of(short), video=video, audio=audio, references={"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)})]
    batch = model.prepare_batch(clips)
    inputs = model.training_inputs(batch, torch.Generator().manual_seed(0))
    out = _loss(model, batch, inputs)
    torch.testing.assert_close(out["loss"], 0.85 * out["video_loss"] + 0.15 * out["audio_loss"])

    # Noise drawn on anchor and padding positions is never used: anchors stay clean (z_0),
    # padding carries no loss.
    off_v = ~batch.video_loss_mask
    noise = inputs["video_noise"].clone()
    noise[off_v] = 123.0
    assert torch.equal(_loss(model, batch, inputs, video_noise=noise)["loss"], out["loss"])
    # ... while the noise on a latent token is.
    noise = inputs["video_noise"].clone()
    noise[0, 0] += 1.0
    assert not torch.equal(_loss(model, batch, inputs, video_noise=noise)["loss"], out["loss"])

    # Weights are config.
    model.config = dataclasses.replace(model.config, flow=FlowConfig(video_weight=0.5, audio_weight=0.5))
    out2 = _loss(model, batch, inputs)
    torch.testing.assert_close(out2["loss"], 0.5 * out["video_loss"] + 0.5 * out["audio_loss"])


def test_caption_dropout_is_the_null_caption(kit):
    model = kit.debug_model(**{"flow.caption_dropout": 1.0})
    batch = model.prepare_batch([kit.two_shot_clip()])
    inputs = model.training_inputs(batch, torch.Generator().manual_seed(0))
    assert float(inputs["text_keep"].sum()) == 0.0
    # with every caption dropped the loss does not depend on the caption tokens
    ids = inputs["ids"].clone()
    ids[inputs["segment"] > 0] = 5
    assert torch.equal(_loss(model, batch, inputs)["loss"], _loss(model, batch, inputs, ids=ids)["loss"])
    keep = dict(inputs, text_keep=torch.ones(1))
    assert not torch.equal(_loss(model, batch, keep)["loss"], _loss(model, batch, keep, ids=ids)["loss"])


def test_time_shared_noise_is_unit_variance_and_correlated_over_time_only():
    from mavin_ops.model.flow import time_shared_noise

    T, H, W, C = 6, 4, 4, 8
    t, r, c = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([t.flatten() * 0.5, r.flatten(), c.flatten()], dim=-1).float()[None].expand(4000, -1, -1)
    g = torch.Generator().manual_seed(0)
    ind, shared = (torch.randn(4000, T * H * W, C, generator=g) for _ in range(2))
    assert time_shared_noise(ind, lambda: shared, pos, 0.0) is ind  # share 0: the i.i.d. noise as drawn
    eps = time_shared_noise(ind, lambda: shared, pos, 0.9)
    assert eps.var().item() == pytest.approx(1.0, abs=0.02)
    x = eps[..., 0]  # (samples, tokens)
    same_place = torch.corrcoef(torch.stack([x[:, 5], x[:, 5 + 2 * H * W]]))[0, 1].item()  # (row 1, col 1) at t0 and t2
    other_place = torch.corrcoef(torch.stack([x[:, 5], x[:, 6 + 2 * H * W]]))[0, 1].item()
    same_time = torch.corrcoef(torch.stack([x[:, 5], x[:, 6]]))[0, 1].item()
    assert same_place == pytest.approx(0.9, abs=0.03)
    assert abs(other_place) < 0.05 and abs(same_time) < 0.05
    assert abs(torch.corrcoef(torch.stack([eps[:, 5, 0], eps[:, 5, 4]]))[0, 1].item()) < 0.05
    # Channels holding two frames in blocks of 4: the common part is also shared by the blocks.
    framed = time_shared_noise(ind, lambda: shared, pos, 0.9, channel_groups=2)
    assert framed.var().item() == pytest.approx(1.0, abs=0.02)
    assert torch.corrcoef(torch.stack([framed[:, 5, 0], framed[:, 5, 4]]))[0, 1].item() == pytest.approx(0.9, abs=0.03)
    assert abs(torch.corrcoef(torch.stack([framed[:, 5, 0], framed[:, 5, 1]]))[0, 1].item()) < 0.05
    with pytest.raises(ValueError, match="8 channels do not split into 3 equal frame blocks"):
        time_shared_noise(ind, lambda: shared, pos, 0.9, channel_groups=3)


def test_model_noise_follows_the_configured_prior(kit):
    model = kit.debug_model(**{"flow.video_noise_shared": 0.8})
    batch = model.prepare_batch([kit.two_shot_clip()])
    eps = model.training_inputs(batch, torch.Generator().manual_seed(0))["video_noise"][0]
    pos, latent = batch.video_pos[0], batch.video_loss_mask[0]
    times = sorted({float(v) for v in pos[latent, 0]})
    first = latent & (pos[:, 0] == times[0])
    later = latent & (pos[:, 0] == times[1])
    a, b = eps[first].flatten(), eps[later].flatten()  # same (row, col) order in both time steps
    assert torch.corrcoef(torch.stack([a, b]))[0, 1].item() > 0.6
    plain = kit.debug_model()
    eps0 = plain.training_inputs(plain.prepare_batch([kit.two_shot_clip()]), torch.Generator().manual_seed(0))["video_noise"][0]
    assert abs(torch.corrcoef(torch.stack([eps0[first].flatten(), eps0[later].flatten()]))[0, 1].item()) < 0.3


def test_data_prediction_head_returns_the_velocity(kit):
    """x-prediction: the audio head's output is read as the clean latent x and forward returns
    v = (z_t - x) / max(t, min_t); the same weights as a velocity head give x itself."""
    data = kit.debug_model(**{"denoiser.audio_prediction": "data"})
    plain = kit.debug_model()  # same seed: the same random weights
    batch = data.prepare_batch([kit.two_shot_clip()])
    text = data.encode_text(batch)
    g = torch.Generator().manual_seed(0)
    zv, za = torch.randn(batch.video.shape, generator=g), torch.randn(batch.audio.shape, generator=g)
    for t, divisor in ((0.5, 0.5), (0.01, data.config.denoiser.min_t)):
        inputs = batch.denoiser_inputs(zv, za, text, torch.full((1,), t))
        v_v, v_a = data.denoiser(**inputs)
        x_v, x_a = plain.denoiser(**inputs)
        torch.testing.assert_close(v_a, (za - x_a) / divisor)
        torch.testing.assert_close(v_v, x_v)  # the video head still predicts velocity
    with pytest.raises(ValueError, match="denoiser.audio_prediction 'eps' is unknown"):
        kit.debug_model(**{"denoiser.audio_prediction": "eps"})

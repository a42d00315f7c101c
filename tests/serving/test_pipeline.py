"""The generation pipeline in-process: the same code Triton runs, with ONNX Runtime or torch
as the runner. Bad requests are refused before any part model is called."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from mavin_ops.model.flow import euler_sample
from mavin_ops.model.config import preset
from mavin_ops.serving.examples import example_duration, example_references, example_script
from mavin_ops.serving.pipeline import GenerateRequest, Pipeline, RequestError, TorchRunner, initial_noise, local_pipeline
from mavin_ops.serving.spec import ServingLimits


def _request(config, seed=0, steps=3, guidance=None, customized=2, **changes):
    script = example_script(config, customized=customized)
    script.update(changes)
    return GenerateRequest(script, example_references(config, script), seed=seed, steps=steps, guidance=guidance)


@pytest.mark.parametrize("name, frames", [("debug", 17), ("tiny", 17), ("paper", 53)])
def test_example_clips_last_about_two_seconds_whatever_the_temporal_stride(name, frames):
    cfg = preset(name)
    vc = cfg.video_codec
    assert example_duration(cfg) * vc.fps == pytest.approx(frames)  # the fewest stride*k+1 frames >= 2.125 s
    assert (frames - 1) % vc.temporal_stride == 0
    assert example_duration(cfg, latent_steps=3) * vc.fps == pytest.approx(2 * vc.temporal_stride + 1)
    script = example_script(cfg)
    assert script["duration"] == script["shot"][-1]["time_range"][1] == pytest.approx(example_duration(cfg))


class Counting:
    """A runner that records which part models were called."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, model, inputs, outputs):
        self.calls.append(model)
        return self.inner(model, inputs, outputs)


def test_onnx_pipeline_matches_the_torch_model(exported, model):
    onnx_pipe = local_pipeline(exported.path)
    torch_pipe = Pipeline(model.config, TorchRunner(model))
    for guidance in (1.0, 3.0):
        req = _request(model.config, seed=5, steps=3, guidance=guidance)
        a, b = onnx_pipe(req), torch_pipe(req)
        F = int(round(req.script["duration"] * model.config.video_codec.fps))
        assert a.frames.shape == b.frames.shape == (F, 16, 16, 3) and a.frames.dtype == np.uint8
        assert a.audio.shape == b.audio.shape == (int(round(req.script["duration"] * 8000)),)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1  # a rounding step at most
        assert np.abs(a.audio - b.audio).max() <= 1e-4
        assert a.frames.std() > 10 and a.audio.std() > 1e-3  # something was generated


def test_same_seed_same_clip_and_guidance_changes_it(exported, model):
    pipe = local_pipeline(exported.path)
    a, b = pipe(_request(model.config, seed=1)), pipe(_request(model.config, seed=1))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    c = pipe(_request(model.config, seed=2))
    assert not np.array_equal(a.frames, c.frames)
    d = pipe(_request(model.config, seed=1, guidance=4.0))
    assert not np.array_equal(a.audio, d.audio)


def test_batched_guidance_equals_the_model_sampler(model):
    """cond + null in one denoiser batch gives what model.flow's two-call sampler gives."""
    runner = Counting(TorchRunner(model))
    pipe = Pipeline(model.config, runner)
    req = _request(model.config, steps=4)
    batch = pipe.prepare(req)
    with torch.no_grad():
        text = model.encode_text(batch)
    g = torch.Generator().manual_seed(0)
    z_v = torch.where(batch.video_loss_mask[..., None], torch.randn(batch.video.shape, generator=g), batch.video)
    z_a = torch.where(batch.audio_loss_mask[..., None], torch.randn(batch.audio.shape, generator=g), batch.audio)
    got_v, got_a = pipe.sample_latents(batch, text, z_v, z_a, steps=4, guidance=2.5)
    assert runner.calls == ["denoiser"] * 4  # one batched call per step

    def velocity(zv, za, t, null):
        return model.denoiser(**batch.denoiser_inputs(zv, za, torch.zeros_like(text) if null else text, t))

    with torch.no_grad():
        want_v, want_a = euler_sample(velocity, z_v, z_a, batch.video_loss_mask, batch.audio_loss_mask, 4, 2.5, model.config.flow.shift)
    assert torch.allclose(got_v, want_v, atol=1e-5) and torch.allclose(got_a, want_a, atol=1e-5)
    anchors = ~batch.video_loss_mask[0]
    assert torch.equal(got_v[0, anchors], batch.video[0, anchors])  # identity anchors stay clean


BAD = [
    ("unknown entity", lambda s: s["shot"][0]["references_in_shot"].append("R9"), r"\[cited-id\].*'R9'"),
    ("unknown speaker", lambda s: s["event"][0].update(speaker="R7"), r"speaker 'R7' is not declared"),
    ("too many customized roles", lambda s: [e.update(reference_image="refs/x.png") for e in s["reference"]] and s["reference"].append(
        {"id": "R4", "category": "person", "semantic_description": "x", "appearance_anchor": {"detail_description": "y"}, "reference_image": "refs/y.png"}
    ), r"\[max-customized-roles\] 4 customized roles"),
    ("structural", lambda s: s.pop("global"), r"missing stream 'global'"),
]


@pytest.mark.parametrize("name,edit,match", BAD, ids=[b[0] for b in BAD])
def test_bad_scripts_are_refused_before_any_inference(model, name, edit, match):
    runner = Counting(TorchRunner(model))
    pipe = Pipeline(model.config, runner)
    req = _request(model.config)
    edit(req.script)
    with pytest.raises(RequestError, match=match):
        pipe(req)
    assert runner.calls == []


def test_limits_and_media_are_checked_before_any_inference(model):
    cfg = model.config
    runner = Counting(TorchRunner(model))
    pipe = Pipeline(cfg, runner, ServingLimits(max_duration_s=2.5, max_steps=10, max_script_bytes=4096))
    long = example_script(cfg, latent_steps=7)  # 25 frames = 3.125 s
    cases = [
        (GenerateRequest(long, example_references(cfg, long)), r"lasts 3.125 s, over the limit of 2.5 s"),
        (_request(cfg, steps=11), r"steps: 11 is outside 1..10"),
        (GenerateRequest(dict(_request(cfg).script, clip_id="x" * 5000), {}), r"bytes exceeds the limit of 4096"),
        (GenerateRequest(b"{not json", {}), r"not valid JSON"),
    ]
    req = _request(cfg)
    req.references["R2"]["image"] = req.references["R2"]["image"].astype(np.float32)
    cases.append((req, r"reference image of R2: expected \(H, W, 3\) uint8"))
    req = _request(cfg)
    req.references["R1"]["image"] = np.zeros((64, 64, 3), np.uint8)
    cases.append((req, r"64x64 exceeds the limit of 32 px"))
    req = _request(cfg)
    req.references["R1"]["image"] = np.zeros((18, 16, 3), np.uint8)
    cases.append((req, r"18x16 is not divisible by 4"))
    req = _request(cfg)
    del req.references["R1"]["audio"]
    cases.append((req, r"reference\[R1\].reference_audio: the script cites a voice for R1 but the request has none"))
    req = _request(cfg)
    req.references["R3"] = {"image": np.zeros((16, 16, 3), np.uint8)}
    cases.append((req, r"reference_ids: R3 is not a customized role"))
    for request, match in cases:
        with pytest.raises(RequestError, match=match):
            pipe(request)
    assert runner.calls == []
    good = pipe(_request(cfg, steps=2))
    assert good.frames.shape[0] == 17 and runner.calls.count("denoiser") == 2


def test_request_tensors_round_trip_and_bad_tensors_are_refused(model):
    req = _request(model.config, seed=9, steps=2, guidance=1.5)
    inputs = req.to_inputs()
    assert inputs["reference_ids"].tolist() == [b"R1", b"R2"]
    assert inputs["reference_images"].shape == (2, 16, 16, 3) and inputs["reference_audio_samples"].tolist() == [4000, 0]
    back = GenerateRequest.from_inputs(inputs)
    assert back.seed == 9 and back.steps == 2 and back.guidance == pytest.approx(1.5)
    assert np.array_equal(back.references["R1"]["image"], req.references["R1"]["image"])
    assert np.array_equal(back.references["R1"]["audio"], req.references["R1"]["audio"]) and "audio" not in back.references["R2"]
    bad = [
        (dict(inputs, reference_images=inputs["reference_images"][:1]), r"reference_images': expected shape \[2, H, W, 3\]"),
        (dict(inputs, reference_audio_samples=np.array([9999, 0], np.int32)), r"lengths must be in 0..4000"),
        (dict(inputs, script=np.array([b"a", b"b"], dtype=object)), r"expected one JSON document"),
        (dict(inputs, guidance=np.array([np.nan], np.float32)), r"guidance': must be a finite number"),
        ({k: v for k, v in inputs.items() if k != "reference_ids"}, r"without 'reference_ids'"),
    ]
    for tensors, match in bad:
        with pytest.raises(RequestError, match=match):
            GenerateRequest.from_inputs(tensors)


def test_scripts_are_not_mutated(model):
    req = _request(model.config, steps=1)
    before = copy.deepcopy(req.script)
    Pipeline(model.config, TorchRunner(model))(req)
    assert req.script == before


def test_served_noise_follows_the_models_noise_prior(model):
    """The served sampler starts from the noise the model was trained on: with
    flow.video_noise_shared the video noise agrees over time at each position; one seed, one noise."""
    cfg = dataclasses.replace(model.config, flow=dataclasses.replace(model.config.flow, video_noise_shared=0.9))
    pipe = Pipeline(cfg, TorchRunner(model))
    batch = pipe.prepare(_request(cfg))
    eps_v, eps_a = initial_noise(cfg, batch, 3)
    again_v, again_a = initial_noise(cfg, batch, 3)
    assert torch.equal(eps_v, again_v) and torch.equal(eps_a, again_a)
    pos, latent = batch.video_pos[0], batch.video_loss_mask[0]
    t0, t1 = sorted({float(v) for v in pos[latent, 0]})[:2]
    a, b = eps_v[0][latent & (pos[:, 0] == t0)].flatten(), eps_v[0][latent & (pos[:, 0] == t1)].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1].item() > 0.8
    plain_v, _ = initial_noise(model.config, batch, 3)
    a, b = plain_v[0][latent & (pos[:, 0] == t0)].flatten(), plain_v[0][latent & (pos[:, 0] == t1)].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.3

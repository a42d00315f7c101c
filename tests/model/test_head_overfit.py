"""Which video head the tiny preset uses, pinned by its reason: overfit ONE clip, then sample.

The tiny preset's video tokens are raw 8x8x3 pixel patches (192 channels, as wide as the
denoiser). JiT ("Back to Basics: Let Denoising Generative Models Denoise", Li and He 2025):
on such tokens a head that predicts the clean latent (``denoiser.prediction = "data"``, the
velocity derived inside the denoiser, the loss kept in velocity space) memorises one clip
within a small budget, while a velocity head's samples are still coloured noise. Both arms
here train the same model from the same seed on the same clip with the same noise and times,
for the same fixed budget, and only the head differs. Then each samples the clip with the
model's own Euler sampler (the preset's 25 steps and guidance 3) and is compared with it.

Kept small for the suite: one 5-frame 32x32 clip of the synthetic world (``data/synth.py``,
the tiny preset's own world, drawn with the dataset generator: 80 video tokens of 192
channels, 16 a frame, plus a reference image's 16 anchor tokens), one block per tower instead
of two, a batch of the one clip, 500 AdamW steps at lr 1e-3 (constant, then a linear decay
over the last 40 %, which keeps Adam from jumping off the memorised clip: at a constant lr the
sample MSE went from 0.003 back up to 0.22 at step 500). About 20 s per arm on one thread.

The clip has a reference image on purpose: the denoiser has no absolute position embedding
(RoPE only), and the anchor tokens at fixed rows and columns are what lets a token know where
it is. Without them (``denoiser.reference_anchors = False``, or a clip with no reference
image) the clean-latent head had not memorised its clip after 400 steps either (MSE 0.12-0.15).

Measured on a 2-core CPU (BENCHMARKS.md, "Which head?"; ``bench/overfit.py`` runs the arms at
the preset's depth and a larger budget): clean-latent head sample MSE 0.0015 (latent units;
the clip's latent variance is 0.39), velocity head 0.23, a ratio of 150. The gap is one of
speed, not possibility: given 3000 steps (two blocks) the velocity head gets to 0.03. The thresholds
sit an order of magnitude from the clean-latent value and a factor 2.5 from the velocity
value, so a clean-latent head that stops memorising, or a velocity head that memorises as
fast, fails (with the two arms swapped, the three arm tests fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mavin_ops import mtss
from mavin_ops.data import synth
from mavin_ops.model import ClipInput, ModelConfig, RoleReference, build_model, preset

STEPS = 500
LR = 1e-3
DECAY_SHARE = 0.4  # the last 40 % of the steps decay the lr linearly to zero
DEPTH = 1  # blocks per tower (the preset has 2; bench/overfit.py runs the preset's depth)
CLIP_SEED = 0  # a close-up with one customized role (a reference image: absolute positions)
SAMPLE_SEEDS = (100, 101)
HIGH_T = 0.9  # where the implied clean latent x = z_t - t v is read

#: Sample MSE against the clip (latent units: the exact patch codec's [-1, 1] pixels).
CLEAN_LATENT_MAX_MSE = 0.02  # measured about 0.0015
VELOCITY_MIN_MSE = 0.08  # measured about 0.23
MIN_RATIO = 10.0  # velocity MSE / clean-latent MSE; measured about 150


def _one_clip() -> tuple[ClipInput, np.ndarray]:
    """One 5-frame clip of the synthetic world (frames, waveform, compiled caption, reference
    media), drawn with the dataset generator itself."""
    cfg = synth.SynthConfig(name="one-clip", train_clips=1, eval_clips=1, frame_choices=(5,), max_shots=1)
    rng = np.random.default_rng(CLIP_SEED)
    data = synth.make_clip(rng, cfg, synth.make_source(rng, "s0"), "one-clip")
    assert data.ref_images, "the clip needs a reference image (see the module docstring)"
    refs = {r: RoleReference(image=data.ref_images.get(r), audio=data.ref_audio.get(r)) for r in set(data.ref_images) | set(data.ref_audio)}
    return ClipInput(mtss.compile_caption(data.script), video=data.frames, audio=data.waveform, references=refs), data.frames


def _overfit(config: ModelConfig) -> dict[str, float]:
    """Train ``config`` on the one clip for the fixed budget; sample it and compare."""
    clip, frames = _one_clip()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and no oversubscription of a 2-core machine
    try:
        torch.manual_seed(0)
        model = build_model(config)
        batch = model.prepare_batch([clip])
        params = [p for n, p in model.named_parameters() if model.may_train(n)]
        opt = torch.optim.AdamW(params, lr=LR, fused=True)
        g = torch.Generator().manual_seed(0)  # fresh noise, t and caption dropout every step
        decay_from = int(STEPS * (1 - DECAY_SHARE))
        losses = []
        model.train()
        for step in range(STEPS):
            for group in opt.param_groups:
                group["lr"] = LR * min(1.0, (STEPS - step) / (STEPS - decay_from))
            out = model(**model.training_inputs(batch, g))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            losses.append(float(out["video_loss"]))
        model.eval()
        latent = batch.video_loss_mask
        z0 = batch.video[latent]
        mse, pixel = [], []
        for seed in SAMPLE_SEEDS:
            z_v, z_a = model.sample_latents(batch, generator=torch.Generator().manual_seed(seed))
            mse.append(float(((z_v[latent] - z0) ** 2).mean()))
            drawn = model.decode(batch, z_v, z_a)[0].frames.astype(np.float32) / 255.0
            pixel.append(float(((drawn - frames.astype(np.float32) / 255.0) ** 2).mean()))
        # the clean latent the trained model implies at a noisy time: x = z_t - t v(z_t, t)
        with torch.no_grad():
            eps = model.video_noise(batch, torch.Generator().manual_seed(SAMPLE_SEEDS[0]))
            t = torch.full((1,), HIGH_T)
            z_t = torch.where(latent[..., None], (1 - HIGH_T) * batch.video + HIGH_T * eps, batch.video)
            v, _ = model.denoiser(**batch.denoiser_inputs(z_t, batch.audio, model.encode_text(batch), t))
            implied = float((((z_t - HIGH_T * v)[latent] - z0) ** 2).mean())
    finally:
        torch.set_num_threads(threads)
    return {
        "sample_mse": float(np.mean(mse)),
        "worst_sample_mse": max(mse),
        "best_sample_mse": min(mse),
        "pixel_mse": float(np.mean(pixel)),
        "implied_mse": implied,
        "final_loss": float(np.mean(losses[-50:])),
        "clip_variance": float(z0.var()),
    }


def _arm(prediction: str) -> ModelConfig:
    return preset("tiny").replace(**{"denoiser.prediction": prediction, "denoiser.depth": DEPTH})


@pytest.fixture(scope="module")
def clean_latent_arm() -> dict[str, float]:
    return _overfit(_arm("data"))


@pytest.fixture(scope="module")
def velocity_arm() -> dict[str, float]:
    return _overfit(_arm("velocity"))


def test_tiny_preset_uses_the_clean_latent_head_and_noisy_times():
    cfg = preset("tiny")
    assert cfg.denoiser.prediction == "data" and cfg.denoiser.audio_prediction == "data"
    assert (cfg.flow.timestep_sampling, cfg.flow.logit_mean, cfg.flow.logit_std) == ("logit_normal", 0.8, 0.8)
    assert cfg.video_token_dim == 192 == cfg.denoiser.width  # raw 8x8x3 patches: the point of the test
    assert _arm("data").replace(**{"denoiser.depth": cfg.denoiser.depth}) == cfg  # the arm is the preset


def test_clean_latent_head_memorises_one_clip(clean_latent_arm):
    m = clean_latent_arm
    print("clean-latent arm:", m)
    assert m["worst_sample_mse"] < CLEAN_LATENT_MAX_MSE, m
    assert m["pixel_mse"] < CLEAN_LATENT_MAX_MSE / 4, m  # pixels in [0, 1]: a quarter of latent units
    assert m["implied_mse"] < 0.1 * m["clip_variance"], m  # even from t = 0.9 it sees the clip


def test_velocity_head_does_not(velocity_arm):
    m = velocity_arm
    print("velocity arm:", m)
    assert m["best_sample_mse"] > VELOCITY_MIN_MSE, m
    assert m["pixel_mse"] > VELOCITY_MIN_MSE / 4, m


def test_clean_latent_head_beats_the_velocity_head(clean_latent_arm, velocity_arm):
    ratio = velocity_arm["sample_mse"] / clean_latent_arm["sample_mse"]
    assert ratio > MIN_RATIO, (ratio, clean_latent_arm, velocity_arm)
    assert velocity_arm["implied_mse"] > MIN_RATIO * clean_latent_arm["implied_mse"], (clean_latent_arm, velocity_arm)

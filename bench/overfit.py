"""Which video head? Overfit ONE clip with each head, then sample it and compare.

The tiny preset's video tokens are raw 8x8x3 pixel patches (192 channels). JiT ("Back to
Basics: Let Denoising Generative Models Denoise", Li and He 2025) says a head predicting the
clean latent memorises data on such tokens and a velocity head does not. This runs the
experiment behind the preset's choice (and behind tests/model/test_head_overfit.py, which is
the same loop at a smaller budget and one block per tower):

- the clip: one 5-frame 32x32 clip of the synthetic world (``data/synth.py``, drawn with the
  dataset generator; ``--seed`` picks it), with its caption, audio and reference media;
- the arms, all from the same initial weights (seed 0) and the same noise, t and caption
  dropout draws: ``data`` = the tiny preset as it is (clean-latent head, v derived in the
  denoiser, loss in velocity space, logit-normal t skewed to noise); ``velocity`` = the
  same with ``denoiser.prediction = "velocity"``; ``velocity-uniform`` = the previous preset
  (velocity head and uniform t);
- training: AdamW (fused), lr ``--lr`` constant, then a linear decay to zero over the last
  40 % of ``--steps``; a batch of the one clip, fresh noise and t every step;
- measurement: the model's own sampler (``MavinModel.sample_latents``, the preset's 25 steps
  and guidance 3) from two noise seeds, decoded to frames; MSE against the clip in latent
  units (the patch codec's [-1, 1] pixels) and in [0, 1] pixels; the clean latent implied at
  t = 0.9, x = z_t - t v(z_t, t); the video loss (mean of the last 10 % of steps).

Prints a progress line per arm every ``--every`` steps and a Markdown table at the end.

Usage: .venv/bin/python bench/overfit.py [--steps 1000] [--threads 1] [--depth 2] [--lr 1e-3]
                                         [--seed 0] [--arms data,velocity,velocity-uniform]
                                         [--every 250] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from mavin_ops import mtss
from mavin_ops.data import synth
from mavin_ops.model import ClipInput, ModelConfig, RoleReference, build_model, preset

ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "data": ("clean latent (the preset)", {}),
    "velocity": ("velocity", {"denoiser.prediction": "velocity"}),
    "velocity-uniform": ("velocity, uniform t (previous preset)", {"denoiser.prediction": "velocity", "flow.timestep_sampling": "uniform"}),
}
SAMPLE_SEEDS = (100, 101)
HIGH_T = 0.9
DECAY_SHARE = 0.4


def one_clip(seed: int) -> tuple[ClipInput, np.ndarray]:
    cfg = synth.SynthConfig(name="one-clip", train_clips=1, eval_clips=1, frame_choices=(5,), max_shots=1)
    rng = np.random.default_rng(seed)
    data = synth.make_clip(rng, cfg, synth.make_source(rng, "s0"), "one-clip")
    refs = {r: RoleReference(image=data.ref_images.get(r), audio=data.ref_audio.get(r)) for r in set(data.ref_images) | set(data.ref_audio)}
    if not data.ref_images:
        print(f"note: clip seed {seed} has no reference image, so no anchor tokens tell a token where it is (RoPE only); memorising is much slower")
    return ClipInput(mtss.compile_caption(data.script), video=data.frames, audio=data.waveform, references=refs), data.frames


def measure(model: Any, batch: Any, frames: np.ndarray) -> dict[str, float]:
    model.eval()
    latent = batch.video_loss_mask
    z0 = batch.video[latent]
    mse, pixel = [], []
    for seed in SAMPLE_SEEDS:
        z_v, z_a = model.sample_latents(batch, generator=torch.Generator().manual_seed(seed))
        mse.append(float(((z_v[latent] - z0) ** 2).mean()))
        drawn = model.decode(batch, z_v, z_a)[0].frames.astype(np.float32) / 255.0
        pixel.append(float(((drawn - frames.astype(np.float32) / 255.0) ** 2).mean()))
    with torch.no_grad():
        eps = model.video_noise(batch, torch.Generator().manual_seed(SAMPLE_SEEDS[0]))
        t = torch.full((1,), HIGH_T)
        z_t = torch.where(latent[..., None], (1 - HIGH_T) * batch.video + HIGH_T * eps, batch.video)
        v, _ = model.denoiser(**batch.denoiser_inputs(z_t, batch.audio, model.encode_text(batch), t))
        implied = float((((z_t - HIGH_T * v)[latent] - z0) ** 2).mean())
    model.train()
    return {"sample_mse": float(np.mean(mse)), "sample_mse_range": [min(mse), max(mse)], "pixel_mse": float(np.mean(pixel)), "implied_mse": implied}


def run_arm(name: str, config: ModelConfig, clip: ClipInput, frames: np.ndarray, steps: int, lr: float, every: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(config)
    batch = model.prepare_batch([clip])
    params = [p for n, p in model.named_parameters() if model.may_train(n)]
    opt = torch.optim.AdamW(params, lr=lr, fused=True)
    g = torch.Generator().manual_seed(0)
    decay_from = int(steps * (1 - DECAY_SHARE))
    losses: list[float] = []
    progress = []
    train_wall = train_cpu = 0.0
    model.train()
    for step in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps - step) / max(1, steps - decay_from))
        out = model(**model.training_inputs(batch, g))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["video_loss"]))
        train_wall += time.perf_counter() - w0
        train_cpu += time.process_time() - c0
        if every and (step + 1) % every == 0 and step + 1 < steps:
            m = measure(model, batch, frames)
            progress.append({"step": step + 1, "video_loss": float(np.mean(losses[-max(1, every // 10) :])), **m})
            print(f"  {name} step {step + 1}: video loss {progress[-1]['video_loss']:.4f}, sample MSE {m['sample_mse']:.4f}, x at t={HIGH_T} MSE {m['implied_mse']:.4f}", flush=True)
    final = measure(model, batch, frames)
    tail = max(1, steps // 10)
    return {
        "arm": name,
        "steps": steps,
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "final_video_loss": float(np.mean(losses[-tail:])),
        "clip_latent_variance": float(batch.video[batch.video_loss_mask].var()),
        "progress": progress,
        **final,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps per arm (the test runs 500 at depth 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--depth", type=int, default=None, help="blocks per tower (default: the preset's, 2)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="which synthetic clip (0: a close-up with a reference image)")
    ap.add_argument("--arms", default="data,velocity,velocity-uniform", help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--every", type=int, default=250, help="sample and report every N steps (0: only at the end)")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm '{unknown[0]}'; use {', '.join(ARMS)}")
    clip, frames = one_clip(args.seed)
    results = []
    for name in arms:
        changes = dict(ARMS[name][1])
        if args.depth:
            changes["denoiser.depth"] = args.depth
        config = preset("tiny").replace(**changes)
        print(f"{name}: training {args.steps} steps ({ARMS[name][0]}, depth {config.denoiser.depth}, {args.threads} thread(s))", flush=True)
        results.append(run_arm(name, config, clip, frames, args.steps, args.lr, args.every))
    base = next((r for r in results if r["arm"] == "data"), results[0])
    cfg = preset("tiny")
    print()
    print(f"One 5-frame 32x32 clip (seed {args.seed}, clip latent variance {base['clip_latent_variance']:.3f}), tiny preset"
          f"{'' if not args.depth else f' at depth {args.depth}'}, AdamW lr {args.lr:g}; sampler {cfg.flow.sample_steps} steps, guidance {cfg.flow.guidance:g};"
          f" {args.threads} thread(s), {os.cpu_count()} CPUs, {platform.machine()}")
    print()
    print(f"| head | steps | train wall | train CPU | final video loss | sample MSE (latent) | ratio to clean latent | pixel MSE | x at t={HIGH_T} MSE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lo, hi = r["sample_mse_range"]
        ratio = r["sample_mse"] / base["sample_mse"]
        print(
            f"| {ARMS[r['arm']][0]} | {r['steps']} | {r['train_wall_s']:.0f} s | {r['train_cpu_s']:.0f} s | {r['final_video_loss']:.4f} |"
            f" {r['sample_mse']:.4f} ({lo:.4f}-{hi:.4f}) | {ratio:.{0 if ratio >= 10 else 1}f}x | {r['pixel_mse']:.4f} | {r['implied_mse']:.4f} |"
        )
    result = {"args": vars(args), "arms": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

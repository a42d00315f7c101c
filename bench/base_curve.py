"""The foundation model's learning curve: every metric of the evaluation at each checkpoint of
a ``base`` training run, and what its clean-latent head sees at high noise.

For every ``step-*`` checkpoint in ``--checkpoints`` (a base stage folder, kept by the base
recipe's ``keep_last``) not already in ``--out``: load it, generate ``--clips`` eval clips of
``--data`` (the base world's own held-out split, or a release's benchmark) from their scripts
and references, score them with the same evaluator and gate policy as a release
(bench/learn.py's ``_generate`` / ``_score``), and append the row. Writes the JSON, a Markdown
table, a plot of VC, AC, character recall and FD against steps (``--plot``), and for the newest
checkpoint a contact sheet of its first clip and a picture of the implied clean frame
x_hat = z_t - t v of a training clip noised to t in {0.1, 0.3, 0.5, 0.7, 0.9, 1.0}
(``--frames``): the layout must be there at t >= 0.7, where sampling decides it.

Usage: .venv/bin/python bench/base_curve.py --checkpoints CKPT_DIR --data WORLD
            [--clips 8] [--threads 1] [--every 1] [--out bench/results/base_curve.json]
            [--plot bench/results/base_curve.png] [--frames bench/results/base_implied.png]

Re-running only scores checkpoints it has not scored yet (the run can go on meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn import COLUMNS, _eval_clips, _generate, _score, markdown_table  # noqa: E402

CURVE = ("vc", "ac", "character_recall", "fidelity_fd")


def implied_clean(model: Any, clip: Any, out: Path, ts=(0.1, 0.3, 0.5, 0.7, 0.9, 1.0), seed: int = 0) -> Path:
    """Draw, for one clip, the truth's middle frame and the model's implied clean frame at each t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mavin_ops import mtss
    from mavin_ops.model import ClipInput, RoleReference
    from mavin_ops.model.batch import unpatchify

    refs = {rid: RoleReference(image=clip.ref_images.get(rid), audio=clip.ref_audio.get(rid)) for rid in set(clip.ref_images) | set(clip.ref_audio)}
    ci = ClipInput(caption=mtss.compile_caption(clip.script), references=refs, video=clip.frames, audio=clip.waveform,
                   height=clip.frames.shape[1], width=clip.frames.shape[2])
    batch = model.prepare_batch([ci])
    g = torch.Generator().manual_seed(seed)
    text = model.encode_text(batch)
    masks = batch.dense_masks()
    eps_v = model.video_noise(batch, g)
    mid = clip.num_frames // 2
    pics = [("truth", clip.frames[mid])]
    for t in ts:
        tt = torch.full((1,), float(t))
        zt = torch.where(batch.video_loss_mask[..., None], (1 - t) * batch.video + t * eps_v, batch.video)
        with torch.no_grad():
            v, _ = model.denoiser(**batch.denoiser_inputs(zt, batch.audio, text, tt, masks))
        x_hat = zt - t * v
        [gen] = model.decode(batch, x_hat, batch.audio)
        pics.append((f"t={t:g}", gen.frames[min(mid, len(gen.frames) - 1)]))
    fig, axes = plt.subplots(1, len(pics), figsize=(1.6 * len(pics), 1.9))
    for ax, (label, img) in zip(axes, pics):
        ax.imshow(np.asarray(img), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"implied clean frame, clip {clip.id} frame {mid}", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, len(CURVE), figsize=(3.2 * len(CURVE), 2.6))
    labels = dict(COLUMNS)
    for ax, key in zip(axes, CURVE):
        ax.plot(steps, [r["scores"].get(key) if r["scores"].get(key) is not None else np.nan for r in rows], marker="o")
        ax.set_title(labels.get(key, key), fontsize=9)
        ax.set_xlabel("base step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", required=True, help="a base stage folder holding step-* checkpoints")
    p.add_argument("--data", required=True, help="dataset whose eval split is scored")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--every", type=int, default=1, help="score every n-th checkpoint only")
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--out", default="bench/results/base_curve.json")
    p.add_argument("--plot", default="bench/results/base_curve.png")
    p.add_argument("--frames", default="bench/results/base_implied.png")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from mavin_ops.evaluation import sheets
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.trainer import load_trained_model

    out = Path(a.out)
    result = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    done = {r["step"] for r in result["rows"]}
    data = Path(a.data)
    clips = _eval_clips(data, a.clips)
    found = sorted(ckpt.checkpoint_dirs(a.checkpoints))[:: a.every]
    newest = None
    for step, path in found:
        if step in done:
            continue
        t0 = time.perf_counter()
        model, meta = load_trained_model(path)
        with torch.no_grad():
            gen = _generate(model, clips, a.sample_steps or model.config.flow.sample_steps, seed=0)
        scores = _score(gen, clips)
        losses = meta.get("losses", [])[-50:]
        row = {"step": step, "scores": scores, "train_loss_last50": float(np.mean([x["loss"] for x in losses])) if losses else None,
               "seconds": round(time.perf_counter() - t0, 1)}
        result["rows"].append(row)
        result["rows"].sort(key=lambda r: r["step"])
        print(f"step {step}: " + ", ".join(f"{k} {scores.get(k)}" for k in (*CURVE, "sta", "tams")), flush=True)
        newest = (step, model, gen)
    result.update(
        machine=f"{os.cpu_count()} CPU cores, no GPU, {platform.machine()}, torch {torch.__version__}, {a.threads} threads",
        command="python bench/base_curve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        eval_clips=len(clips),
        data=str(data),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if result["rows"]:
        plot(result["rows"], Path(a.plot))
    if newest is not None:
        step, model, gen = newest
        train = [c for c in _eval_clips_split(data, "train", 1)]
        implied_clean(model, train[0], Path(a.frames))
        c, g = clips[0], gen[0]
        sheets.clip_sheet(Path(a.frames).with_name(f"base_sheet_step{step}.png"), clip_id=c.id, script=c.script, truth=c.frames,
                          generated=g.frames, fps=c.fps, truth_audio=c.waveform, generated_audio=g.waveform,
                          sample_rate=c.sample_rate, ref_images=c.ref_images)
    print(markdown_table({f"base step {r['step']}": r["scores"] for r in result["rows"]}))
    return 0


def _eval_clips_split(data: Path, split: str, limit: int) -> list[Any]:
    from mavin_ops.data import manifest, media

    rows = [line.row for line in manifest.read_manifest(data) if line.row and line.row.get("split") == split]
    return [media.load_clip(data, r) for r in rows[:limit]]


if __name__ == "__main__":
    raise SystemExit(main())

"""Proof that training learns: STA and TAMS of generated benchmark clips, trained vs untrained
vs the "w/o BTR" ablation (boundary routing off, MAVIN Table 2).

1. Generate the synthetic dataset of the preset (seed 0), or read ``--data``.
2. Train the preset's recipe through all four stages (id -> multishot -> av -> joint).
3. Train the same recipe with boundary-aware routing off (``routing.boundary_routing=False``).
4. For the untrained model (seeded init), both trained models, and the ground-truth clips
   themselves (the evaluator's ceiling), generate every ``eval`` clip from its script and
   reference media and score it with ``mavin_ops.evaluation`` (STA: MAVIN eq. S9, TAMS: S7).

Writes a JSON result and prints a Markdown table with the wall time of every phase.

Usage: .venv/bin/python bench/learn.py [--preset tiny] [--threads 2] [--steps-scale 1.0]
                                       [--clips 32] [--sample-steps 25] [--data DIR] [--work DIR]
                                       [--variants trained,nobtr] [--out bench/results/learn.json]

Training resumes: with the same ``--work`` folder, finished stages are not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _eval_clips(data: Path, limit: int) -> list[Any]:
    from mavin_ops.data import manifest, media

    rows = [line.row for line in manifest.read_manifest(data) if line.row and line.row.get("split") == "eval"]
    return [media.load_clip(data, r) for r in rows[:limit]]


def _generate(model: Any, clips: list[Any], sample_steps: int, seed: int) -> list[Any]:
    """Generated stand-ins for the benchmark clips: same script, row and references."""
    import dataclasses

    from mavin_ops.data import mtss
    from mavin_ops.model import ClipInput, RoleReference

    out = []
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    for c in clips:
        refs = {rid: RoleReference(image=c.ref_images.get(rid), audio=c.ref_audio.get(rid)) for rid in set(c.ref_images) | set(c.ref_audio)}
        [g] = model.generate(
            [ClipInput(caption=mtss.compile_caption(c.script), references=refs, height=c.frames.shape[1], width=c.frames.shape[2])],
            steps=sample_steps,
            generator=gen,
        )
        n = min(len(g.frames), c.num_frames)
        frames = g.frames[:n]
        wave = g.audio[: round(n / c.fps * c.sample_rate)]
        out.append(dataclasses.replace(c, frames=frames, waveform=wave.astype("float32")))
    return out


def _score(clips: list[Any]) -> dict[str, float | None]:
    from mavin_ops.evaluation.runner import evaluate_clips

    res = evaluate_clips(clips)
    return {k: res["metrics"][k]["mean"] for k in ("sta", "tams", "shot_boundary_deviation", "cisc", "bisc", "vc", "ac") if k in res["metrics"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's step count (shorter runs for a smoke test)")
    p.add_argument("--clips", type=int, default=32, help="benchmark clips to generate and score")
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps per generated clip (default: the model's)")
    p.add_argument("--data", default=None)
    p.add_argument("--work", default=None, help="keep checkpoints here (default: a temporary folder)")
    p.add_argument("--variants", default="trained,nobtr", help="which trained models: trained (the recipe), nobtr (the ablation)")
    p.add_argument("--out", default="bench/results/learn.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".mavin/torch_extensions").resolve()))

    from mavin_ops.data import synth
    from mavin_ops.model import config as mconfig
    from mavin_ops.training.mavin_adapter import MavinAdapter
    from mavin_ops.training.recipes import STAGES, get_recipe
    from mavin_ops.training.trainer import load_trained_model, train_stage

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mavin-bench-learn-") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        data = Path(a.data) if a.data else work / "data"
        t = time.perf_counter()
        if not a.data and not (data / "manifest.jsonl").is_file():
            synth.generate(data, preset=a.preset, seed=0, progress=False)
        timings["data"] = time.perf_counter() - t
        steps = {s: max(1, round(get_recipe(s, a.preset).steps * a.steps_scale)) for s in STAGES}

        base_cfg = mconfig.preset(a.preset)
        wanted = set(a.variants.split(","))
        variants = {}
        if "trained" in wanted:
            variants["trained"] = base_cfg
        if "nobtr" in wanted:
            variants["w/o BTR (trained, routing off)"] = base_cfg.replace(**{"routing.boundary_routing": False})
        models: dict[str, Any] = {}
        losses: dict[str, list[float]] = {}
        for name, cfg in variants.items():
            t = time.perf_counter()
            adapter = MavinAdapter(a.preset, config=cfg)
            root = work / ("ckpt-" + ("btr" if cfg.routing.boundary_routing else "nobtr"))
            init = None
            for stage in STAGES:  # each stage from the previous one's final checkpoint
                res = train_stage(
                    stage, a.preset, dataset=data, out_dir=root / stage, init_checkpoint=init, adapter=adapter,
                    latents_dir=work / "latents", overrides={"steps": steps[stage]}, track=False, progress=False,
                )
                init = res.checkpoint
                losses[name + " " + stage] = [res.losses[0]["loss"], res.losses[-1]["loss"]]
            models[name] = load_trained_model(res.checkpoint, adapter)[0]
            timings[f"train {name}"] = time.perf_counter() - t
        torch.manual_seed(0)
        models = {"untrained (seeded init)": MavinAdapter(a.preset).build(), **models}

        clips = _eval_clips(data, a.clips)
        scores: dict[str, dict[str, float | None]] = {}
        t = time.perf_counter()
        scores["ground truth clips (evaluator ceiling)"] = _score(clips)
        timings["score ground truth"] = time.perf_counter() - t
        for name, model in models.items():
            t = time.perf_counter()
            with torch.no_grad():
                gen = _generate(model, clips, a.sample_steps or base_cfg.flow.sample_steps, seed=0)
            scores[name] = _score(gen)
            timings[f"generate+score {name}"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.machine()}, torch {torch.__version__}, {a.threads} threads",
        "command": "python bench/learn.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "stage_steps": steps,
        "eval_clips": len(clips),
        "first_last_loss": losses,
        "scores": scores,
        "seconds": timings,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print("\n| model | STA | TAMS | shot bnd. dev. (frames) |\n|---|---|---|---|")
    for name, s in scores.items():
        f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {name} | {f(s.get('sta'))} | {f(s.get('tams'))} | {f(s.get('shot_boundary_deviation'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

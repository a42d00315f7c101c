"""Proof that training learns, and MAVIN Table 2's ablations: every metric the evaluation
computes on generated benchmark clips, for the recipe, three ablations, the untrained model
and the ground truth, all in one run, with the default gate policy's verdict on each.

1. Generate the synthetic dataset of the preset (seed 0), or read ``--data``.
2. Train the preset's recipe through all four stages (id -> multishot -> av -> joint), from
   the foundation model the preset's releases fine-tune (``--base``, default the shipped one;
   every variant starts from the same weights), and the same recipe three times with one part off: "w/o BTR" (boundary routing off and A/V
   cross-attention over the whole clip), "w/o IM" (identity masks off), "w/o reference
   anchors" (no reference image or voice reaches the model).
3. For the untrained model (seeded init), every trained model, and the ground-truth clips
   themselves (the evaluator's ceiling), generate every ``eval`` clip from its script and
   reference media and score it with ``mavin_ops.evaluation`` against the benchmark clips
   (STA eq. S9, TAMS eq. S7, CISC/BISC eq. S8, VC, AC, character presence, the world
   encoder's Fréchet distance), then apply the default gate policy (floors only).

Writes a JSON result and prints a Markdown table with every metric, identity first.

Usage: .venv/bin/python bench/learn.py [--preset tiny] [--threads 2] [--steps-scale 1.0]
                                       [--clips 32] [--sample-steps 25] [--data DIR] [--work DIR]
                                       [--variants trained,nobtr,noim,noanchors] [--out bench/results/learn.json]

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

    from mavin_ops import mtss
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


def _score(clips: list[Any], truth: list[Any]) -> dict[str, Any]:
    """Every metric the evaluation computes (against the benchmark clips as truth) and the
    default gate policy's verdict on them (no champion: floors only)."""
    from mavin_ops.evaluation import gate
    from mavin_ops.evaluation.runner import evaluate_clips

    res = evaluate_clips(clips, truth={c.id: c for c in truth})
    out: dict[str, Any] = {k: v["mean"] for k, v in res["metrics"].items()}
    decision = gate.decide(res, gate.load_policy())
    out["gate"] = "pass" if decision.passed else "fail: " + ", ".join(c.name for c in decision.checks if not c.passed)
    out["_references"] = res.get("references")
    # per clip, so the gate can be re-decided exactly from this file (coverage included)
    out["_clips"] = [{"id": c["id"], "metrics": c["metrics"], "not_applicable": c["not_applicable"]} for c in res["clips"]]
    return out


#: Table columns, the metrics a person would look at first (identity, then what is drawn) first.
COLUMNS = (
    ("ac", "AC"), ("vc", "VC"), ("character_recall", "char. recall"), ("character_precision", "char. precision"),
    ("cisc", "CISC"), ("fidelity_fd", "FD (lower is better)"), ("bisc", "BISC"), ("sta", "STA"), ("tams", "TAMS"),
    ("shot_boundary_deviation", "shot bnd. dev. (frames)"), ("shot_boundary_unmatched", "missed + extra cuts"),
)


def _base_for(base: Any, adapter: Any, root: Path) -> Path:
    """The base's weights as a checkpoint of this variant's model config (an ablation switches
    routing or anchors off, which changes no parameter): same weights, the variant's config."""
    from mavin_ops.training import checkpoint as ckpt

    found = ckpt.find_resumable(root, log=None) if root.is_dir() else None
    if found is not None:
        return found.path
    meta = {**ckpt.load_json(base.checkpoint, "meta.json"), "model": adapter.config()}
    weights = ckpt.load_tensors(base.checkpoint, "model.safetensors")
    return ckpt.save_checkpoint(root, int(meta["step"]), tensors={"model.safetensors": weights}, json_files={"meta.json": meta}).path


def markdown_table(scores: dict[str, dict[str, Any]]) -> str:
    """Every metric of every model, and the default gate's verdict."""
    f = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| model | " + " | ".join(label for _, label in COLUMNS) + " | gate (default policy) |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(f(s.get(k)) for k, _ in COLUMNS) + f" | {s.get('gate', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's step count (shorter runs for a smoke test)")
    p.add_argument("--clips", type=int, default=32, help="benchmark clips to generate and score")
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps per generated clip (default: the model's)")
    p.add_argument("--data", default=None)
    p.add_argument("--work", default=None, help="keep checkpoints here (default: a temporary folder)")
    p.add_argument(
        "--variants",
        default="trained,nobtr,noim,noanchors",
        help="which trained models: trained (the recipe), nobtr (w/o BTR: boundary routing off and A/V cross-attention "
        "over the whole clip), noim (w/o IM: identity masks off), noanchors (w/o reference anchors)",
    )
    p.add_argument("--base", default="", help="the base the id stage fine-tunes (release --base; default: the shipped one)")
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
        ablations = {
            "trained": ("trained, four stages", {}),
            "nobtr": ("w/o BTR (routing off)", {"routing.boundary_routing": False, "routing.cross_modal_scope": "clip"}),
            "noim": ("w/o IM (identity masks off)", {"routing.identity_mask": False}),
            "noanchors": ("w/o reference anchors", {"denoiser.reference_anchors": False}),
        }
        unknown = wanted - set(ablations)
        if unknown:
            p.error(f"--variants: unknown {', '.join(sorted(unknown))}; use {', '.join(ablations)}")
        variants = {key: (label, base_cfg.replace(**changes)) for key, (label, changes) in ablations.items() if key in wanted}
        models: dict[str, Any] = {}
        losses: dict[str, list[float]] = {}
        from mavin_ops import foundation

        base = foundation.resolve(a.base, a.preset)
        for key, (name, cfg) in variants.items():
            t = time.perf_counter()
            adapter = MavinAdapter(a.preset, config=cfg)
            root = work / f"ckpt-{key}"
            init = _base_for(base, adapter, work / f"base-{key}") if base is not None else None
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
        scores["ground truth clips (evaluator ceiling)"] = _score(clips, clips)
        timings["score ground truth"] = time.perf_counter() - t
        for name, model in models.items():
            t = time.perf_counter()
            with torch.no_grad():
                gen = _generate(model, clips, a.sample_steps or base_cfg.flow.sample_steps, seed=0)
            scores[name] = _score(gen, clips)
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
    print(markdown_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: the DeepSpeed engine against a plain torch loop on the same model.

Same tiny model (same seeded init), same precomputed batches of the tiny synthetic dataset,
same AdamW (0.9, 0.95, 1e-8), same gradient clipping; measured in one run, rounds
interleaved (plain, ZeRO 0, ZeRO 2, plain, ...) so the shared machine's load hits every
variant alike. Reports samples/s per variant (median over rounds) and the DeepSpeed overhead
as a ratio to the plain loop. Also checks that the first steps' losses of the plain loop and
of the ZeRO 0 engine agree (same maths).

Usage: .venv/bin/python bench/train.py [--preset tiny] [--steps 12] [--rounds 3] [--threads 2]
                                       [--data DIR] [--out bench/results/train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _batches(adapter, data_dir: Path, latents: Path, preset: str, steps: int):
    from mavin_ops.training import data as tdata
    from mavin_ops.training.recipes import get_recipe

    recipe = get_recipe("joint", preset)
    index = tdata.precompute(data_dir, adapter, latents)
    ds = tdata.LatentDataset(index)
    sched = tdata.BatchSchedule(index, recipe.mixture, recipe.batch, recipe.seed)
    return recipe, [adapter.collate([ds[i] for i in sched.batch(s)]) for s in range(steps)]


def _plain(adapter, recipe):
    torch.manual_seed(recipe.seed)
    model = adapter.build()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay)

    def step(batch):
        parts = adapter.losses(model, batch)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(parts["loss"].detach())

    return step


def _deepspeed(adapter, recipe, zero_stage: int, dist):
    from mavin_ops.training import engine as eng

    torch.manual_seed(recipe.seed)
    model = adapter.build()
    r = recipe.__class__.from_dict({**recipe.to_dict(), "zero_stage": zero_stage})
    engine = eng.build_engine(model, list(model.parameters()), r, dist)
    engine.train()

    def step(batch):
        parts = adapter.losses(engine, batch)
        engine.backward(parts["loss"])
        engine.step()
        return float(parts["loss"].detach())

    return step


def _run(step, batches) -> tuple[float, list[float]]:
    torch.manual_seed(1234)  # same noise draws for every variant
    losses = []
    t0 = time.perf_counter()
    for b in batches:
        losses.append(step(b))
    return time.perf_counter() - t0, losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None, help="dataset directory (default: generate the preset's synthetic data)")
    p.add_argument("--out", default="bench/results/train.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".mavin/torch_extensions").resolve()))

    from mavin_ops.data import synth
    from mavin_ops.training import engine as eng
    from mavin_ops.training.mavin_adapter import MavinAdapter

    adapter = MavinAdapter(a.preset)
    with tempfile.TemporaryDirectory(prefix="mavin-bench-train-") as tmp, eng.rank_env():
        tmp = Path(tmp)
        data_dir = Path(a.data) if a.data else tmp / "data"
        if not a.data:
            synth.generate(data_dir, preset=a.preset, seed=0, progress=False)
        recipe, batches = _batches(adapter, data_dir, tmp / "latents", a.preset, a.steps + 1)
        dist = eng.setup_distributed()
        variants = {
            "plain torch loop": _plain(adapter, recipe),
            "DeepSpeed ZeRO 0": _deepspeed(adapter, recipe, 0, dist),
            "DeepSpeed ZeRO 2": _deepspeed(adapter, recipe, 2, dist),
        }
        samples = sum(int(b.video.shape[0]) for b in batches[1:])
        first_losses = {}
        per_round: dict[str, list[float]] = {k: [] for k in variants}
        for name, step in variants.items():  # warm-up step (one-off allocations), and the same first loss
            torch.manual_seed(99)
            first_losses[name] = step(batches[0])
        for r in range(a.rounds):
            for name, step in variants.items():
                seconds, _ = _run(step, batches[1:])
                per_round[name].append(samples / seconds)
    sps = {k: statistics.median(v) for k, v in per_round.items()}
    base = sps["plain torch loop"]
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.machine()}, torch {torch.__version__}, {a.threads} threads",
        "command": "python bench/train.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "batch": recipe.batch,
        "timed_steps_per_round": a.steps,
        "rounds": a.rounds,
        "samples_per_s": sps,
        "samples_per_s_per_round": per_round,
        "ratio_to_plain": {k: v / base for k, v in sps.items()},
        "first_step_loss": first_losses,
        "first_loss_plain_vs_zero0_abs_diff": abs(first_losses["plain torch loop"] - first_losses["DeepSpeed ZeRO 0"]),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print("\n| variant | samples/s | ratio to plain loop |\n|---|---|---|")
    for k, v in sps.items():
        print(f"| {k} | {v:.1f} | {v / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

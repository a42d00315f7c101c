"""The golden loss curve of the ``debug`` recipe: catches silent numerical drift.

:func:`debug_losses` trains the four debug stages (id -> multishot -> av -> joint) of the
project's model on the synthetic ``debug`` dataset (seed 0), in one thread, with no tracking,
and returns every step's losses. ``training/golden/debug_losses.json`` holds the committed
curve; a test compares a fresh run against it at a tight relative tolerance
(:data:`RTOL`). A change that moves the numbers on purpose (model, recipe, data generator,
torch upgrade) regenerates the file and says so in its commit::

    .venv/bin/python -m mavin_ops.training golden --write

Without ``--write`` the command compares and exits 1 on drift.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["GOLDEN_PATH", "RTOL", "compare", "debug_losses", "load_golden", "write_golden"]

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "debug_losses.json"
RTOL = 1e-5
ATOL = 1e-7


def debug_losses(workdir: str | os.PathLike | None = None, adapter: Any = None) -> dict[str, list[dict[str, float]]]:
    """Losses per stage of a fresh debug training: {stage: [{step, loss, video, audio}, ...]}."""
    import torch

    from mavin_ops.data import synth

    from .recipes import STAGES
    from .trainer import train_stages

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions in one thread: the same sums on every machine run
    try:
        with tempfile.TemporaryDirectory(prefix="mavin-golden-") as tmp:
            root = Path(workdir) if workdir else Path(tmp)
            data = root / "dataset"
            synth.generate(data, preset="debug", seed=0, progress=False, overwrite=True)
            results = train_stages(
                "debug",
                dataset=data,
                out_root=root / "checkpoints",
                stages=STAGES,
                latents_dir=root / "latents",
                adapter=adapter,
                track=False,
                progress=False,
            )
    finally:
        torch.set_num_threads(threads)
    return {r.stage: r.losses for r in results}


def load_golden(path: str | os.PathLike = GOLDEN_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_golden(losses: dict[str, list[dict[str, float]]], path: str | os.PathLike = GOLDEN_PATH) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": "per-step losses of the debug recipe (4 stages) on the synthetic debug dataset, seed 0, 1 thread",
        "regenerate": ".venv/bin/python -m mavin_ops.training golden --write",
        "torch": torch.__version__,
        "rtol": RTOL,
        "stages": losses,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def compare(losses: dict[str, list[dict[str, float]]], golden: dict[str, Any], rtol: float = RTOL) -> list[str]:
    """Every drifted value as one line (empty list: no drift)."""
    problems: list[str] = []
    want = golden["stages"]
    if list(want) != list(losses):
        return [f"stages differ: golden has {list(want)}, this run {list(losses)}"]
    for stage, curve in want.items():
        got = losses[stage]
        if len(got) != len(curve):
            problems.append(f"stage {stage}: {len(got)} steps, golden has {len(curve)}")
            continue
        for g, w in zip(got, curve):
            for key in ("loss", "video", "audio"):
                if not math.isclose(g[key], w[key], rel_tol=rtol, abs_tol=ATOL):
                    problems.append(f"stage {stage} step {w['step']} {key}: {g[key]!r} vs golden {w[key]!r} (rtol {rtol:g})")
    return problems

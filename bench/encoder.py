"""Do the metrics see what a person sees? Every metric of the evaluation, and the default
gate's verdict, for the ground truth of the tiny benchmark and for stand-in models that fail in
known ways (evaluation/encoder.py): the ground truth with the characters recoloured in every
shot / in every other shot, coloured 8x8 blocks (what an undertrained
tiny model draws), the ground truth's pixels shuffled, static noise.

Usage: .venv/bin/python bench/encoder.py [--data DIR] [--out bench/results/encoder.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="a tiny MAVINSet-mini dataset (default: generate seed 0 in a temporary folder)")
    p.add_argument("--out", default="bench/results/encoder.json")
    a = p.parse_args(argv)

    import numpy as np

    from mavin_ops.data import media, synth
    from mavin_ops.data.validate import read_clips
    from mavin_ops.evaluation import encoder as E
    from mavin_ops.evaluation import gate
    from mavin_ops.evaluation.runner import evaluate_clips

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from learn import markdown_table

    with tempfile.TemporaryDirectory(prefix="mavin-bench-encoder-") as tmp:
        data = Path(a.data) if a.data else Path(tmp) / "tiny"
        if not a.data:
            synth.generate(data, preset="tiny", seed=0, progress=False)
        clips = [media.load_clip(data, r) for r in read_clips(data, split="eval")]
    truth = {c.id: c for c in clips}
    rng = np.random.default_rng(0)
    stand_ins = {
        "ground truth": lambda c: c.frames,
        "characters recoloured in every other shot": lambda c: E.wrong_characters(c, "odd"),
        "characters recoloured in every shot": E.wrong_characters,
        "coloured 8x8 blocks (the model issue 14 found)": E.colour_blocks,
        "ground truth, pixels shuffled": lambda c: E.shuffle_pixels(c.frames, rng),
        "static noise": E.static_noise,
    }
    scores, seconds = {}, {}
    for name, make in stand_ins.items():
        t = time.perf_counter()
        doc = evaluate_clips([dataclasses.replace(c, frames=make(c)) for c in clips], truth=truth)
        seconds[name] = round(time.perf_counter() - t, 2)
        row = {k: v["mean"] for k, v in doc["metrics"].items()}
        d = gate.decide(doc, gate.load_policy())
        row["gate"] = "pass" if d.passed else "fail: " + ", ".join(c.name for c in d.checks if not c.passed)
        scores[name] = row
    result = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "command": "python bench/encoder.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "encoder": doc["encoder"],
        "references": doc["references"],
        "eval_clips": len(clips),
        "scores": scores,
        "seconds_per_evaluation": seconds,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())

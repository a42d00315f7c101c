"""One vs two local processes, and what a checkpoint costs to write and to resume from.

Throughput: the same stage, preset and global batch run through the ``local`` launch backend
(training/launch.py: torchrun) as 1 process accumulating 2 micro-batches per step and as 2
processes with 1 micro-batch each; rounds interleaved so the machine's load hits both alike.
Samples/s is rank 0's own figure (every rank's samples, the first step excluded); the ratio is
2 processes over 1, measured in the same run. On CPU the two processes share the same cores
(OMP threads are split between them), so this measures the launcher's and gloo's overhead,
not a speed-up.

Checkpoints: the final checkpoint of the 1-process run, written again with
``save_checkpoint`` (fsync per file, manifest last, rename) and read back the way a resume
reads it (``find_resumable``: every file's sha256, then the model and optimizer tensors).
The checkpoint form is the consolidated one (full tensors; ZeRO partitions gathered); a
sharded per-rank form is not built, so there is nothing to compare it with yet.

Usage: .venv/bin/python bench/launch.py [--preset tiny] [--stage id] [--steps 6] [--rounds 2]
                                        [--data DIR] [--out bench/results/launch.json]
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--stage", default="id")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default=None, help="dataset directory (default: generate the preset's synthetic data)")
    p.add_argument("--out", default="bench/results/launch.json")
    a = p.parse_args(argv)

    import torch

    from mavin_ops.data import synth
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.launch import StageLaunch, launch

    with tempfile.TemporaryDirectory(prefix="mavin-bench-launch-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("MAVIN_HOME", str(tmp / "home"))
        data_dir = Path(a.data) if a.data else tmp / "data"
        if not a.data:
            synth.generate(data_dir, preset=a.preset, seed=0, progress=False)
        runs: dict[str, list[float]] = {"1 process x 2 micro-batches": [], "2 processes x 1 micro-batch": []}
        walls: dict[str, list[float]] = {k: [] for k in runs}
        final = None
        for r in range(a.rounds):
            for name, nproc, accum in (("1 process x 2 micro-batches", 1, 2), ("2 processes x 1 micro-batch", 2, 1)):
                spec = StageLaunch(a.stage, a.preset, dataset=str(data_dir), out_dir=str(tmp / f"r{r}-{nproc}" / a.stage), nproc=nproc,
                                   steps=a.steps, accum=accum, track=False, kind="local")
                t0 = time.perf_counter()
                res = launch(spec, log_dir=tmp / f"ranks-{r}-{nproc}", timeout_s=3600)
                walls[name].append(time.perf_counter() - t0)
                runs[name].append(float(res.samples_per_s or 0.0))
                if nproc == 1:
                    final = res
                print(f"round {r + 1}: {name}: {res.samples_per_s:.3f} samples/s, {walls[name][-1]:.1f} s wall", file=sys.stderr)

        # checkpoint write and resume, consolidated form
        src = ckpt.find_resumable(Path(final.checkpoint).parent, log=None)
        tensors = {n: ckpt.load_tensors(src, n) for n in ("model.safetensors", "optimizer.safetensors", "rng.safetensors")}
        meta = ckpt.load_json(src, "meta.json")
        sizes = {n: int(src.manifest["files"][n]["bytes"]) for n in tensors}
        writes, reads = [], []
        for i in range(3):
            t0 = time.perf_counter()
            ckpt.save_checkpoint(tmp / "ckpt-bench", i + 1, tensors=tensors, json_files={"meta.json": meta}, keep_last=1)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = ckpt.find_resumable(tmp / "ckpt-bench", log=None)
            ckpt.load_tensors(got, "model.safetensors")
            ckpt.load_tensors(got, "optimizer.safetensors")
            reads.append(time.perf_counter() - t0)

    sps = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.machine()}, torch {torch.__version__}",
        "command": "python bench/launch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "stage": a.stage,
        "steps": a.steps,
        "rounds": a.rounds,
        "global_batch": meta["recipe"]["batch"] * 2,
        "samples_per_s": sps,
        "samples_per_s_per_round": runs,
        "wall_s_per_round": walls,
        "ratio_2_to_1": sps["2 processes x 1 micro-batch"] / sps["1 process x 2 micro-batches"],
        "checkpoint": {
            "form": "consolidated (full tensors)",
            "bytes": sizes,
            "write_s_median": statistics.median(writes),
            "resume_read_s_median": statistics.median(reads),
            "write_s": writes,
            "resume_read_s": reads,
            "sharded_form": "not built",
        },
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

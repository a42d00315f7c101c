"""One vs two local processes, and what a checkpoint costs to write and to resume from.

Throughput: the same stage, preset and global batch run through the ``local`` launch backend
(training/launch.py: torchrun) as 1 process accumulating 2 micro-batches per step and as 2
processes with 1 micro-batch each; rounds interleaved so the machine's load hits both alike.
Samples/s is rank 0's own figure (every rank's samples, the first step excluded); the ratio is
2 processes over 1, measured in the same run. On CPU the two processes share the same cores
(OMP threads are split between them), so this measures the launcher's and gloo's overhead,
not a speed-up.

Checkpoints, both forms: the final checkpoint of the 1-process run (consolidated: one
optimizer file of full tensors) and of the 2-process run (sharded: one optimizer file per
rank), each written again from this one process with ``save_checkpoint`` (fsync per file,
manifest last, rename; the rank files one after the other, where two ranks would write them at
once) and read back the way a one-process resume reads it (``find_resumable``: every file's
sha256; the model; the optimizer state, put together from the rank files for the sharded form).

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


def _header(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


def _read_optimizer(info, shapes) -> None:
    """What a one-process resume reads: the consolidated file, or every rank's file put together."""
    import contextlib
    import json as _json

    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.engine import ShardedOptimizerState

    shards = sorted(n for n in info.manifest["files"] if n.startswith("optimizer.rank"))
    if not shards:
        ckpt.load_tensors(info, "optimizer.safetensors")
        return
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(ckpt.open_tensors(info, n)) for n in shards]
        state = ShardedOptimizerState([(_json.loads(r.metadata()["index"]), r) for r in readers], shapes)
        for key in state.keys():
            state.get(key)


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
                else:
                    final2 = res
                print(f"round {r + 1}: {name}: {res.samples_per_s:.3f} samples/s, {walls[name][-1]:.1f} s wall", file=sys.stderr)

        # checkpoint write and resume, both forms: the 1-process run's (consolidated) and the
        # 2-process run's (sharded: one optimizer file per rank) final checkpoints
        global_batch = ckpt.load_json(final.checkpoint, "meta.json")["recipe"]["batch"] * 2
        forms = {"consolidated": Path(final.checkpoint).parent, "sharded": Path(final2.checkpoint).parent}
        ckpt_result = {}
        for form, root in forms.items():
            src = ckpt.find_resumable(root, log=None)
            names = sorted(n for n in src.manifest["files"] if n.endswith(".safetensors"))
            tensors = {n: ckpt.load_tensors(src, n) for n in names}
            headers = {n: _header(src.path / n) for n in names}
            meta = ckpt.load_json(src, "meta.json")
            shapes = {k: tuple(v.shape) for k, v in tensors["model.safetensors"].items()}
            writes, reads = [], []
            for i in range(3):
                t0 = time.perf_counter()
                ckpt.save_checkpoint(tmp / f"ckpt-{form}", i + 1, tensors=tensors, json_files={"meta.json": meta}, keep_last=1,
                                     tensor_metadata=headers)
                writes.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = ckpt.find_resumable(tmp / f"ckpt-{form}", log=None)  # every file's sha256
                ckpt.load_tensors(got, "model.safetensors")
                _read_optimizer(got, shapes)
                reads.append(time.perf_counter() - t0)
            ckpt_result[form] = {"files": {n: int(src.manifest["files"][n]["bytes"]) for n in names},
                                 "write_s_median": statistics.median(writes), "resume_read_s_median": statistics.median(reads),
                                 "write_s": writes, "resume_read_s": reads}

    sps = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.machine()}, torch {torch.__version__}",
        "command": "python bench/launch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "preset": a.preset,
        "stage": a.stage,
        "steps": a.steps,
        "rounds": a.rounds,
        "global_batch": global_batch,
        "samples_per_s": sps,
        "samples_per_s_per_round": runs,
        "wall_s_per_round": walls,
        "ratio_2_to_1": sps["2 processes x 1 micro-batch"] / sps["1 process x 2 micro-batches"],
        "checkpoint": ckpt_result,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation throughput: clips per second for the whole metric set.

Generates MAVINSet-mini with data/synth.py (the ``tiny`` preset by default, whose ``eval``
split of 32 clips is the embedded benchmark) and times, in one run, over that split:

- ``decode``: the baseline, decoding each clip as the runner does (lossless mp4 frames, the
  exact wav, reference png/wav) and nothing else;
- ``metrics``: every metric (cuts, speech, regions, colour and voice features, STA,
  deviation, TAMS, CISC, BISC, VC, AC) on the already decoded clips;
- ``evaluate_dir``: the whole library call, decoding included, writing metrics.json.

The three run interleaved, ``--repeats`` rounds; the best wall and CPU time of each counts
(CPU time of this process is the steadier number on a shared machine). Prints one JSON object and writes it
to ``--out`` when given.

    .venv/bin/python bench/metrics.py --preset tiny --repeats 3 --out bench/results/metrics.json
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
from typing import Any, Callable

from mavin_ops.data import synth
from mavin_ops.data.manifest import read_manifest
from mavin_ops.evaluation import runner
from mavin_ops.evaluation.detectors import build_suite


def measure(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Run every function once per round, ``repeats`` rounds (interleaved, so all see the
    same machine load); per function the best wall time and the best CPU time of this
    process (all its threads), and the last result. On a shared machine the CPU time is the
    steadier number: other jobs stretch wall time, not our CPU time."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    out: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            out[name] = fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {k: {"wall_s": min(wall[k]), "cpu_s": min(cpu[k])} for k in fns}, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=sorted(synth.PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        root = Path(tmp) / args.preset
        t = time.perf_counter()
        synth.generate(root, preset=args.preset, seed=args.seed, progress=False)
        generate_s = time.perf_counter() - t
        rows = sorted((line.row for line in read_manifest(root) if line.row and line.row.get("split") == "eval"), key=lambda r: r["id"])
        n = len(rows)

        def decode() -> list[Any]:
            return [runner._load_generated(root, row, root, row) for row in rows]

        clips = decode()
        suite = build_suite()
        times, results = measure(
            {
                "decode": decode,
                "metrics": lambda: runner.evaluate_clips(clips, suite=suite),
                "evaluate_dir": lambda: runner.evaluate_dir(root, root, Path(tmp) / "out"),
            },
            args.repeats,
        )

    def rate(name: str) -> dict[str, float]:
        t = times[name]
        return {
            "wall_s": round(t["wall_s"], 3),
            "cpu_s": round(t["cpu_s"], 3),
            "clips_per_s_wall": round(n / t["wall_s"], 1),
            "clips_per_s_cpu": round(n / t["cpu_s"], 1),
        }

    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0], "gpu": False},
        "command": "bench/metrics.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "benchmark": {"preset": args.preset, "seed": args.seed, "split": "eval", "clips": n, "frames": sum(r["num_frames"] for r in rows)},
        "generate_s": round(generate_s, 2),
        "decode": rate("decode"),
        "metrics": rate("metrics"),
        "evaluate_dir": rate("evaluate_dir"),
        "ratios_cpu": {
            "metrics_over_decode": round(times["metrics"]["cpu_s"] / times["decode"]["cpu_s"], 2),
            "evaluate_dir_over_decode": round(times["evaluate_dir"]["cpu_s"] / times["decode"]["cpu_s"], 2),
        },
        "ratios_wall": {
            "metrics_over_decode": round(times["metrics"]["wall_s"] / times["decode"]["wall_s"], 2),
            "evaluate_dir_over_decode": round(times["evaluate_dir"]["wall_s"] / times["decode"]["wall_s"], 2),
        },
        "aggregate": {k: v["mean"] for k, v in results["metrics"]["metrics"].items()},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()

"""Footage ingest speed: seconds of footage a second, per core, at 720p and 1080p, against
decoding alone in the same run.

For each size, makes SOURCES H.264 + AAC sources of SECONDS seconds at 25 fps with
tests/data/footage_kit.py (a photograph with a face, moving shapes, hard cuts, a dissolve,
espeak-ng speech in two voices), then times, on one core each:

- ``decode``: PyAV decoding every video frame and the audio (to RGB arrays), the floor;
- ``ingest``: ``data ingest`` with ``--workers 1`` (decode + resize, shot detection, VAD,
  speaker embeddings, faces, clip writing), with its per-stage seconds from ingest.json.

The real-time factor (RTF) is seconds of footage per wall second on one core. Prints one
JSON object and writes it to ``--out``.

    .venv/bin/python bench/ingest.py --seconds 30 --sources 2 --out bench/results/ingest.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

from footage_kit import Shot, make_source  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
LINES = ["The ship leaves at dawn.", "Bring the lantern to the tower.", "Nobody knows where it goes.",
         "It is colder than yesterday.", "I will wait by the harbour.", "We should go home now."]


def make(folder: Path, size: tuple[int, int], seconds: float, n: int) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for k in range(n):
        shots, t = [], 0.0
        while t < seconds:
            shots.append(Shot("face" if (len(shots) + k) % 2 == 0 else "shapes", 3.0, len(shots) + k))
            t += 3.0
        speech = [(0.5 + 3.0 * i, (i + k) % 2, LINES[(i + k) % len(LINES)]) for i in range(int(seconds // 3.0))]
        truth = make_source(folder / f"src{k}.mp4", shots, size=size, fps=25, dissolve_after={1: 1.0}, speech=speech,
                            options={"preset": "veryfast", "crf": "23"})
        total += truth.duration_s
    return total


def decode_only(folder: Path) -> float:
    import av

    t = time.perf_counter()
    for path in sorted(folder.glob("*.mp4")):
        with av.open(str(path)) as c:
            c.streams.video[0].thread_count = 1
            for frame in c.decode(*c.streams):
                if isinstance(frame, av.VideoFrame):
                    frame.to_ndarray(format="rgb24")
                else:
                    frame.to_ndarray()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of footage per source (default: 30)")
    ap.add_argument("--sources", type=int, default=2, help="sources per size (default: 2)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--out", default=None, help="write the JSON here too")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from mavin_ops.data import ingest

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    results = {}
    try:
        for name in a.sizes:
            src = work / name / "src"
            footage = make(src, SIZES[name], a.seconds, a.sources)
            dec = decode_only(src)
            t = time.perf_counter()
            report = ingest.ingest([src], work / name / "out", preset="tiny", workers=1, progress=False)
            wall = time.perf_counter() - t
            results[name] = {
                "footage_s": round(footage, 2),
                "decode_s": round(dec, 2),
                "ingest_s": round(wall, 2),
                "rtf_decode_per_core": round(footage / dec, 2),
                "rtf_ingest_per_core": round(footage / wall, 2),
                "ingest_over_decode": round(wall / dec, 2),
                "stages_s": report["seconds"],
                "clips": report["counts"]["clips"],
                "rejected": report["counts"]["rejected"],
            }
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}, no GPU, one core per measurement",
        "command": " ".join(["bench/ingest.py", *sys.argv[1:]]),
        "sources_per_size": a.sources,
        "seconds_per_source": a.seconds,
        "results": results,
    }
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

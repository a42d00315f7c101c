"""MAVINSet-mini generation time.

Times in one run, one process:

- ``generate``: :func:`synth.generate` for each preset (draw, render, synthesise audio, encode,
  hash, write the manifest, publish);
- ``encode_only`` (the baseline): writing the same clips' media again from memory with
  :mod:`media` (lossless mp4 with its AAC track, wav, reference png/wav), i.e. the part of the
  work the file formats impose whatever the generator does.

The ratio generate / encode_only says how much the procedural world costs on top of writing
the files. Prints one JSON object and writes it to ``--out``.

    .venv/bin/python bench/synth.py --presets debug tiny --out bench/results/synth.json
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

import numpy as np

from mavin_ops.data import manifest, media, synth


def _encode_only(root: Path, scratch: Path) -> float:
    """Re-write every clip's media from memory; returns seconds (reading is not timed)."""
    rows = [line.row for line in manifest.read_manifest(root) if line.row is not None]
    loaded = [media.load_clip(root, r) for r in rows]
    (scratch / "clips").mkdir(parents=True)
    (scratch / "refs").mkdir()
    t0 = time.perf_counter()
    for clip in loaded:
        media.write_video(scratch / clip.row["video"], clip.frames, clip.fps, clip.waveform, clip.sample_rate)
        media.write_wav(scratch / clip.row["audio"], clip.waveform, clip.sample_rate)
        for rid, img in clip.ref_images.items():
            media.write_png(scratch / clip.script.entity(rid).reference_image, img)  # type: ignore[operator]
        for rid, wav in clip.ref_audio.items():
            media.write_wav(scratch / clip.script.entity(rid).reference_audio, wav, clip.sample_rate)  # type: ignore[operator]
        for rel in manifest.media_paths(clip.row):
            manifest.sha256_file(scratch / rel)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["debug", "tiny"], choices=sorted(synth.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/synth.json")
    args = parser.parse_args()
    result: dict = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}",
        "command": "python bench/synth.py " + " ".join(sys.argv[1:]),
        "presets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            root = Path(tmp) / name
            t0 = time.perf_counter()
            summary = synth.generate(root, preset=name, seed=args.seed, progress=False)
            gen_s = time.perf_counter() - t0
            enc_s = _encode_only(root, Path(tmp) / f"{name}-encode")
            n = summary["clips"]["train"] + summary["clips"]["eval"]
            result["presets"][name] = {
                "clips": summary["clips"],
                "files": summary["files"],
                "mbytes": round(summary["bytes"] / 2**20, 2),
                "generate_s": round(gen_s, 2),
                "encode_only_s": round(enc_s, 2),
                "generate_per_clip_ms": round(1000 * gen_s / n, 1),
                "ratio_generate_over_encode": round(gen_s / enc_s, 2) if enc_s > 0 else float(np.nan),
            }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

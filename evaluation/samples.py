"""Generated benchmark clips: run a trained model on every benchmark script and write the
results in the dataset layout (manifest.jsonl + mp4/wav), so :func:`runner.evaluate_dir`
scores them against the benchmark exactly as it scores any dataset.

Each generated row keeps the benchmark row's id, split, script and reference media (copied,
so the folder stands alone); only the video and audio are the model's, with fresh sha256s.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["generate_benchmark"]


def generate_benchmark(
    model: Any,
    benchmark_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "eval",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> Path:
    """Generate one clip per benchmark row of ``split`` with ``model`` (a MavinModel in eval
    mode) and write them under ``out_dir``. Deterministic for a fixed ``seed``. Returns
    ``out_dir``. Written into a temporary sibling folder and renamed at the end."""
    import numpy as np
    import torch

    from mavin_ops import mtss
    from mavin_ops.data import manifest, media
    from mavin_ops.model import ClipInput, RoleReference

    bench = Path(benchmark_root)
    out = Path(out_dir)
    from mavin_ops.data.validate import read_clips

    # the loader shared by every step after validation: of a validated benchmark, only the
    # clips validation kept (a quarantined clip is never generated, so never scored)
    rows = read_clips(bench, split=split, what="benchmark")
    rows.sort(key=lambda r: str(r.get("id")))  # the evaluator's order, so a limit picks the same clips
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"benchmark {bench} has no '{split}' rows to generate; check the split name and the dataset")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "clips").mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    written = []
    start = time.time()
    from mavin_ops import progress as _progress

    report = _progress.reporter("sample benchmark", len(rows), "clip")
    with torch.no_grad(), report:
        for n, row in enumerate(rows, 1):
            clip = media.load_clip(bench, row)
            refs = {
                rid: RoleReference(image=clip.ref_images.get(rid), audio=clip.ref_audio.get(rid))
                for rid in set(clip.ref_images) | set(clip.ref_audio)
            }
            [g] = model.generate(
                [
                    ClipInput(
                        caption=mtss.compile_caption(clip.script),
                        references=refs,
                        height=clip.frames.shape[1],
                        width=clip.frames.shape[2],
                    )
                ],
                steps=steps,
                guidance=guidance,
                generator=gen,
            )
            frames = g.frames[: clip.num_frames]
            samples = round(clip.num_frames / clip.fps * clip.sample_rate)
            wave = np.zeros(samples, dtype=np.float32)
            wave[: min(samples, len(g.audio))] = g.audio[:samples]
            video_rel, audio_rel = f"clips/{row['id']}.mp4", f"clips/{row['id']}.wav"
            media.write_video(tmp / video_rel, frames, int(clip.fps), wave, clip.sample_rate)
            media.write_wav(tmp / audio_rel, wave, clip.sample_rate)
            sha = {video_rel: manifest.sha256_file(tmp / video_rel), audio_rel: manifest.sha256_file(tmp / audio_rel)}
            for rel in manifest.media_paths(row):
                if rel in (row.get("video"), row.get("audio")):
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(manifest.resolve_media(bench, rel), dest)
                sha[rel] = row["sha256"].get(rel) or manifest.sha256_file(dest)
            written.append({**row, "video": video_rel, "audio": audio_rel, "sha256": sha, "generated": True})
            report.update(1)
            if progress:
                rate = n / max(time.time() - start, 1e-9)
                print(f"\rgenerated {n}/{len(rows)} clips ({rate:.2f} clips/s)", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    manifest.write_manifest(tmp, written)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out

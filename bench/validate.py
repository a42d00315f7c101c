"""Manifest validation throughput.

Synthesizes N manifest rows in the style of MAVINSet-mini (MTSS scripts with 1-6 shots,
dialogue/sfx events, person/animal/object/scene entities, up to 3 customized roles, a
``world`` block) with a small share of bad rows of every kind the validator quarantines, but
no media files, then times in one run:

- ``read_manifest``: decoding the manifest alone (one process), the floor for any validator;
- ``relational``: read_manifest + mtss.parse_script + mtss.grounding_issues (one process),
  the script checks without Great Expectations or parallelism;
- ``validate``: ``validate_dataset(check_media=False)``, the whole step (parallel scan, the
  Great Expectations suite, cross-row checks, writing both manifests, validation.json and
  the Data Docs site).

and, separately, the per-clip cost of the media checks (existence + sha256 of every file) on
a generated MAVINSet-mini dataset with real media. Prints one JSON object and writes it to
``--out``.

    .venv/bin/python bench/validate.py --rows 100000 800000 --out bench/results/validate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mavin_ops import mtss
from mavin_ops.data import manifest
from mavin_ops.data.validate import validate_dataset

FPS = 8
SIZE = 32
COLOURS = ["teal", "pink", "green", "blue", "orange", "purple", "grey", "yellow", "red", "brown"]
PATTERNS = ["striped", "checked", "dotted", "plain", "zigzag"]
TEXTURES = ["vertical stripes", "horizontal stripes", "checks", "dots", "waves"]
SYLLABLES = ["ga", "si", "ni", "da", "zo", "nu", "to", "za", "ra", "mi", "ko", "be"]
BAD_KINDS = (
    "json", "gap", "overlap", "unknown-entity", "no-speaker", "frames", "dup-id", "source-leak", "dotdot", "duration",
)


def _line(rng: random.Random) -> str:
    return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(2, 3))) for _ in range(rng.randint(2, 4)))


def make_row(i: int, rng: random.Random) -> dict[str, Any]:
    """One valid row: a 3-14 s clip (4k+1 frames at 8 fps) with 1-6 shots cut on frame
    boundaries, dialogue at decisecond times, and 2-5 entities."""
    cid = f"c{i:07d}"
    frames = 4 * rng.randint(6, 28) + 1
    duration = frames / FPS
    n_shots = rng.randint(1, 6)
    cuts = sorted(rng.sample(range(2, frames - 2), n_shots - 1)) if n_shots > 1 else []
    bounds = [0, *cuts, frames]
    sha: dict[str, str] = {}
    refs: list[dict[str, Any]] = []
    world_entities: dict[str, Any] = {}
    n_persons = rng.randint(1, 2)
    kinds = ["person"] * n_persons + rng.sample(["animal", "object"], rng.randint(0, 2)) + ["scene"] * rng.randint(1, 2)
    customized = 0
    for j, kind in enumerate(kinds):
        eid = f"R{j + 1}"
        colour, pattern = rng.choice(COLOURS), rng.choice(PATTERNS)
        if kind == "scene":
            tex = rng.choice(TEXTURES)
            ent = {
                "id": eid, "category": "scene",
                "semantic_description": f"a {colour} hall with {tex} on the walls",
                "appearance_anchor": {"detail_description": f"{colour} walls with {tex} above a brown floor"},
            }
        elif kind == "person":
            ent = {
                "id": eid, "category": "person",
                "semantic_description": f"a tall person with a round head, in a {colour} {pattern} shirt and dark trousers",
                "appearance_anchor": {
                    "detail_description": f"tall build, round head, {colour} {pattern} shirt",
                    "clothing": f"{colour} {pattern} shirt, dark trousers", "accessories": "none", "hairstyle": "short",
                },
                "voice": rng.choice(["high bright voice", "low warm voice", "mid nasal voice"]),
            }
        else:
            ent = {
                "id": eid, "category": kind,
                "semantic_description": f"a small {colour} {'dog' if kind == 'animal' else 'lamp'} with {pattern} marks",
                "appearance_anchor": {"detail_description": f"{colour} with {pattern} marks, short tail"},
            }
        if kind != "scene" and customized < 3 and rng.random() < 0.5:
            customized += 1
            ent["reference_image"] = f"refs/{cid}_{eid}.png"
            sha[ent["reference_image"]] = "%064x" % rng.getrandbits(256)
            if kind == "person":
                ent["reference_audio"] = f"refs/{cid}_{eid}.wav"
                sha[ent["reference_audio"]] = "%064x" % rng.getrandbits(256)
        refs.append(ent)
        world_entities[eid] = {"uid": f"src{i:07d}/{kind[0]}{j}", "kind": kind, "rgb": [rng.randint(0, 255) for _ in range(3)], "pattern": pattern}
    persons = [e["id"] for e in refs if e["category"] == "person"]
    scenes = [e["id"] for e in refs if e["category"] == "scene"]
    others = [e["id"] for e in refs if e["category"] in ("animal", "object")]
    shots, events, world_shots = [], [], []
    for s in range(n_shots):
        a, b = bounds[s] / FPS, bounds[s + 1] / FPS
        in_shot = [rng.choice(scenes), *rng.sample(persons, rng.randint(1, len(persons))), *others[: rng.randint(0, len(others))]]
        active = []
        start = round(a + 0.1, 1)
        end = round(min(b - 0.05, start + rng.choice([0.5, 0.8, 1.2])), 1)
        if end > start and rng.random() < 0.8:
            speaker = rng.choice([p for p in in_shot if p in persons])
            eid = f"E{len(events) + 1}"
            events.append({
                "id": eid, "type": "dialogue", "time_range": [start, end], "speaker": speaker,
                "line": _line(rng), "description": f"{speaker} speaks calmly",
            })
            active.append(eid)
        elif end > start and others:
            eid = f"E{len(events) + 1}"
            events.append({"id": eid, "type": "sfx", "time_range": [start, end], "description": "a bell rings as the lamp flashes"})
            active.append(eid)
        shots.append({
            "id": f"S{s + 1}", "time_range": [a, b],
            "visual_description": f"Medium view of {in_shot[0]}; " + "; ".join(f"{r} in the middle, moving slowly left" for r in in_shot[1:]),
            "camera": rng.choice(["static wide shot", "static medium shot", "static close-up"]),
            "references_in_shot": in_shot, "active_events": active,
        })
        world_shots.append({"id": f"S{s + 1}", "frames": [bounds[s], bounds[s + 1]], "bg": in_shot[0], "bg_rgb": [round(rng.uniform(0, 255), 1) for _ in range(3)]})
    video, audio = f"clips/{cid}.mp4", f"clips/{cid}.wav"
    sha[video] = "%064x" % rng.getrandbits(256)
    sha[audio] = "%064x" % rng.getrandbits(256)
    script = {
        "clip_id": cid, "duration": duration, "reference": refs, "shot": shots, "event": events,
        "global": {
            "scene_description": "A short multi-shot scene in " + " and ".join(scenes) + ".",
            "global_style": "flat-colour pixel animation, 32x32 pixels, 8 fps, hard cuts, static camera per shot",
            "global_audio": "a quiet low hum at about 64 Hz with faint room noise",
        },
    }
    return {
        "id": cid, "split": "eval" if (i // 4) % 10 == 0 else "train", "source": f"src{i // 4:07d}",
        "video": video, "audio": audio, "fps": FPS, "num_frames": frames, "width": SIZE, "height": SIZE,
        "sample_rate": 8000, "sha256": sha, "script": script,
        "world": {"version": 1, "cuts": cuts, "shots": world_shots, "entities": world_entities, "ambient": {"hum_hz": 63.7, "rms": 0.003}},
    }


def spoil(row: dict[str, Any], kind: str, i: int) -> dict[str, Any] | str:
    """Break one row in one of the ways the validator must catch."""
    s = row["script"]
    if kind in ("gap", "overlap") and len(s["shot"]) < 2:
        kind = "unknown-entity"
    if kind == "json":
        return json.dumps(row)[:-40]
    if kind == "gap":
        s["shot"][1]["time_range"][0] += 0.125
    elif kind == "overlap":
        s["shot"][1]["time_range"][0] -= 0.125
    elif kind == "unknown-entity":
        s["shot"][0]["references_in_shot"].append("R9")
    elif kind == "no-speaker":
        s["event"].append({"id": "E99", "type": "dialogue", "time_range": [0.1, 0.4], "line": "hm"})
    elif kind == "frames":
        row["num_frames"] += 1
    elif kind == "dup-id":
        row["id"] = s["clip_id"] = f"c{i - 1:07d}"
    elif kind == "source-leak":
        row["split"] = "eval" if row["split"] == "train" else "train"
    elif kind == "dotdot":
        row["video"] = "../" + row["video"]
    elif kind == "duration":
        row["num_frames"], s["duration"] = 4 * 40 + 1, (4 * 40 + 1) / FPS
    return row


def write_manifest_rows(root: Path, n: int, bad_share: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    bad: dict[str, int] = {}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / manifest.MANIFEST, "w", encoding="utf-8") as fh:
        for i in range(n):
            row: dict[str, Any] | str = make_row(i, rng)
            if i > 10 and rng.random() < bad_share:
                kind = BAD_KINDS[i % len(BAD_KINDS)]
                row = spoil(row, kind, i)  # type: ignore[arg-type]
                bad[kind] = bad.get(kind, 0) + 1
            fh.write(row if isinstance(row, str) else json.dumps(row, separators=(",", ":")))
            fh.write("\n")
    return bad


class Clock:
    """Wall time and CPU time (this process plus the worker processes it reaped) of a block:
    on a shared machine the CPU seconds show the work done, the wall seconds what waited."""

    def __enter__(self) -> "Clock":
        self.wall0 = time.perf_counter()
        self.cpu0 = self._cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_read(root: Path) -> tuple[Clock, int]:
    with Clock() as clock:
        n = sum(1 for _ in manifest.read_manifest(root))
    return clock, n


def time_relational(root: Path) -> tuple[Clock, int]:
    issues = 0
    with Clock() as clock:
        for line in manifest.read_manifest(root):
            script = line.row.get("script") if line.row else None
            if not isinstance(script, dict):
                continue
            try:
                issues += len(mtss.grounding_issues(mtss.parse_script(script)))
            except mtss.ScriptError as exc:
                issues += len(exc.issues)
    return clock, issues


def bench_rows(n: int, work: Path, bad_share: float, seed: int) -> dict[str, Any]:
    root = work / f"rows{n}"
    t = time.perf_counter()
    bad = write_manifest_rows(root, n, bad_share, seed)
    gen_s = time.perf_counter() - t
    size = (root / manifest.MANIFEST).stat().st_size
    read, _ = time_read(root)
    rel, _ = time_relational(root)
    with Clock() as full:
        report = validate_dataset(root, check_media=False, out_dir=work / f"out{n}", max_quarantine_share=0.05)
    out = {
        "rows": n,
        "manifest_mb": round(size / 1e6, 1),
        "bad_rows_written": sum(bad.values()),
        "quarantined": report.quarantined,
        "passed": report.passed,
        "rule_counts": report.rule_counts,
        "generate_s": round(gen_s, 1),
        "read_manifest_s": round(read.wall, 2),
        "read_manifest_cpu_s": round(read.cpu, 2),
        "relational_1proc_s": round(rel.wall, 2),
        "relational_1proc_cpu_s": round(rel.cpu, 2),
        "validate_s": round(full.wall, 2),
        "validate_cpu_s": round(full.cpu, 2),
        "validate_rows_per_s": round(n / full.wall),
        "validate_breakdown_s": report.seconds,
        "ratio_validate_vs_read_manifest": round(full.wall / read.wall, 2),
        "ratio_validate_vs_relational_1proc": round(full.wall / rel.wall, 2),
        "ratio_validate_cpu_vs_relational_1proc_cpu": round(full.cpu / rel.cpu, 2),
    }
    shutil.rmtree(root)
    shutil.rmtree(work / f"out{n}")
    return out


def bench_media(work: Path, preset: str) -> dict[str, Any]:
    """Per-clip cost of the media checks on real generated media, one process."""
    from mavin_ops.data import synth

    root = work / f"media-{preset}"
    info = synth.generate(root, preset=preset, seed=0, progress=False)
    clips = info["clips"]["train"] + info["clips"]["eval"]
    timings = {}
    for media in (False, True):
        best = float("inf")
        for _ in range(3):
            report = validate_dataset(root, check_media=media, out_dir=work / "media-out", workers=1, build_docs=False)
            assert report.quarantined == 0, report.rule_counts
            best = min(best, report.seconds["scan"])
        timings[media] = best
    per_clip_ms = (timings[True] - timings[False]) / clips * 1e3
    out = {
        "preset": preset,
        "clips": clips,
        "files": info["files"],
        "media_mb": round(info["bytes"] / 1e6, 2),
        "scan_without_media_s": round(timings[False], 3),
        "scan_with_media_s": round(timings[True], 3),
        "media_check_ms_per_clip": round(per_clip_ms, 3),
        "ratio_scan_with_vs_without_media": round(timings[True] / timings[False], 2),
    }
    shutil.rmtree(root)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 800_000])
    p.add_argument("--bad-share", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--media-preset", default="tiny", help="synth preset for the media-check timing ('' to skip)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", default="bench/results/validate.json")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mavin-bench-validate-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "command": "python bench/validate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": [],
    }
    try:
        for n in args.rows:
            run = bench_rows(n, work, args.bad_share, args.seed)
            result["runs"].append(run)
            print(
                f"{n} rows ({run['manifest_mb']} MB): validate {run['validate_s']} s = {run['validate_rows_per_s']} rows/s; "
                f"x{run['ratio_validate_vs_read_manifest']} read_manifest, x{run['ratio_validate_vs_relational_1proc']} relational (1 proc)",
                file=sys.stderr,
            )
        if args.media_preset:
            result["media"] = bench_media(work, args.media_preset)
            print(f"media checks: {result['media']['media_check_ms_per_clip']} ms per clip", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

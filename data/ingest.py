"""``mavin-ops data ingest``: real footage into the dataset layout every later step reads.

The MAVINSet way (MAVIN section 3, "Shot unit grouping" and "Audio-visual quality
filtering"), with the detectors of :mod:`mavin_ops.data.footage`:

1. **Decode** each source once (any container and codec PyAV reads): frames for the shot
   detector, frames at the preset's size, faces at ``face_rate``, audio at 16 kHz and at the
   preset's rate. A file that is not a video, cannot be read or breaks off early is refused.
2. **Measure**: shot boundaries (hard cuts and gradual transitions), speech spans, a speaker
   key per utterance (voice embeddings, clustered per source, so ``SPK1`` is the same voice in
   every clip of one source), faces and the person each belongs to.
3. **Filter and group**: black or static shots and shots shorter than the preset's shortest
   shot are refused with their numbers; consecutive usable shots are grouped into clips of the
   preset's 4k+1 frame counts and at most ``max_shots`` shots; a clip with more than
   ``max_people`` people is refused (MAVIN keeps three individuals at most).
4. **Script** each clip: from the human sidecar ``<stem>.mtss.json`` when there is one (its
   cuts and dialogue spans are checked against the measurements; a disagreement puts the
   numbers in the row's ``ingest_issues`` and validation quarantines the clip), otherwise
   drafted from the measurements. Every field's provenance (``human``, ``detected``,
   ``captioner``) is in the row's ``provenance``. Text no detector can know comes from an
   optional captioner (:mod:`mavin_ops.data.captioner`).
5. **References**: a customized role's reference image (a portrait of that face) and
   reference voice (that speaker's speech) are cut from another moment of the same source.

Output: ``manifest.jsonl`` (rows as ``synth`` writes them, plus ``source_sha256``,
``source_span``, ``detectors``, ``provenance``), ``mavinset.json``, ``ingest.json`` (counts,
seconds per stage, per source what the detectors measured), ``rejected.jsonl`` (one line per
refused source or segment). Work is per source, in a process per core; each finished source
is recorded under ``.ingest/`` so an interrupted ingest resumes without redoing it. Clip ids
and media names come from the source's sha256, never from its file name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np

from . import footage as fx
from .captioner import Captioner, captioner_from_env
from . import manifest as _manifest
from mavin_ops import mtss

from . import media
from .synth import SynthConfig, get_preset
from mavin_ops.errors import MavinError

__all__ = ["INGEST_VERSION", "VIDEO_SUFFIXES", "IngestError", "IngestSettings", "find_sources", "ingest"]

INGEST_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
SIDECAR_SUFFIX = ".mtss.json"
STATE_DIR = ".ingest"
REJECTED = "rejected.jsonl"
REPORT = "ingest.json"


class IngestError(MavinError, ValueError):
    """A user's mistake in calling ingest (no sources, an output folder that is not ours)."""


@dataclass(frozen=True)
class IngestSettings:
    """The preset's output format plus the footage rules (tolerances, filters)."""

    preset: SynthConfig
    #: A sidecar cut agrees with a detected one within this many seconds; a sidecar dialogue
    #: span agrees with detected speech when both ends are within ``speech_tolerance_s``.
    cut_tolerance_s: float = 0.25
    speech_tolerance_s: float = 0.3
    #: A shot whose mean luma (0-255) is below this is black; one whose mean frame-to-frame
    #: change (0-255 levels, shot-detector frames) is below ``static_max_motion`` is static.
    black_max_luma: float = 16.0
    static_max_motion: float = 0.2
    #: More people than this in one clip and the clip is refused (MAVIN section 3).
    max_people: int = 3
    #: Share of sources held out as the benchmark (at least one when there are two or more).
    eval_share: float = 0.1
    detectors: fx.DetectorSettings = fx.DetectorSettings()

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_share < 1.0:
            raise IngestError(f"eval share (--eval-share) must be in [0, 1), got {self.eval_share!r}")
        if self.max_people < 1:
            raise IngestError(f"max_people must be at least 1, got {self.max_people!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["preset"] = self.preset.name
        d["detectors"] = fx.settings_dict(self.detectors)
        return d

    def digest(self) -> str:
        blob = json.dumps({"v": INGEST_VERSION, "settings": self.to_json(), "format": asdict(self.preset)}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- sources


def find_sources(srcs: Iterable[str | os.PathLike], skip: str | os.PathLike | None = None) -> tuple[list[tuple[Path, str]], list[dict[str, str]]]:
    """Every video under ``srcs`` as (path, path relative to its SRC), sorted; plus a rejected
    line for every other file found in a folder (sidecars excepted). Files under ``skip`` (the
    output folder, when it lies inside a SRC) are not sources. A SRC that does not exist
    raises :class:`IngestError`."""
    found: list[tuple[Path, str]] = []
    rejected: list[dict[str, str]] = []
    skip_at = Path(skip).resolve() if skip is not None else None
    for src in srcs:
        p = Path(src)
        if p.is_file():
            found.append((p, p.name))
            continue
        if not p.is_dir():
            raise IngestError(f"source '{src}' is neither a video file nor a folder; check the path")
        if skip_at is not None and p.resolve().is_relative_to(skip_at):
            raise IngestError(f"source '{src}' lies inside the output folder {skip}; pick an output folder outside the footage")
        if p.resolve() == Path(p.resolve().anchor):
            raise IngestError(f"source '{src}' is the root of the filesystem; pass the folder that holds the footage")

        def unreadable(exc: OSError, top: Path = p) -> None:  # a folder that cannot be listed is named, not fatal
            rel = Path(exc.filename).relative_to(top).as_posix() if exc.filename and Path(exc.filename).is_relative_to(top) else str(exc.filename)
            rejected.append({"source": rel, "reason": f"folder cannot be read ({exc.strerror or type(exc).__name__})"})

        files = (Path(root) / name for root, _dirs, names in os.walk(p, onerror=unreadable) for name in names)
        for f in sorted(q for q in files if q.is_file() and not q.is_symlink()
                        and not (skip_at is not None and q.resolve().is_relative_to(skip_at))):
            rel = f.relative_to(p).as_posix()
            if any(part.startswith(".") for part in f.relative_to(p).parts) or f.name.endswith(SIDECAR_SUFFIX):
                continue
            if f.suffix.lower() in VIDEO_SUFFIXES:
                found.append((f, rel))
            else:
                rejected.append({"source": rel, "reason": f"not a video file ({f.suffix or 'no suffix'}); "
                                 f"ingest reads {', '.join(VIDEO_SUFFIXES)}"})
    seen: dict[str, Path] = {}
    for path, rel in found:
        if rel in seen:
            raise IngestError(f"two sources share the relative path '{rel}' ({seen[rel]} and {path}); pass folders whose contents do not collide")
        seen[rel] = path
    return found, rejected


def _slug(sha: str) -> str:
    return f"v{sha[:12]}"


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Segment:
    """A planned clip: its source span and the source spans of its shots."""

    start: float
    end: float
    shots: tuple[tuple[float, float], ...]
    num_frames: int


def _shot_problem(fo: fx.Footage, a: float, b: float, cfg: IngestSettings) -> str | None:
    idx = np.nonzero((fo.times >= a - 1e-6) & (fo.times < b - 1e-6))[0]
    if len(idx) == 0:
        return "no frames"
    p = cfg.preset
    if (b - a) * p.fps < p.min_shot_frames - 1e-6:
        return f"too short: shot of {b - a:.2f} s, the preset's shortest shot is {p.min_shot_frames / p.fps:.2f} s"
    heard = sum(_overlap(span, (a, b)) for span in fo.audio_spans)
    if heard < (b - a) - 0.1:
        return f"audio covers only {heard:.2f} s of the shot's {b - a:.2f} s (the track starts late, stops early or has a gap)"
    luma = float(fo.out[idx].astype(np.float32).mean())
    if luma < cfg.black_max_luma:
        return f"black: mean luma {luma:.1f} < {cfg.black_max_luma:g}"
    if len(idx) > 1:
        motion = float(np.abs(np.diff(fo.small[idx].astype(np.int16), axis=0)).mean())
        if motion < cfg.static_max_motion:
            return f"static: mean frame change {motion:.3f} < {cfg.static_max_motion:g} levels"
    return None


def plan_segments(bounds: list[float], usable: list[bool], cfg: IngestSettings) -> tuple[list[Segment], list[tuple[float, float, str]]]:
    """Group consecutive usable shots (``bounds`` are the shot edges in source seconds) into
    clips of the preset's frame counts and shot limits. Returns the clips and the left-over
    spans that no clip could use, with a reason."""
    p = cfg.preset
    fps = float(p.fps)
    choices = sorted(p.frame_choices)
    min_shot = p.min_shot_frames / fps
    shots = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    runs: list[list[tuple[float, float]]] = []
    for s, ok in zip(shots, usable):
        if ok:
            if runs and runs[-1] and abs(runs[-1][-1][1] - s[0]) < 1e-9:
                runs[-1].append(s)
            else:
                runs.append([s])
        else:
            runs.append([])
    segs: list[Segment] = []
    left: list[tuple[float, float, str]] = []
    for run in (r for r in runs if r):
        i, cur = 0, run[0][0]
        while i < len(run):
            pieces: list[tuple[float, float]] = []
            for j in range(i, len(run)):
                if len(pieces) == p.max_shots:
                    break
                pieces.append((max(cur, run[j][0]), run[j][1]))
                if (run[j][1] - cur) * fps >= choices[-1]:
                    break
            placed = None
            while pieces:
                fit = [c for c in choices if c <= (pieces[-1][1] - cur) * fps + 1e-6]
                if fit:
                    end = cur + fit[-1] / fps
                    if len(pieces) == 1 or end - pieces[-1][0] >= min_shot - 1e-6:
                        placed = Segment(cur, end, tuple((a, min(b, end)) for a, b in pieces), fit[-1])
                        break
                pieces.pop()
            if placed is None:
                left.append((cur, run[i][1], f"too short: {run[i][1] - cur:.2f} s of usable shots, a clip needs {choices[0] / fps:.2f} s"))
                i += 1
                if i < len(run):
                    cur = run[i][0]
                continue
            segs.append(placed)
            end = placed.end
            while i < len(run) and run[i][1] <= end + 1e-6:
                i += 1
            if i < len(run) and run[i][1] - end < min_shot - 1e-6:
                i += 1
            if i < len(run):
                cur = max(end, run[i][0])
    return segs, left


# --------------------------------------------------------------------------- measuring


def measure(path: Path, cfg: IngestSettings) -> tuple[fx.Footage, dict[str, Any], dict[str, float]]:
    """Decode ``path`` and run every detector. Returns the footage, the measurements (the
    ``ingest.json`` entry plus the per-utterance and per-face details) and seconds per stage."""
    p, d = cfg.preset, cfg.detectors
    times: dict[str, float] = {}
    t = time.perf_counter()
    fo = fx.decode_footage(path, (p.width, p.height), p.sample_rate, d)
    times["decode"] = time.perf_counter() - t - fo.face_seconds  # decoding and resizing
    times["faces"] = fo.face_seconds
    t = time.perf_counter()
    transitions = fx.detect_shots(fo.small, fo.times, fo.fps, d)
    times["shots"] = time.perf_counter() - t
    t = time.perf_counter()
    speech = fx.detect_speech(fo.audio16, d) if fo.has_audio else []
    times["speech"] = time.perf_counter() - t
    t = time.perf_counter()
    speakers = fx.group_speakers(fx.embed_voices(fo.audio16, speech), d) if speech else []
    times["speakers"] = time.perf_counter() - t
    t = time.perf_counter()
    people = fx.group_faces(np.stack([f.descriptor for f in fo.faces]), d) if fo.faces else []
    # A "person" seen at one look only is a false detection (a blend in a dissolve, a pattern),
    # not somebody in the footage: keep the people seen at two looks or more.
    seen = {k: len({f.t for f, j in zip(fo.faces, people) if j == k}) for k in set(people)}
    keep = [seen[k] >= 2 for k in people]
    fo.faces = [f for f, ok in zip(fo.faces, keep) if ok]
    renumber: dict[int, int] = {}
    people = [renumber.setdefault(k, len(renumber)) for k, ok in zip(people, keep) if ok]
    times["faces"] += time.perf_counter() - t
    m = {
        "duration_s": round(fo.duration_s, 4),
        "fps": round(fo.fps, 4),
        "size": [fo.width, fo.height],
        "codec": fo.codec,
        "audio": fo.has_audio,
        "cuts_s": [round(tr.t, 4) for tr in transitions],
        "transitions": [tr.to_json() for tr in transitions],
        "speech_s": [[round(a, 3), round(b, 3)] for a, b in speech],
        "speech_speaker": [f"SPK{k + 1}" for k in speakers],
        "speakers": len(set(speakers)),
        "people": len(set(people)),
        "faces": [{"t": round(f.t, 3), "person": f"P{k + 1}"} for f, k in zip(fo.faces, people)],
    }
    return fo, m, times


# --------------------------------------------------------------------------- scripts


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def sidecar_disagreements(script: mtss.Script, m: dict[str, Any], cfg: IngestSettings) -> list[tuple[float, float, str]]:
    """Where a human script disagrees with the measurements: (source start, end, reason)."""
    out: list[tuple[float, float, str]] = []
    tol, stol = cfg.cut_tolerance_s, cfg.speech_tolerance_s
    human = [s.time_range.start for s in script.shot[1:]]
    detected = m["transitions"]

    def near(h: float, tr: dict[str, Any]) -> bool:
        return tr["span"][0] - tol <= h <= tr["span"][1] + tol

    for h in human:
        if not any(near(h, tr) for tr in detected):
            nearest = min((tr["t"] for tr in detected), key=lambda x: abs(x - h), default=None)
            where = f"nearest detected cut {nearest:.2f} s" if nearest is not None else "no cut was detected"
            out.append((h - tol, h + tol, f"sidecar cut at {h:.2f} s has no detected cut within {tol:g} s ({where})"))
    for tr in detected:
        if not any(near(h, tr) for h in human):
            nearest = min(human, key=lambda x: abs(x - tr["t"]), default=None)
            where = f"nearest sidecar cut {nearest:.2f} s" if nearest is not None else "the sidecar has one shot"
            out.append((tr["t"] - tol, tr["t"] + tol, f"detected {tr['kind']} cut at {tr['t']:.2f} s is not in the sidecar ({where})"))
    speech = [tuple(s) for s in m["speech_s"]]
    for ev in script.event:
        if ev.type != "dialogue":
            continue
        span = (ev.time_range.start, ev.time_range.end)
        hits = [s for s in speech if _overlap(s, span) > 0]
        if not hits:
            out.append((span[0], span[1], f"sidecar dialogue {ev.id} [{span[0]:.2f}, {span[1]:.2f}] s: no speech detected there"))
            continue
        # A line the VAD split at a pause is one utterance: compare with the union of the spans.
        best = (min(h[0] for h in hits), max(h[1] for h in hits))
        ds, de = abs(best[0] - span[0]), abs(best[1] - span[1])
        if ds > stol or de > stol:
            out.append((min(span[0], best[0]), max(span[1], best[1]),
                        f"sidecar dialogue {ev.id} [{span[0]:.2f}, {span[1]:.2f}] s vs detected speech [{best[0]:.2f}, {best[1]:.2f}] s "
                        f"(start off by {ds:.2f} s, end by {de:.2f} s; tolerance {stol:g} s)"))
    events = [(e.time_range.start, e.time_range.end) for e in script.event]
    for s in speech:
        if not any(_overlap(s, e) > 0 for e in events):
            out.append((s[0], s[1], f"detected speech [{s[0]:.2f}, {s[1]:.2f}] s has no event in the sidecar"))
    return out


def _frame_edge(t: float, start: float, fps: float, nf: int) -> int:
    """The first output frame (sampled at start + i / fps) that lies at or after source time t."""
    return int(min(nf, max(0, np.ceil((t - start) * fps - 1e-6))))


def _clip_span(a: float, b: float, seg: Segment) -> tuple[float, float] | None:
    """A source span [a, b) as clip seconds cut to the clip, or None when it misses it."""
    s, e = max(a, seg.start), min(b, seg.end)
    if e - s < 0.05:
        return None
    return round(s - seg.start, 3), round(e - seg.start, 3)


def _people_in(m: dict[str, Any], a: float, b: float) -> list[str]:
    """The people (face groups) seen in at least a third of the face detector's looks in [a, b)."""
    looks = [t for t in m["_face_times"] if a - 1e-6 <= t < b - 1e-6]
    if not looks:
        return []
    counts: dict[str, set[float]] = {}
    for f in m["faces"]:
        if a - 1e-6 <= f["t"] < b - 1e-6:
            counts.setdefault(f["person"], set()).add(f["t"])
    return sorted((p for p, ts in counts.items() if len(ts) * 3 >= len(looks)), key=lambda p: int(p[1:]))


def draft_script(clip_id: str, seg: Segment, m: dict[str, Any], cfg: IngestSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """An MTSS script for one clip from the measurements alone, and each field's provenance."""
    fps = float(cfg.preset.fps)
    nf = seg.num_frames
    T = round(nf / fps, 6)
    shots, prov = [], {}
    edges = [_frame_edge(a, seg.start, fps, nf) for a, _ in seg.shots[1:]]
    starts = [0] + edges
    ends = edges + [nf]
    people_all: list[str] = []
    for k, ((a, b), f0, f1) in enumerate(zip(seg.shots, starts, ends), start=1):
        who = _people_in(m, a, b)
        people_all += [p for p in who if p not in people_all]
        sid = f"S{k}"
        desc = f"shot {k} of {len(seg.shots)}, {(f1 - f0) / fps:.2f} s" + (f", {len(who)} {'person' if len(who) == 1 else 'people'} on screen" if who else ", nobody on screen")
        shots.append({"id": sid, "time_range": [f0 / fps, f1 / fps], "visual_description": desc,
                      "references_in_shot": who, "active_events": []})
        for fld in ("time_range", "visual_description", "references_in_shot"):
            prov[f"shot[{sid}].{fld}"] = "detected"
    events, speakers = [], []
    for (a, b), spk in zip(m["speech_s"], m["speech_speaker"]):
        span = _clip_span(a, b, seg)
        if span is None:
            continue
        eid = f"E{len(events) + 1}"
        events.append({"id": eid, "type": "dialogue", "time_range": [span[0], min(span[1], T)], "speaker": spk,
                       "line": f"(untranscribed speech, {span[1] - span[0]:.1f} s)", "description": f"{spk} speaks"})
        if spk not in speakers:
            speakers.append(spk)
        for sh in shots:
            if _overlap(tuple(sh["time_range"]), (span[0], span[1])) > 1e-6:
                sh["active_events"].append(eid)
        for fld in ("time_range", "speaker", "line", "description"):
            prov[f"event[{eid}].{fld}"] = "detected"
    reference = []
    for pid in people_all:
        reference.append({"id": pid, "category": "person", "semantic_description": f"person {pid} (face group of this source)",
                          "appearance_anchor": {"detail_description": f"the face seen as {pid}"}})
    for spk in speakers:
        reference.append({"id": spk, "category": "person", "semantic_description": f"speaker {spk} (voice group of this source)",
                          "appearance_anchor": {"detail_description": "unseen or not linked to a face"},
                          "voice": f"the voice heard as {spk}"})
    for ent in reference:
        for fld in ("category", "semantic_description", "appearance_anchor"):
            prov[f"reference[{ent['id']}].{fld}"] = "detected"
    script = {"clip_id": clip_id, "duration": T, "reference": reference, "shot": shots, "event": events,
              "global": {"scene_description": f"{len(shots)}-shot clip cut from footage", "global_style": "real footage",
                         "global_audio": "speech" if events else "no speech detected"}}
    for fld in ("scene_description", "global_style", "global_audio"):
        prov[f"global.{fld}"] = "detected"
    return script, prov


def sidecar_script(clip_id: str, seg: Segment, human: mtss.Script, m: dict[str, Any], cfg: IngestSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """The part of a human source script that falls in one clip, in clip seconds on its frame
    grid, and each field's provenance (``human``)."""
    fps = float(cfg.preset.fps)
    nf = seg.num_frames
    T = round(nf / fps, 6)
    data = human.to_dict()
    shots, prov, cited = [], {}, set()
    tol = cfg.cut_tolerance_s

    def snap(h: float) -> float:
        """A sidecar cut that agrees with a detected one (within the tolerance) lands on the
        detected cut, which is where the clip's shots were planned and its frames change."""
        near = [tr["t"] for tr in m["transitions"] if tr["span"][0] - tol <= h <= tr["span"][1] + tol]
        return min(near, key=lambda t: abs(t - h)) if near else h

    for s in data["shot"]:
        s["time_range"] = [snap(s["time_range"][0]) if s["time_range"][0] > 0 else s["time_range"][0], snap(s["time_range"][1])]
    inside = [s for s in data["shot"] if _clip_span(*s["time_range"], seg) is not None]
    for k, s in enumerate(inside):
        f0 = 0 if k == 0 else _frame_edge(s["time_range"][0], seg.start, fps, nf)
        f1 = nf if k == len(inside) - 1 else _frame_edge(inside[k + 1]["time_range"][0], seg.start, fps, nf)
        s = dict(s, time_range=[f0 / fps, f1 / fps], active_events=[])
        shots.append(s)
        cited |= set(s.get("references_in_shot") or [])
    events = []
    for ev in data["event"]:
        span = _clip_span(*ev["time_range"], seg)
        if span is None:
            continue
        ev = dict(ev, time_range=[span[0], min(span[1], T)])
        events.append(ev)
        if ev.get("speaker"):
            cited.add(ev["speaker"])
        for s in shots:
            if _overlap(tuple(s["time_range"]), tuple(ev["time_range"])) > 1e-6:
                s["active_events"].append(ev["id"])
    reference = [dict(e) for e in data["reference"] if e["id"] in cited]
    for e in reference:
        e.pop("reference_image", None)
        e.pop("reference_audio", None)
    script = {"clip_id": clip_id, "duration": T, "reference": reference, "shot": shots, "event": events, "global": data["global"]}
    for s in shots:
        for fld in s:
            if fld != "id":
                prov[f"shot[{s['id']}].{fld}"] = "human"
    for ev in events:
        for fld in ev:
            if fld != "id":
                prov[f"event[{ev['id']}].{fld}"] = "human"
    for e in reference:
        for fld in e:
            if fld != "id":
                prov[f"reference[{e['id']}].{fld}"] = "human"
    for fld in data["global"]:
        prov[f"global.{fld}"] = "human"
    return script, prov


# --------------------------------------------------------------------------- references


def _ref_audio(m: dict[str, Any], fo: fx.Footage, speaker: str, seg: Segment, cfg: IngestSettings) -> np.ndarray | None:
    """``ref_audio_seconds`` of this speaker's speech from outside the clip (its longest
    utterance elsewhere in the source), at the preset rate; None when there is none."""
    spans = [tuple(s) for s, k in zip(m["speech_s"], m["speech_speaker"]) if k == speaker and _overlap(tuple(s), (seg.start, seg.end)) == 0]
    if not spans or fo.audio_out is None:
        return None
    a, b = max(spans, key=lambda s: s[1] - s[0])
    sr = cfg.preset.sample_rate
    n = int(round(cfg.preset.ref_audio_seconds * sr))
    wav = fo.audio_out[int(a * sr) : int(b * sr)][:n]
    return np.pad(wav, (0, n - len(wav))).astype(np.float32)


def _ref_image(fo: fx.Footage, m: dict[str, Any], person: str, seg: Segment) -> np.ndarray | None:
    """A portrait of this person from the sighting farthest in time from the clip, away from
    any transition (a dissolve's frames blend two shots)."""
    best, far = None, 0.0
    near_cut = [(tr["span"][0] - 0.25, tr["span"][1] + 0.25) for tr in m["transitions"]]
    for f, rec in zip(fo.faces, m["faces"]):
        if rec["person"] != person or seg.start - 1e-6 <= f.t < seg.end or any(a <= f.t <= b for a, b in near_cut):
            continue
        dist = min(abs(f.t - seg.start), abs(f.t - seg.end))
        if best is None or dist > far:
            best, far = f.portrait, dist
    return best


def _link_sidecar_roles(human: mtss.Script, m: dict[str, Any]) -> dict[str, str]:
    """Sidecar entity id -> detected key (``SPKn`` by dialogue overlap, ``Pn`` by the face
    most often seen in the shots that cite the entity)."""
    links: dict[str, str] = {}
    for ent in human.reference:
        votes: dict[str, float] = {}
        for ev in human.event:
            if ev.speaker == ent.id:
                for s, k in zip(m["speech_s"], m["speech_speaker"]):
                    votes[k] = votes.get(k, 0.0) + _overlap(tuple(s), (ev.time_range.start, ev.time_range.end))
        if votes and max(votes.values()) > 0:
            links[ent.id] = max(votes, key=votes.get)
            continue
        for sh in human.shot:
            if ent.id in sh.references_in_shot:
                for p in _people_in(m, sh.time_range.start, sh.time_range.end):
                    votes[p] = votes.get(p, 0.0) + 1
        if votes:
            links[ent.id] = max(votes, key=votes.get)
    return links


# --------------------------------------------------------------------------- one source


def _atomic_json(root: Path, name: str, obj: Any) -> None:
    with _manifest.atomic_writer(root, name) as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def _run_key(cfg: IngestSettings, captioner: Captioner | None) -> str:
    """What a finished source's record depends on besides its bytes: the settings and the captioner."""
    return cfg.digest() + ("" if captioner is None else "+" + hashlib.sha256(f"{captioner.url}|{captioner.model}".encode()).hexdigest()[:8])


def _state_path(out: Path, sha: str) -> Path:
    return out / STATE_DIR / "sources" / f"{sha}.json"


def ingest_source(path: str, rel: str, sha: str, out: str, cfg: IngestSettings, captioner: Captioner | None = None) -> dict[str, Any]:
    """Measure one source, write its clips' media under ``out`` and record the result (rows
    without a split, rejected lines, measurements, seconds per stage) in ``.ingest/``. Runs
    in a worker process; returns the record.

    A failure no check foresaw (a detector or codec error on an odd file) refuses this source
    with the error in ``rejected.jsonl`` and removes its half-written media; the other sources
    are ingested. Such a record is not kept, so the next run tries the source again."""
    try:
        return _ingest_source(path, rel, sha, out, cfg, captioner)
    except Exception as exc:  # noqa: BLE001 - one odd source must not sink the whole ingest
        root = Path(out)
        for sub in ("clips", "refs"):
            for f in (root / sub).glob(f"{_slug(sha)}-*"):
                f.unlink(missing_ok=True)
        return _failed_record(rel, sha, f"could not be ingested ({exc.__class__.__name__}: {str(exc)[:300]}); the other "
                              "sources were; report this with the file")


def _failed_record(rel: str, sha: str, why: str) -> dict[str, Any]:
    """The record of a source that failed this run: refused with ``why``, never resumed from."""
    return {"source": rel, "sha256": sha, "rows": [], "measured": None, "seconds": {}, "failed": True,
            "rejected": [{"source": rel, "reason": f"{rel}: {why}"}]}


def _ingest_source(path: str, rel: str, sha: str, out: str, cfg: IngestSettings, captioner: Captioner | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    root = Path(out)
    record: dict[str, Any] = {"source": rel, "sha256": sha, "settings": _run_key(cfg, captioner), "rows": [], "rejected": [],
                              "measured": None, "seconds": {}}
    try:
        fo, m, seconds = measure(Path(path), cfg)
    except fx.DecodeError as exc:
        record["rejected"].append({"source": rel, "reason": f"{rel}: {exc}"})
        _atomic_json(_state_path(root, sha).parent, _state_path(root, sha).name, record)
        return record
    record["seconds"] = seconds
    m["_face_times"] = [float(t) for t in fo.face_times]
    t = time.perf_counter()
    p = cfg.preset
    rejected = record["rejected"]
    if not fo.has_audio:
        rejected.append({"source": rel, "reason": f"{rel}: no audio track; preset {p.name} needs audio at {p.sample_rate} Hz"})
    human: mtss.Script | None = None
    sidecar = Path(path).with_name(Path(path).stem + SIDECAR_SUFFIX)
    disagreements: list[tuple[float, float, str]] = []
    if sidecar.is_file() and fo.has_audio:
        try:
            human = mtss.parse_script(mtss.read_script_file(sidecar), clip_id=Path(rel).stem)
            mtss.check_script(human, max_customized_roles=None)
        except (mtss.ScriptError, ValueError, OSError) as exc:
            rejected.append({"source": rel, "reason": f"{rel}: sidecar {sidecar.name} is not a usable MTSS script: {exc}"})
            human = None
        else:
            disagreements = sidecar_disagreements(human, m, cfg)
    bounds = [0.0] + [tr["t"] for tr in m["transitions"]] + [fo.duration_s]
    usable = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        problem = _shot_problem(fo, a, b, cfg) if fo.has_audio else "no audio"
        usable.append(problem is None)
        if problem is not None and fo.has_audio:
            rejected.append({"source": rel, "segment": [round(a, 3), round(b, 3)], "reason": f"{rel} [{a:.2f}, {b:.2f}] s: {problem}"})
    segs, left = plan_segments(bounds, usable, cfg) if fo.has_audio else ([], [])
    for a, b, why in left:
        rejected.append({"source": rel, "segment": [round(a, 3), round(b, 3)], "reason": f"{rel} [{a:.2f}, {b:.2f}] s: {why}"})
    links = _link_sidecar_roles(human, m) if human is not None else {}
    detectors = fx.detector_info()
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for k, seg in enumerate(segs):
        cid = f"{_slug(sha)}-{k:03d}"
        if human is not None:
            script, prov = sidecar_script(cid, seg, human, m, cfg)
        else:
            script, prov = draft_script(cid, seg, m, cfg)
            if captioner is not None:
                captioner.fill(script, prov)
        problems = mtss.script_issues(script, clip_id=cid, max_customized_roles=None)[1]
        if problems:
            rejected.append({"source": rel, "segment": [round(seg.start, 3), round(seg.end, 3)],
                             "reason": f"{rel} [{seg.start:.2f}, {seg.end:.2f}] s: its script breaks a rule: {problems[0]}"})
            continue
        # People: the faces seen in the clip, and for a human script also the persons it cites.
        people = {pid for a, b in seg.shots for pid in _people_in(m, a, b)}
        if human is not None:
            persons = {e["id"] for e in script["reference"] if e.get("category") == "person"}
            cited = {pid for sh in script["shot"] for pid in sh.get("references_in_shot") or [] if pid in persons}
            people = people if len(people) >= len(cited) else cited
        if len(people) > cfg.max_people:
            rejected.append({"source": rel, "segment": [round(seg.start, 3), round(seg.end, 3)],
                             "reason": f"{rel} [{seg.start:.2f}, {seg.end:.2f}] s: {len(people)} people on screen, at most {cfg.max_people}"})
            continue
        # Frames sampled at start + i / fps (the latest source frame at or before), audio cut to match.
        idx = np.searchsorted(fo.times, seg.start + np.arange(seg.num_frames) / p.fps + 1e-6, side="right") - 1
        frames = fo.out[np.clip(idx, 0, len(fo.out) - 1)]
        n = int(round(seg.num_frames / p.fps * p.sample_rate))
        a0 = int(round(seg.start * p.sample_rate))
        wav = fo.audio_out[a0 : a0 + n]
        wav = np.pad(wav, (0, n - len(wav))).astype(np.float32)
        rels = [f"clips/{cid}.mp4", f"clips/{cid}.wav"]
        media.write_video(root / rels[0], frames, p.fps, wav, p.sample_rate)
        media.write_wav(root / rels[1], wav, p.sample_rate)
        custom = 0
        for j, ent in enumerate(script["reference"]):
            key = links.get(ent["id"], ent["id"])
            if custom >= p.max_customized_roles or ent["category"] != "person":
                continue
            img = _ref_image(fo, m, key, seg) if key.startswith("P") else None
            voice = _ref_audio(m, fo, key, seg, cfg) if key.startswith("SPK") else None
            if img is None and voice is None:
                continue
            custom += 1
            if img is not None:
                ent["reference_image"] = f"refs/{cid}_r{j}.png"  # by index: an id from a sidecar is no file name
                media.write_png(root / ent["reference_image"], img)
                rels.append(ent["reference_image"])
                prov[f"reference[{ent['id']}].reference_image"] = "detected"
            if voice is not None:
                ent["reference_audio"] = f"refs/{cid}_r{j}.wav"
                media.write_wav(root / ent["reference_audio"], voice, p.sample_rate)
                rels.append(ent["reference_audio"])
                prov[f"reference[{ent['id']}].reference_audio"] = "detected"
        row: dict[str, Any] = {
            "id": cid, "split": None, "source": rel, "video": rels[0], "audio": rels[1], "fps": p.fps,
            "num_frames": seg.num_frames, "width": p.width, "height": p.height, "sample_rate": p.sample_rate,
            "sha256": {r: _manifest.sha256_file(root / r) for r in rels}, "script": script,
            "source_sha256": sha, "source_span": [round(seg.start, 4), round(seg.end, 4)],
            "detectors": detectors, "provenance": prov,
        }
        issues = [why for a, b, why in disagreements if _overlap((a, b), (seg.start, seg.end)) > 0]
        if issues:
            row["ingest_issues"] = issues
        record["rows"].append(row)
    seconds["write"] = time.perf_counter() - t
    m.pop("_face_times")
    if human is not None:
        m["sidecar"] = {"file": sidecar.name, "disagreements": [why for _, _, why in disagreements]}
    record["measured"] = m
    _atomic_json(_state_path(root, sha).parent, _state_path(root, sha).name, record)
    return record


# --------------------------------------------------------------------------- the command


def _load_state(out: Path, sha: str, key: str) -> dict[str, Any] | None:
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return None  # a name read from storage never becomes a path unless it is a sha256
    path = _state_path(out, sha)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("sha256") != sha or rec.get("settings") != key or rec.get("failed"):
        return None
    if not (isinstance(rec.get("rows"), list) and isinstance(rec.get("rejected"), list) and isinstance(rec.get("seconds"), dict)
            and (rec.get("measured") is None or isinstance(rec.get("measured"), dict))):
        return None
    prefix = _slug(sha) + "-"
    for row in rec["rows"]:  # a clip whose media is gone, changed or not its own is redone
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"].startswith(prefix)
                and isinstance(row.get("sha256"), dict) and row["sha256"]):
            return None
        for r, want in row["sha256"].items():
            # Names read from storage: only this source's own files under clips/ and refs/.
            parts = PurePosixPath(r).parts if isinstance(r, str) else ()
            if len(parts) != 2 or parts[0] not in ("clips", "refs") or not parts[1].startswith(prefix) or "\\" in r:
                return None
            f = out / r
            if not f.is_file() or _manifest.sha256_file(f) != want:
                return None
    return rec


def assign_splits(shas: list[str], eval_share: float) -> dict[str, str]:
    """Source sha256 -> split: the sources whose sha sorts first make up ``eval_share`` of
    them (at least one when there are two or more sources); a source never spans splits."""
    order = sorted(shas)
    n_eval = 0 if len(order) < 2 else max(1, round(eval_share * len(order)))
    return {s: ("eval" if i < n_eval else "train") for i, s in enumerate(order)}


def ingest(
    srcs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    preset: str | SynthConfig = "tiny",
    workers: int | None = None,
    progress: bool = True,
    settings: IngestSettings | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Ingest every video under ``srcs`` into ``out_dir`` (see the module docstring) and
    return the ``ingest.json`` report. An ``out_dir`` holding anything but an earlier ingest
    is refused; an earlier ingest is resumed (finished sources are not redone).

    ``shard`` (i, n) takes only the i-th of n equal shares of the videos (sorted by path,
    dealt round-robin); shard 0 also reports the files that are not videos. :func:`join`
    merges the shards' outputs into one dataset (the pipeline's fan-out on a cluster)."""
    cfg = settings or IngestSettings(preset=get_preset(preset))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IngestError(f"--out {out} exists and is not a folder; pick another output folder")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_DIR).is_dir():
        raise IngestError(f"--out {out} is not empty and holds no earlier ingest; pick an empty folder")
    try:
        captioner = captioner_from_env()
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    sources, rejected = find_sources(srcs, skip=out)
    if not sources:
        raise IngestError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {', '.join(map(str, srcs))}")
    if shard is not None:
        i, n = shard
        if not (isinstance(n, int) and n >= 1 and isinstance(i, int) and 0 <= i < n):
            raise IngestError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        sources = sources[i::n]
        rejected = rejected if i == 0 else []
    (out / STATE_DIR / "sources").mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        return _ingest_locked(out, sources, rejected, cfg, captioner, workers, progress)


@contextlib.contextmanager
def _exclusive(out: Path):
    """Hold ``<out>/.ingest/lock`` for the whole ingest: a second ingest into the same folder
    is refused at once instead of writing the same media files at the same time."""
    import fcntl

    fh = open(out / STATE_DIR / "lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IngestError(f"another ingest is writing to {out}; wait for it to finish or pick another --out") from None
        yield
    finally:
        fh.close()


def _ingest_locked(out: Path, sources: list[tuple[Path, str]], rejected: list[dict[str, str]], cfg: IngestSettings,
                   captioner: Captioner | None, workers: int | None, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    shas = {rel: _manifest.sha256_file(path) for path, rel in sources}
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for path, rel in sources:
        rec = _load_state(out, shas[rel], _run_key(cfg, captioner))
        if rec is not None and rec.get("source") == rel:
            records[rel] = rec
        else:
            todo.append((path, rel))
    resumed = len(records)
    # The same bytes under two names would give the same clip ids twice: ingest them once.
    first: dict[str, str] = {}
    for path, rel in list(sources):
        if shas[rel] in first:
            rejected.append({"source": rel, "reason": f"{rel}: the same bytes as '{first[shas[rel]]}' (sha256 {shas[rel][:12]}...); ingested once"})
            sources.remove((path, rel))
            todo = [x for x in todo if x[1] != rel]
            records.pop(rel, None)
        else:
            first[shas[rel]] = rel
    workers = max(1, min(workers or len(os.sched_getaffinity(0)) or 1, len(todo) or 1))
    from tqdm import tqdm

    bar = tqdm(total=len(sources), initial=resumed, desc="ingest", unit="source", disable=not progress, file=sys.stderr)
    try:
        if workers == 1:
            for path, rel in todo:
                records[rel] = ingest_source(str(path), rel, shas[rel], str(out), cfg, captioner)
                bar.update(1)
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(ingest_source, str(path), rel, shas[rel], str(out), cfg, captioner): rel for path, rel in todo}
                for fut in as_completed(futs):
                    rel = futs[fut]
                    try:
                        records[rel] = fut.result()
                    except BrokenProcessPool:
                        # A worker died (killed, out of memory): the sources still in flight are
                        # refused for this run and tried again by the next one.
                        records[rel] = _failed_record(rel, shas[rel], "its worker process died (killed or out of memory); run the "
                                                      "ingest again to retry it, with fewer --workers if memory is short")
                    bar.update(1)
    finally:
        bar.close()
    extra = {"workers": workers, "sources_resumed": resumed, "run_key": _run_key(cfg, captioner), "total_wall": time.perf_counter() - t0,
             "captioner": None if captioner is None else {"url": captioner.url, "model": captioner.model}}
    return assemble(out, [records[rel] for _, rel in sources], rejected, cfg, extra)


def assemble(out: Path, records: list[dict[str, Any]], file_rejections: list[dict[str, Any]], cfg: IngestSettings,
             extra: dict[str, Any]) -> dict[str, Any]:
    """Write the dataset files from the per-source records (media already in ``out``):
    splits by source, ``manifest.jsonl``, ``rejected.jsonl``, ``ingest.json``, ``mavinset.json``."""
    good = [rec["sha256"] for rec in records if rec["rows"]]
    splits = assign_splits(good, cfg.eval_share)
    rows: list[dict[str, Any]] = []
    rejected = list(file_rejections)
    seconds: dict[str, float] = {}
    measured: dict[str, Any] = {}
    for rec in sorted(records, key=lambda r: r["source"]):
        rejected.extend(rec["rejected"])
        for k, v in rec["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
        if rec["measured"] is not None:
            measured[rec["source"]] = rec["measured"]
        for row in rec["rows"]:
            rows.append(dict(row, split=splits[rec["sha256"]]))
    counts = {
        "files": len(records) + len(file_rejections),
        "videos": len(records),
        "sources_ingested": len(good),
        "sources_resumed": extra.get("sources_resumed", 0),
        "clips": {s: sum(1 for r in rows if r["split"] == s) for s in _manifest.SPLITS},
        "clips_with_script_issues": sum(1 for r in rows if r.get("ingest_issues")),
        "rejected": len(rejected),
        "seconds_of_footage": round(sum(v["duration_s"] for v in measured.values()), 3),
    }
    report = {
        "ingest_version": INGEST_VERSION,
        "preset": cfg.preset.name,
        "settings": cfg.to_json(),
        "detectors": fx.detector_info(),
        "counts": counts,
        "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"total_wall": round(extra.get("total_wall", 0.0), 3)},
        "workers": extra.get("workers", 1),
        "shards": extra.get("shards", 1),
        "run_key": extra.get("run_key"),
        "captioner": extra.get("captioner"),
        "inputs": {rec["source"]: rec["sha256"] for rec in sorted(records, key=lambda r: r["source"])},
        "sources": measured,
    }
    _manifest.write_manifest(out, rows)
    _manifest.write_manifest(out, rejected, name=REJECTED)
    _atomic_json(out, REPORT, report)
    meta = {"name": "MAVINSet-footage", "generator": "mavin_ops.data.ingest", "generator_version": INGEST_VERSION,
            "kind": "footage", "preset": cfg.preset.name, "config": asdict(cfg.preset), "clips": counts["clips"],
            "sources": {s: sum(1 for v in splits.values() if v == s) for s in _manifest.SPLITS}}
    _atomic_json(out, "mavinset.json", meta)
    return report


def join(shard_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, settings: IngestSettings) -> dict[str, Any]:
    """Merge the outputs of :func:`ingest` shards into one dataset at ``out_dir`` (empty):
    every shard's media (hard links where the file system allows) and per-source records,
    with splits decided over all sources together. A shard whose media no longer matches
    its records is refused (run that shard again)."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        raise IngestError(f"join output {out} is not empty; pick an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    file_rejections: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    seen_sha: dict[str, str] = {}
    extra: dict[str, Any] = {"shards": 0, "workers": 0, "total_wall": 0.0, "captioner": None}
    for shard in map(Path, shard_dirs):
        try:
            report = json.loads((shard / REPORT).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IngestError(f"shard {shard}: no readable {REPORT} ({exc.__class__.__name__}); run that shard again") from None
        extra["shards"] += 1
        extra["workers"] += int(report.get("workers", 1))
        extra["total_wall"] = max(extra["total_wall"], float((report.get("seconds") or {}).get("total_wall", 0.0)))
        extra["captioner"] = extra["captioner"] or report.get("captioner")
        shard_records = []
        for rel, sha in (report.get("inputs") or {}).items():
            rec = _load_state(shard, sha, str(report.get("run_key", "")))
            if rec is None:
                raise IngestError(f"shard {shard}: the record of '{rel}' is missing or its media changed; run that shard again")
            if rel in seen:
                raise IngestError(f"source '{rel}' was ingested by two shards ({seen[rel]} and {shard}); give each shard its own files")
            seen[rel] = str(shard)
            if sha in seen_sha:  # the same bytes in two shards: keep the first, as ingest does
                file_rejections.append({"source": rel, "reason": f"{rel}: the same bytes as '{seen_sha[sha]}' (sha256 {sha[:12]}...); ingested once"})
                continue
            seen_sha[sha] = rel
            shard_records.append(rec)
        for rec in shard_records:
            for row in rec["rows"]:
                for rel in row["sha256"]:  # checked against the record by _load_state
                    src = _manifest.resolve_media(shard, rel)
                    dst = _manifest.resolve_media(out, rel)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, dst)
                    except OSError:
                        shutil.copy2(src, dst)
        records.extend(shard_records)
        sources = {rec["source"] for rec in shard_records}
        lines = (shard / REJECTED).read_text(encoding="utf-8").splitlines() if (shard / REJECTED).is_file() else []
        for line in map(json.loads, filter(str.strip, lines)):
            if "segment" not in line and line.get("source") not in sources:
                file_rejections.append(line)
    return assemble(out, records, file_rejections, settings, extra)


def write_sheets(root: str | os.PathLike, sheets_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """A contact sheet per ingested clip in ``sheets_dir`` (evaluation/sheets.py): per shot,
    the reference portraits it cites and its first, middle and last frame; the waveform with
    the dialogue spans and cuts. What a person looks at before training on the clips."""
    from mavin_ops.evaluation.sheets import clip_sheet

    out: list[Path] = []
    for line in _manifest.read_manifest(root):
        if line.row is None or (limit is not None and len(out) >= limit):
            continue
        clip = media.load_clip(root, line.row)
        title = f"{clip.id}  {line.row.get('source')} [{line.row['source_span'][0]:.2f}, {line.row['source_span'][1]:.2f}] s"
        out.append(clip_sheet(Path(sheets_dir) / f"{clip.id}.png", clip_id=title, script=clip.script, truth=None,
                              generated=clip.frames, fps=clip.fps, truth_audio=None, generated_audio=clip.waveform,
                              sample_rate=clip.sample_rate, ref_images=clip.ref_images, label="footage"))
    return out


def with_settings(preset: str, **overrides: Any) -> IngestSettings:
    """IngestSettings for a preset with some fields replaced (tests, the CLI)."""
    return replace(IngestSettings(preset=get_preset(preset)), **overrides)

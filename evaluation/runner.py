"""Evaluation runner: every metric for every generated clip, aggregated, written to
``metrics.json`` and logged to MLflow.

Inputs are generated clips (frames + waveform) and the benchmark they were generated from
(scripts, reference media, world truth). Two entry points:

- :func:`evaluate_clips` scores in-memory clips (anything shaped like
  :class:`mavin_ops.data.media.Clip`) and returns the metrics.json content;
- :func:`evaluate_dir` reads a generated directory in the dataset layout
  (``manifest.jsonl`` rows with ``id``, ``video``, ``audio``) against a benchmark dataset
  directory (the ``eval`` split), writes ``metrics.json`` and logs it.

Per clip (definitions in :mod:`mavin_ops.evaluation.metrics`):

- ``sta``, ``shot_boundary_deviation``, ``shot_boundary_unmatched``: detected cuts vs the
  script's shot starts (frame ``round(start * fps)``);
- ``tams``: detected speech vs the union of the script's dialogue intervals;
- ``cisc`` (MAVIN eq. S8): over every pair of shots that cite the same character (person,
  animal or object), one term per pair and shared character: the cosine of the two shots'
  whole-shot features p_i (the world encoder's frame embedding averaged over the shot),
  counted only where the encoder sees that character drawn in both shots (by its reference
  image, else by its kind) and 0 otherwise; so the same noise in every shot scores 0, not 1.
  With ``shot_consistency: regions`` the older per-region colour features are used instead;
- ``bisc``: the same over pairs of shots that cite the same ``scene`` entity, counted where
  the encoder sees a drawn scene in both shots;
- ``character_recall`` / ``character_precision``: over (shot, customized role with a reference
  image) pairs of every shot, whether the encoder sees the role drawn there against whether
  the script puts it there;
- ``vc``: per customized role with a reference image, the mean over the shots it is in of
  the cosine between its look there and the reference image's look; the clip's value is
  the mean over roles;
- ``ac``: per customized role with a reference voice, the cosine between the voice inside
  its dialogue intervals (minus times another role speaks) and the reference voice; silence
  there scores 0; the clip's value is the mean over roles.

Per run, with the benchmark's own clips as ``truth``: ``fidelity_fd``, the Fréchet distance of
the generated frames to the benchmark's frames in the world encoder's feature space, and the
``references`` section: every metric of the ground truth itself and of the ground truth with
its pixels shuffled, which the gate's principle-based floors are fractions of.

Undefined values (no pairs, no customized role) are ``null`` with the reason in
``notes``; aggregation leaves them out and counts what it used.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import numpy as np

from mavin_ops.evaluation import metrics as M
from mavin_ops.evaluation.detectors import DetectorSuite, build_suite
from mavin_ops.evaluation.regions import ShotRegions, foreground_mask, layouts_from_world, locate
from mavin_ops.evaluation.results import METRICS_FILE, SCHEMA, benchmark_digest, write_json
from mavin_ops.errors import MavinError

__all__ = [
    "CHARACTER_CATEGORIES",
    "DEFAULT_CONFIG_FILE",
    "PER_CLIP_METRICS",
    "ClipLike",
    "EvalConfig",
    "EvaluationError",
    "evaluate_clip",
    "evaluate_clips",
    "evaluate_dir",
    "load_config",
    "read_val_metrics",
]

DEFAULT_CONFIG_FILE = Path(__file__).with_name("eval_config.yaml")
PER_CLIP_METRICS = tuple(name for name, info in M.METRICS.items() if info.per_clip)
RUN_METRICS = tuple(name for name, info in M.METRICS.items() if not info.per_clip)
CHARACTER_CATEGORIES = ("person", "animal", "object")
#: Keys the runner accepts from the training code's validation metrics.
VAL_KEYS = ("val_loss_video", "val_loss_audio")


class EvaluationError(MavinError, ValueError):
    """Inputs the runner cannot evaluate: names the clip, file or field and the fix."""


class ClipLike(Protocol):
    """What the runner needs of a clip (:class:`mavin_ops.data.media.Clip` has it all)."""

    id: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    waveform: np.ndarray  # (T,) float32
    sample_rate: int
    fps: int
    script: Any  # mtss.Script
    row: dict[str, Any]  # the benchmark's manifest row (its "world" is used when present)
    ref_images: dict[str, np.ndarray]
    ref_audio: dict[str, np.ndarray]


# --------------------------------------------------------------------------- config


@dataclass
class EvalConfig:
    """Evaluation settings; ``detectors`` is the section :func:`detectors.build_suite` reads.

    ``sta_delta_frames`` (when set) or ``sta_delta_seconds`` x fps is the STA penalty and
    match window delta (MAVIN eq. S9). ``cisc_features`` picks the extractor for CISC:
    ``look`` (the identity embedder on each character's region, default) or
    ``shot_features`` (the shot extractor, as the paper does with ViCLIP). ``regions``
    tunes :func:`regions.locate`. ``split`` is the benchmark split evaluated.
    """

    sta_delta_seconds: float = M.DEFAULT_STA_DELTA_SECONDS
    sta_delta_frames: int | None = None
    cisc_features: str = "look"
    split: str = "eval"
    regions: dict[str, float] = field(
        default_factory=lambda: {"wall_fraction": 0.6, "min_share": 0.02, "tol": 4.0, "coverage": 0.9}
    )
    detectors: dict[str, Any] = field(default_factory=dict)
    #: The world encoder file (evaluation/encoder.py); None: the shipped one. ``""`` turns the
    #: encoder metrics off (fidelity, character presence; CISC/BISC fall back to regions).
    encoder: str | None = None
    #: CISC/BISC features: ``encoder`` (MAVIN eq. S8: whole-shot encoder features, a pair's
    #: term counts only where the encoder sees the character / a drawn scene in both shots)
    #: or ``regions`` (per-region features of the ``cisc_features`` / ``shot_features`` kind).
    shot_consistency: str = "encoder"
    #: Which detectors and encoder fit the benchmark: ``synthetic`` (the built-in defaults and
    #: the world encoder), ``footage`` (data/footage.py's detectors, no world encoder: see
    #: :data:`detectors.FOOTAGE_DETECTORS`), or None: chosen from the benchmark's
    #: ``mavinset.json`` (``kind: footage`` is what ``data ingest`` writes).
    profile: str | None = None

    def delta(self, fps: float) -> int:
        if self.sta_delta_frames is not None:
            return int(self.sta_delta_frames)
        return M.default_sta_delta(fps, self.sta_delta_seconds)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(config: str | os.PathLike | Mapping[str, Any] | EvalConfig | None = None) -> EvalConfig:
    """An :class:`EvalConfig` from a YAML file, a mapping, or the defaults; unknown keys and
    bad values are one-line errors naming the file and key."""
    if isinstance(config, EvalConfig):
        return config
    source = "evaluation config"
    if config is None:
        return EvalConfig()
    if isinstance(config, (str, os.PathLike)):
        from mavin_ops.bounded import InputError, load_yaml, read_text

        path = Path(config)
        source = str(path)
        if not path.exists():
            raise EvaluationError(f"{path}: no such evaluation config file; pass an existing YAML file or omit it for the defaults")
        try:
            data = load_yaml(read_text(path, "an evaluation config (YAML)"), str(path)) or {}
        except InputError as exc:
            raise EvaluationError(str(exc)) from None
    else:
        data = dict(config)
    if not isinstance(data, Mapping):
        raise EvaluationError(f"{source}: expected a mapping of settings")
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    for key in data:
        if key not in names:
            raise EvaluationError(f"{source}: unknown key '{key}'; allowed: {', '.join(names)}")
    cfg = EvalConfig(**{k: v for k, v in data.items() if k != "regions"})
    if "regions" in data:
        regions = data["regions"] or {}
        allowed = ("wall_fraction", "min_share", "tol", "coverage", "bins")
        for key in regions:
            if key not in allowed:
                raise EvaluationError(f"{source}: regions.{key}: unknown key; allowed: {', '.join(allowed)}")
        cfg.regions = {**EvalConfig().regions, **regions}
    if cfg.cisc_features not in ("look", "shot_features"):
        raise EvaluationError(f"{source}: cisc_features: '{cfg.cisc_features}' is not 'look' or 'shot_features'")
    if cfg.profile not in (None, "synthetic", "footage"):
        raise EvaluationError(f"{source}: profile: '{cfg.profile}' is not 'synthetic' or 'footage' (or null: from the benchmark)")
    if cfg.shot_consistency not in ("encoder", "regions"):
        raise EvaluationError(f"{source}: shot_consistency: '{cfg.shot_consistency}' is not 'encoder' or 'regions'")
    if cfg.encoder is not None and not isinstance(cfg.encoder, str):
        raise EvaluationError(f"{source}: encoder: expected a file path (or null for the shipped encoder), got {cfg.encoder!r}")
    if cfg.sta_delta_frames is not None and (not isinstance(cfg.sta_delta_frames, int) or cfg.sta_delta_frames < 1):
        raise EvaluationError(f"{source}: sta_delta_frames: expected a positive integer, got {cfg.sta_delta_frames!r}")
    if not (isinstance(cfg.sta_delta_seconds, (int, float)) and cfg.sta_delta_seconds > 0):
        raise EvaluationError(f"{source}: sta_delta_seconds: expected a positive number, got {cfg.sta_delta_seconds!r}")
    if not isinstance(cfg.detectors, Mapping):
        raise EvaluationError(f"{source}: detectors: expected a mapping of kind to detector config")
    return cfg


# --------------------------------------------------------------------------- one clip


def _intervals(spans: Iterable[Any]) -> list[M.Interval]:
    return [(float(s.start), float(s.end)) for s in spans]


def _subtract(a: list[M.Interval], b: list[M.Interval]) -> list[M.Interval]:
    """``a`` minus the union of ``b``."""
    out = []
    ub = M.union_intervals(b)
    for s, e in M.union_intervals(a):
        cur = s
        for bs, be in ub:
            if be <= cur or bs >= e:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < e:
            out.append((cur, e))
    return out


def _samples(waveform: np.ndarray, spans: list[M.Interval], sr: int) -> np.ndarray:
    parts = [waveform[int(round(s * sr)) : int(round(e * sr))] for s, e in spans]
    parts = [p for p in parts if p.size]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _cos_or_zero(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine, 0 when a side is missing (nothing of it was found). NaN stays NaN."""
    if a is None or b is None or a.size == 0 or b.size == 0:
        return 0.0
    return M.cosine(a, b)


def evaluate_clip(clip: ClipLike, suite: DetectorSuite, config: EvalConfig | None = None, encoder: Any = None) -> dict[str, Any]:
    """Every per-clip metric of one clip: ``{"id", "metrics", "notes", "details"}``.
    ``encoder`` (a :class:`~mavin_ops.evaluation.encoder.WorldEncoder`) adds character
    presence and the encoder's CISC/BISC; without it those are left undefined."""
    cfg = config or EvalConfig()
    script = clip.script
    frames = np.asarray(clip.frames)
    waveform = np.asarray(clip.waveform, dtype=np.float32)
    fps, sr = float(clip.fps), int(clip.sample_rate)
    n_frames = int(frames.shape[0])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or n_frames < 1:
        raise EvaluationError(f"clip {clip.id}: frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    details: dict[str, Any] = {"frames": n_frames, "fps": fps, "sample_rate": sr}

    # -- shot transitions: STA (MAVIN eq. S9) and shot boundary deviation (MTSS)
    delta = cfg.delta(fps)
    scripted = M.script_cut_frames([s.time_range.start for s in script.shot], fps, n_frames)
    predicted = sorted(int(k) for k in suite.cuts.detect(frames, fps))
    match = M.match_cuts(predicted, scripted, delta)
    values["sta"] = math.exp(-match.cost / n_frames)
    values["shot_boundary_unmatched"] = float(match.n_unmatched)
    if match.pairs:
        values["shot_boundary_deviation"] = match.total_offset / len(match.pairs)
    else:
        values["shot_boundary_deviation"] = None
        notes["shot_boundary_deviation"] = "no cuts scripted" if not scripted and not predicted else "no matched cuts"
    details["cuts"] = {
        "delta": delta,
        "scripted": scripted,
        "predicted": predicted,
        "pairs": [list(p) for p in match.pairs],
        "missing": list(match.unmatched_scripted),
        "extra": list(match.unmatched_predicted),
    }

    # -- speech timing: TAMS (MAVIN eq. S7)
    dialogue = [e for e in script.event if e.type == "dialogue"]
    scripted_speech = M.union_intervals((e.time_range.start, e.time_range.end) for e in dialogue)
    detected_speech = suite.speech.detect(waveform, sr)
    values["tams"] = M.tams(detected_speech, scripted_speech)
    if not scripted_speech and not detected_speech:
        notes["tams"] = "no dialogue scripted and no speech detected: 1 by definition"
    details["speech"] = {"scripted": [list(x) for x in scripted_speech], "detected": [list(x) for x in detected_speech]}

    # -- shots: regions and features
    categories = {e.id: e.category for e in script.reference}
    layouts = layouts_from_world((clip.row or {}).get("world"))
    ranges = M.shot_frame_ranges([(s.time_range.start, s.time_range.end) for s in script.shot], fps, n_frames)
    cisc_extractor = suite.look if cfg.cisc_features == "look" else suite.shot_features
    bg_feat: dict[str, np.ndarray] = {}
    char_feat: dict[tuple[str, str], np.ndarray | None] = {}
    look_feat: dict[tuple[str, str], np.ndarray | None] = {}
    localised = []
    region_kw = {k: v for k, v in cfg.regions.items()}
    for shot, (a, b) in zip(script.shot, ranges):
        if b <= a:
            continue
        sf = frames[a:b]
        layout = layouts.get(shot.id)
        reg: ShotRegions = locate(sf, layout, **region_kw)
        localised.append(reg.localised)
        bg_feat[shot.id] = suite.shot_features.features(sf, reg.background if reg.localised else None)
        for rid in shot.references_in_shot:
            if categories.get(rid) not in CHARACTER_CATEGORIES:
                continue
            # None: no layout, or the layout does not place this character -> whole shot
            mask = reg.characters.get(rid) if reg.localised else None
            visible = mask is None or bool(mask.any())
            feat = cisc_extractor.features(sf, mask) if visible else None
            char_feat[(shot.id, rid)] = feat
            look_feat[(shot.id, rid)] = (
                feat if cisc_extractor is suite.look else (suite.look.features(sf, mask) if visible else None)
            )
    details["localised"] = bool(localised) and all(localised)
    if localised and not all(localised):
        details["localised_shots"] = localised

    # -- what the world encoder sees (evaluation/encoder.py), per shot: its whole-shot feature
    #    p_i, whether a scene of the world is drawn, and which characters are drawn
    shots = [s for s, (a, b) in zip(script.shot, ranges) if b > a]
    ref_images = getattr(clip, "ref_images", {}) or {}
    ref_audio = getattr(clip, "ref_audio", {}) or {}
    with_ref = [e.id for e in script.customized_roles() if ref_images.get(e.id) is not None]
    scripted_pairs = {(s.id, rid) for s in shots for rid in with_ref if rid in s.references_in_shot}
    use_encoder = encoder is not None and cfg.shot_consistency == "encoder"
    if encoder is not None:
        from mavin_ops.evaluation.encoder import SPECIES

        entities = ((clip.row or {}).get("world") or {}).get("entities") or {}
        seen = {s.id: encoder.shot_summary(frames[a:b], {r: ref_images[r] for r in with_ref}) for s, (a, b) in zip(script.shot, ranges) if b > a}
        p_shot = {sid: v["feature"] for sid, v in seen.items()}
        scene_p = {sid: v["scene"] for sid, v in seen.items()}
        species_p = {sid: v["species"] for sid, v in seen.items()}
        presence = {(sid, rid): p for sid, v in seen.items() for rid, p in v["presence"].items()}

        def drawn(sid: str, rid: str) -> bool:
            """Is character ``rid`` drawn in shot ``sid``: by its reference image, else by its
            kind (the world's species), else a drawn scene is all that can be asked."""
            if (sid, rid) in presence:
                return presence[(sid, rid)] >= 0.5
            kind = (entities.get(rid) or {}).get("species")
            if kind in SPECIES:
                return bool(species_p[sid][SPECIES.index(kind)] >= 0.5)
            return scene_p[sid] >= 0.5

        predicted = {k for k, v in presence.items() if v >= 0.5}
        hits = len(scripted_pairs & predicted)
        values["character_recall"] = hits / len(scripted_pairs) if scripted_pairs else None
        values["character_precision"] = hits / len(predicted) if predicted else None
        if scripted_pairs and not predicted:
            notes["character_precision"] = "the encoder sees no customized role drawn in any shot"
        details["presence"] = {f"{sid}/{rid}": round(v, 4) for (sid, rid), v in sorted(presence.items())}
        details["scene_drawn"] = {sid: round(v, 4) for sid, v in scene_p.items()}
    else:
        values["character_recall"] = values["character_precision"] = None
        notes["character_recall"] = notes["character_precision"] = "no world encoder (evaluation config encoder: '')"
    if not scripted_pairs:
        notes["character_recall"] = notes["character_precision"] = "no customized role with a reference image appears in a shot"

    # -- CISC / BISC (MAVIN eq. S8): over shot pairs that share a character (one term per pair
    #    and character) / a background. With the encoder, the cosine of whole-shot features,
    #    counted only where the character (the scene) is drawn in both shots: 0 otherwise, so
    #    noise the same in every shot is no consistency.
    cisc_pairs: list[M.PairScore] = []
    bisc_pairs: list[M.PairScore] = []
    for si, sj in itertools.combinations(shots, 2):
        shared = [r for r in si.references_in_shot if r in sj.references_in_shot]
        for rid in shared:
            cat = categories.get(rid)
            if cat in CHARACTER_CATEGORIES:
                if use_encoder:
                    cos = M.cosine(p_shot[si.id], p_shot[sj.id]) if drawn(si.id, rid) and drawn(sj.id, rid) else 0.0
                else:
                    cos = _cos_or_zero(char_feat.get((si.id, rid)), char_feat.get((sj.id, rid)))
                cisc_pairs.append(M.PairScore(si.id, sj.id, rid, cos))
            elif cat == "scene":
                if use_encoder:
                    cos = M.cosine(p_shot[si.id], p_shot[sj.id]) if min(scene_p[si.id], scene_p[sj.id]) >= 0.5 else 0.0
                else:
                    cos = M.cosine(bg_feat[si.id], bg_feat[sj.id])
                bisc_pairs.append(M.PairScore(si.id, sj.id, rid, cos))
    values["cisc"] = M.pair_consistency(cisc_pairs)
    values["bisc"] = M.pair_consistency(bisc_pairs)
    if not cisc_pairs:
        notes["cisc"] = "no pairs: no two shots share a character"
    if not bisc_pairs:
        notes["bisc"] = "no pairs: no two shots share a scene"
    details["cisc_pairs"] = [[p.i, p.j, p.key, p.cosine] for p in cisc_pairs]
    details["bisc_pairs"] = [[p.i, p.j, p.key, p.cosine] for p in bisc_pairs]

    # -- identity: VC (look vs reference image), AC (voice vs reference voice)
    vc_roles: dict[str, float] = {}
    ac_roles: dict[str, float] = {}
    for ent in script.customized_roles():
        rid = ent.id
        img = ref_images.get(rid)
        in_shots = [s.id for s in shots if rid in s.references_in_shot]
        if img is not None and in_shots:
            fg = foreground_mask(img, tol=region_kw.get("tol", 4.0), coverage=region_kw.get("coverage", 0.9))
            ref = suite.look.features(np.asarray(img)[None], fg[None])
            vc_roles[rid] = float(np.mean([_cos_or_zero(look_feat.get((sid, rid)), ref) for sid in in_shots]))
        wav = ref_audio.get(rid)
        own = [(e.time_range.start, e.time_range.end) for e in dialogue if e.speaker == rid]
        if wav is not None and own:
            others = [(e.time_range.start, e.time_range.end) for e in dialogue if e.speaker != rid]
            ref_emb = suite.voice.embed(np.asarray(wav, dtype=np.float32), sr)
            if ref_emb is None:
                notes[f"ac.{rid}"] = "the reference audio has no voiced sound; role left out"
                continue
            gen = _samples(waveform, _subtract(own, others), sr)
            gen_emb = suite.voice.embed(gen, sr) if gen.size else None
            ac_roles[rid] = _cos_or_zero(gen_emb, ref_emb)
    values["vc"] = M.mean_or_none(vc_roles.values())
    values["ac"] = M.mean_or_none(ac_roles.values())
    if not vc_roles:
        notes["vc"] = "no customized role with a reference image appears in a shot"
    if not ac_roles:
        notes["ac"] = "no customized role with a reference voice has dialogue"
    details["vc_roles"] = vc_roles
    details["ac_roles"] = ac_roles
    # Metrics the script itself rules out (decided by the benchmark's script and references,
    # never by what was generated): the gate's coverage rule counts every other clip.
    not_applicable = sorted(
        name
        for name, applies in (
            ("shot_boundary_deviation", bool(scripted)),
            ("cisc", bool(cisc_pairs)),
            ("bisc", bool(bisc_pairs)),
            ("vc", any(ref_images.get(e.id) is not None and any(e.id in s.references_in_shot for s in shots) for e in script.customized_roles())),
            ("ac", any(ref_audio.get(e.id) is not None and any(d.speaker == e.id for d in dialogue) for e in script.customized_roles())),
            ("character_recall", bool(scripted_pairs)),
            ("character_precision", bool(scripted_pairs)),
        )
        if not applies
    )
    return {"id": str(clip.id), "metrics": values, "notes": notes, "details": details, "not_applicable": not_applicable}


# --------------------------------------------------------------------------- many clips


def load_world_encoder(cfg: EvalConfig) -> Any:
    """The config's world encoder (None when turned off with ``encoder: ''``)."""
    from mavin_ops.evaluation.encoder import EncoderError, load_encoder

    if cfg.encoder == "":
        return None
    try:
        return load_encoder(cfg.encoder)
    except EncoderError as exc:
        raise EvaluationError(f"evaluation config encoder: {exc}") from None


def _as_clip(clip: ClipLike, frames: np.ndarray) -> "_Clip":
    return _Clip(str(clip.id), frames, np.asarray(clip.waveform), int(clip.sample_rate), int(clip.fps), clip.script,
                 dict(clip.row or {}), dict(getattr(clip, "ref_images", {}) or {}), dict(getattr(clip, "ref_audio", {}) or {}))


def _frames_features(encoder: Any, clips: Iterable[ClipLike]) -> np.ndarray:
    return np.concatenate([encoder.features(np.asarray(c.frames)) for c in clips])


def evaluate_clips(
    clips: Iterable[ClipLike],
    config: EvalConfig | Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    benchmark: Mapping[str, Any] | None = None,
    val_metrics: Mapping[str, Any] | None = None,
    suite: DetectorSuite | None = None,
    truth: Mapping[str, ClipLike] | None = None,
    encoder: Any = None,
) -> dict[str, Any]:
    """Score clips and aggregate: returns the metrics.json content (see
    :mod:`mavin_ops.evaluation.results`). ``benchmark`` (id, digest) defaults to a digest of
    the clips' rows; ``val_metrics`` are passed through as run-level metrics.

    ``truth`` (the benchmark's own clips by id) adds the Fréchet distance of the generated
    frames to the benchmark's (``fidelity_fd``) and the ``references`` section: the same
    metrics of the ground truth itself (the ceiling a floor can be a fraction of) and of the
    ground truth with every frame's pixels shuffled (the right colours, nothing drawn)."""
    cfg = load_config(config)
    if cfg.profile == "footage":  # a profile named in the config applies here too
        cfg = with_profile(cfg, "footage")
    suite = suite or build_suite(cfg.detectors)
    encoder = encoder if encoder is not None else load_world_encoder(cfg)
    clips = list(clips)

    def score(items: list[ClipLike]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        per = [evaluate_clip(c, suite, cfg, encoder) for c in items]
        return per, M.aggregate([c["metrics"] for c in per], PER_CLIP_METRICS)

    per_clip, agg = score(clips)
    rows = [dict(clip.row or {"id": clip.id}, script=clip.script.to_dict()) for clip in clips]
    for name in VAL_KEYS:
        v = (val_metrics or {}).get(name)
        if v is not None:
            agg[name] = {"mean": float(v), "count": 1, "missing": 0, "per_clip": False}
    references: dict[str, Any] = {}
    if truth is not None:
        missing = [str(c.id) for c in clips if str(c.id) not in truth]
        if missing:
            raise EvaluationError(f"no ground-truth clip for {', '.join(missing[:5])}; pass the benchmark's clips as truth")
        gt = [truth[str(c.id)] for c in clips]
        rng = np.random.default_rng(0)
        from mavin_ops.evaluation.encoder import shuffle_pixels

        shuffled = [_as_clip(c, shuffle_pixels(np.asarray(c.frames), rng)) for c in gt]
        # Fidelity needs the world encoder (off for footage: it only knows the synthetic world).
        gt_feat = _frames_features(encoder, gt) if encoder is not None else None
        scoring_truth = all(c is g for c, g in zip(clips, gt))  # the benchmark scored as its own generation
        for name, items in (("ground_truth", gt), ("shuffled", shuffled)):
            ref_agg = {k: agg[k] for k in PER_CLIP_METRICS} if scoring_truth and name == "ground_truth" else score(items)[1]
            means = {k: v.get("mean") for k, v in ref_agg.items()}
            if gt_feat is not None:
                means["fidelity_fd"] = frechet_distance_of(encoder, items, gt_feat)
            references[name] = means
        if gt_feat is not None:
            n_frames = int(sum(len(c.frames) for c in clips))
            agg["fidelity_fd"] = {"mean": frechet_distance_of(encoder, clips, gt_feat), "count": n_frames, "missing": 0, "per_clip": False}
    bench = dict(benchmark or {})
    bench.setdefault("digest", benchmark_digest(rows))
    bench.setdefault("id", f"clips@{bench['digest'][:12]}")
    bench["n_clips"] = len(per_clip)
    config_out = cfg.to_dict()
    config_out["detectors"] = suite.config
    out = {"schema": SCHEMA, "benchmark": bench, "config": config_out, "metrics": agg, "clips": per_clip}
    if encoder is not None:
        out["encoder"] = encoder.describe()
    if references:
        out["references"] = references
    return out


def frechet_distance_of(encoder: Any, clips: Iterable[ClipLike], truth_features: np.ndarray) -> float:
    """``fidelity_fd`` of clips against the benchmark frames' encoder features."""
    from mavin_ops.evaluation.encoder import frechet_distance

    return frechet_distance(_frames_features(encoder, clips), truth_features)


@dataclass
class _Clip:
    id: str
    frames: np.ndarray
    waveform: np.ndarray
    sample_rate: int
    fps: int
    script: Any
    row: dict[str, Any]
    ref_images: dict[str, np.ndarray]
    ref_audio: dict[str, np.ndarray]


def _manifest_rows(root: Path, what: str) -> list[dict[str, Any]]:
    """Every row of the manifest through the loader the steps after validation share
    (data/validate.py ``read_clips``): of a validated benchmark, only the validated clips."""
    from mavin_ops.data.validate import DatasetError, read_clips

    try:
        return read_clips(root, what=what)
    except DatasetError as exc:
        raise EvaluationError(f"{exc}") from None


def dataset_kind(root: Path) -> str:
    """``footage`` for a dataset ``data ingest`` wrote, else ``synthetic`` (from mavinset.json)."""
    try:
        meta = json.loads((root / "mavinset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "synthetic"
    return "footage" if isinstance(meta, dict) and meta.get("kind") == "footage" else "synthetic"


def with_profile(cfg: EvalConfig, kind: str) -> EvalConfig:
    """``cfg`` with the profile for a benchmark of ``kind`` applied where the config left the
    choice open: for footage, the footage detectors for every detector key ``detectors`` does
    not set, and no world encoder (unless ``encoder`` is set)."""
    profile = cfg.profile or kind
    if profile != "footage":
        return dataclasses.replace(cfg, profile=profile)
    from mavin_ops.evaluation.detectors import FOOTAGE_DETECTORS

    return dataclasses.replace(
        cfg,
        profile="footage",
        detectors={**{k: dict(v) for k, v in FOOTAGE_DETECTORS.items()}, **dict(cfg.detectors)},
        encoder="" if cfg.encoder is None else cfg.encoder,
    )


def _benchmark_id(root: Path, split: str, digest: str) -> str:
    meta = root / "mavinset.json"
    name = root.name
    if meta.is_file():
        try:
            m = json.loads(meta.read_text(encoding="utf-8"))
            name = f"{m.get('name', name)}-{m.get('preset', '?')}-seed{m.get('seed', '?')}"
        except (json.JSONDecodeError, OSError):
            pass
    return f"{name}/{split}@{digest[:12]}"


def _load_generated(gen_root: Path, gen_row: Mapping[str, Any], bench_root: Path, bench_row: Mapping[str, Any]) -> _Clip:
    from mavin_ops import mtss
    from mavin_ops.data import media
    from mavin_ops.data.manifest import resolve_media

    cid = str(bench_row["id"])

    def path(root: Path, rel: Any, what: str) -> Path:
        if not isinstance(rel, str):
            raise EvaluationError(f"clip {cid}: manifest field '{what}' in {root / 'manifest.jsonl'} must be a relative path")
        try:
            p = resolve_media(root, rel)
        except ValueError as exc:
            raise EvaluationError(f"clip {cid}: {what}: {exc}") from None
        if not p.is_file():
            raise EvaluationError(f"clip {cid}: {what} file '{rel}' is missing under {root}")
        return p

    try:
        script = mtss.parse_script(bench_row.get("script"), clip_id=cid)
        frames, fps = media.read_video(path(gen_root, gen_row.get("video"), "video"))
        waveform, sr = media.read_wav(path(gen_root, gen_row.get("audio"), "audio"))
    except (mtss.ScriptError, media.MediaError) as exc:
        raise EvaluationError(f"clip {cid}: {exc}") from None
    want_frames, want_fps = bench_row.get("num_frames"), bench_row.get("fps")
    if want_fps is not None and fps != want_fps:
        raise EvaluationError(f"clip {cid}: the generated video runs at {fps} fps, the benchmark clip at {want_fps}; generate at the benchmark's rate")
    if want_frames is not None and frames.shape[0] != want_frames:
        raise EvaluationError(
            f"clip {cid}: the generated video has {frames.shape[0]} frames, the benchmark clip {want_frames}; generate the script's full duration"
        )
    want_sr = bench_row.get("sample_rate")
    if want_sr is not None and sr != want_sr:
        raise EvaluationError(f"clip {cid}: the generated audio is {sr} Hz, the benchmark clip {want_sr} Hz")
    ref_images: dict[str, np.ndarray] = {}
    ref_audio: dict[str, np.ndarray] = {}
    try:
        for ent in script.reference:
            if ent.reference_image is not None:
                ref_images[ent.id] = media.read_png(path(bench_root, ent.reference_image, f"reference_image of {ent.id}"))
            if ent.reference_audio is not None:
                ref_audio[ent.id], _ = media.read_wav(path(bench_root, ent.reference_audio, f"reference_audio of {ent.id}"))
    except media.MediaError as exc:
        raise EvaluationError(f"clip {cid}: {exc}") from None
    return _Clip(cid, frames, waveform, int(sr), int(fps), script, dict(bench_row), ref_images, ref_audio)


def read_val_metrics(source: str | os.PathLike | Mapping[str, Any] | None, tracking_uri: str | None = None) -> dict[str, float]:
    """The training code's validation losses (``val_loss_video``, ``val_loss_audio``) from a
    mapping, a JSON file (top level or under ``"metrics"``), or ``runs:/<run_id>`` (the
    run's latest MLflow metrics). Keys that are absent are left out."""
    if source is None or source == "":
        return {}
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
    elif str(source).startswith("runs:/"):
        from mlflow.exceptions import MlflowException

        from mavin_ops import tracking

        run_id = str(source)[len("runs:/") :].strip("/").split("/")[0]
        try:
            data = tracking.client(tracking_uri).get_run(run_id).data.metrics
        except MlflowException as exc:
            raise EvaluationError(f"validation metrics {source}: cannot read the MLflow run: {' '.join(str(exc).split())}") from None
    else:
        path = Path(source)
        if not path.is_file():
            raise EvaluationError(f"{path}: no such validation metrics file; pass the training run's metrics.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, Mapping) and isinstance(data.get("metrics"), Mapping) and not any(k in data for k in VAL_KEYS):
            data = data["metrics"]
    out = {}
    for key in VAL_KEYS:
        v = data.get(key) if isinstance(data, Mapping) else None
        if isinstance(v, Mapping):
            v = v.get("mean")
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise EvaluationError(f"validation metrics {source}: '{key}' is {v!r}, not a number")
            out[key] = float(v)
    return out


def evaluate_dir(
    generated_dir: str | os.PathLike,
    benchmark_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    config: EvalConfig | Mapping[str, Any] | str | os.PathLike | None = None,
    val_metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    limit: int | None = None,
    sheets: bool = False,
) -> dict[str, Any]:
    """Evaluate the generated clips in ``generated_dir`` against the benchmark split of
    ``benchmark_dir`` (``None``: the same directory, i.e. score the benchmark's own media).
    With ``sheets`` (as ``mavin-ops evaluate`` and the pipeline's evaluate step call it) a contact sheet per clip and a summary sheet go to
    ``<out_dir>/sheets`` (evaluation/sheets.py), are named in metrics.json (``sheets``) and
    are logged with the metrics.

    Every benchmark clip of the split must have a generated clip with the same id and the
    same frame count. Writes ``<out_dir>/metrics.json`` and, when an MLflow run is active or
    ``run_id`` is given, logs the aggregate means as ``eval/<metric>``, the benchmark id and
    digest as tags, and the file as :data:`gate.METRICS_ARTIFACT`. ``val_metrics`` (a
    mapping, a JSON file or ``runs:/<run_id>``) passes the training code's validation losses
    through. Returns the metrics.json content.
    """
    gen_root = Path(generated_dir)
    bench_root = Path(benchmark_dir) if benchmark_dir is not None else gen_root
    cfg = with_profile(load_config(config), dataset_kind(bench_root))
    all_bench = _manifest_rows(bench_root, "benchmark")
    bench_rows = [r for r in all_bench if r.get("split") == cfg.split]
    if not bench_rows:
        raise EvaluationError(
            f"{bench_root / 'manifest.jsonl'}: no clips with split '{cfg.split}'; point at the benchmark dataset or set the split"
        )
    bench_rows.sort(key=lambda r: str(r.get("id")))
    split_clips = len(bench_rows)  # the whole benchmark: the gate refuses a limited evaluation
    if limit is not None:
        bench_rows = bench_rows[: int(limit)]
    same = gen_root.resolve() == bench_root.resolve()
    gen_rows = {str(r.get("id")): r for r in (all_bench if same else _manifest_rows(gen_root, "generated"))}
    missing = [str(r["id"]) for r in bench_rows if str(r.get("id")) not in gen_rows]
    if missing:
        raise EvaluationError(
            f"{gen_root / 'manifest.jsonl'}: no generated clip for benchmark clip(s) {', '.join(missing[:5])}"
            + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            + "; generate every clip of the benchmark"
        )
    digest = benchmark_digest(bench_rows)
    benchmark = {
        "id": _benchmark_id(bench_root, cfg.split, digest),
        "digest": digest,
        "path": str(bench_root.resolve()),
        "split_clips": split_clips,
    }
    vals = read_val_metrics(val_metrics, tracking_uri)
    clips = [_load_generated(gen_root, gen_rows[str(r["id"])], bench_root, r) for r in bench_rows]
    truth = {c.id: c for c in clips} if same else {str(r["id"]): _load_generated(bench_root, r, bench_root, r) for r in bench_rows}
    result = evaluate_clips(clips, cfg, benchmark=benchmark, val_metrics=vals, truth=truth)
    result["generated"] = {"path": str(gen_root.resolve()), "n_clips": len(bench_rows)}
    if sheets:
        result["sheets"] = _write_sheets(Path(out_dir), clips, truth, result)
    path = write_json(Path(out_dir) / METRICS_FILE, result)
    _log_metrics(result, path, run_id, tracking_uri)
    return result


def _write_sheets(out_dir: Path, clips: list[_Clip], truth_clips: Mapping[str, _Clip], result: dict[str, Any]) -> dict[str, str]:
    """A contact sheet per clip and a summary sheet under ``<out_dir>/sheets`` (evaluation/
    sheets.py), next to the benchmark's own clips; returns their paths relative to ``out_dir``
    for metrics.json."""
    from .sheets import SHEETS_DIR, SUMMARY, clip_sheet, summary_sheet

    folder = out_dir / SHEETS_DIR
    by_id = {c["id"]: c["metrics"] for c in result["clips"]}
    seen = {c["id"]: c["details"].get("presence") for c in result["clips"]}
    entries = []
    for clip in clips:
        truth, truth_audio = truth_clips[clip.id].frames, truth_clips[clip.id].waveform
        clip_sheet(
            folder / f"{clip.id}.png", clip_id=clip.id, script=clip.script, truth=truth, generated=clip.frames,
            fps=clip.fps, truth_audio=truth_audio, generated_audio=clip.waveform, sample_rate=clip.sample_rate,
            ref_images=clip.ref_images, metrics=by_id.get(clip.id), presence=seen.get(clip.id),
        )
        mid = len(truth) // 2
        entries.append({"id": clip.id, "truth": truth[mid], "generated": clip.frames[min(mid, len(clip.frames) - 1)], "metrics": by_id.get(clip.id)})
    summary_sheet(folder / SUMMARY, entries)
    return {"dir": SHEETS_DIR, "summary": f"{SHEETS_DIR}/{SUMMARY}"}


def _log_metrics(result: dict[str, Any], path: Path, run_id: str | None, tracking_uri: str | None) -> None:
    import mlflow

    from mavin_ops.evaluation.gate import METRICS_ARTIFACT

    if run_id is None and mlflow.active_run() is None:
        return
    scalars = {f"eval/{k}": float(v["mean"]) for k, v in result["metrics"].items() if v.get("mean") is not None}
    scalars["eval/n_clips"] = float(result["benchmark"]["n_clips"])
    for ref_name, means in (result.get("references") or {}).items():  # the ceilings the floors are fractions of
        scalars.update({f"eval/{ref_name}/{k}": float(v) for k, v in means.items() if v is not None})
    artifact_dir = str(Path(METRICS_ARTIFACT).parent)
    tags = {"mavin.benchmark_id": str(result["benchmark"]["id"]), "mavin.benchmark_digest": str(result["benchmark"]["digest"])}
    if result.get("encoder"):
        tags["mavin.world_encoder_sha256"] = str(result["encoder"].get("sha256"))
    if run_id is not None:
        from mlflow.entities import Metric
        from mavin_ops import tracking

        client = tracking.client(tracking_uri)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in scalars.items()])
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
        client.log_artifact(run_id, str(path), artifact_dir)
        if result.get("sheets"):
            client.log_artifacts(run_id, str(path.parent / result["sheets"]["dir"]), f"{artifact_dir}/{result['sheets']['dir']}")
        return
    mlflow.log_metrics(scalars)
    mlflow.set_tags(tags)
    mlflow.log_artifact(str(path), artifact_dir)
    if result.get("sheets"):
        mlflow.log_artifacts(str(path.parent / result["sheets"]["dir"]), f"{artifact_dir}/{result['sheets']['dir']}")

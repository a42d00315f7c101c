"""Example scene scripts and reference media sized for a model config.

Export needs example inputs to trace and to check parity on; the smoke test and the
benchmark need a request to send. Both come from here, so nothing depends on a dataset being
present. Scripts are valid MTSS (``mavin_ops/mtss.py``) and match the config's frame rate and
temporal stride (``stride * k + 1`` frames). By default an example lasts about
``EXAMPLE_SECONDS`` whatever the codec's stride (17 frames at 8 fps).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mavin_ops.model.config import ModelConfig

__all__ = ["EXAMPLE_SECONDS", "example_duration", "example_references", "example_script", "write_example"]

#: Default length of an example clip in seconds (17 frames at 8 fps).
EXAMPLE_SECONDS = 2.125


def example_duration(config: "ModelConfig", latent_steps: int | None = None) -> float:
    """Seconds of a clip with ``latent_steps`` video latent steps (``stride * (steps - 1) + 1``
    frames); by default the fewest steps that last at least ``EXAMPLE_SECONDS``."""
    vc = config.video_codec
    ts = vc.temporal_stride
    if latent_steps is None:
        latent_steps = math.ceil((round(EXAMPLE_SECONDS * vc.fps) - 1) / ts) + 1
    frames = ts * (latent_steps - 1) + 1
    return frames / vc.fps


def example_script(config: "ModelConfig", latent_steps: int | None = None, customized: int = 2, clip_id: str = "example") -> dict[str, Any]:
    """A two-shot scene with dialogue: R1 (person, speaks in both shots), R2 (person, in shot
    2), R3 (an object in shot 1). The first ``customized`` of R1, R2 cite reference media
    (R1: image + voice, R2: image), so they become customized roles."""
    T = example_duration(config, latent_steps)
    cut = round(T / 2, 1)
    refs: list[dict[str, Any]] = [
        {
            "id": "R1",
            "category": "person",
            "semantic_description": "a tall man",
            "appearance_anchor": {"detail_description": "red shirt and a grey cap", "hairstyle": "short"},
            "voice": "low warm voice",
        },
        {
            "id": "R2",
            "category": "person",
            "semantic_description": "a small girl",
            "appearance_anchor": {"detail_description": "blue dress"},
            "voice": "bright high voice",
        },
        {"id": "R3", "category": "object", "semantic_description": "a brass lamp", "appearance_anchor": {"detail_description": "shiny"}},
    ]
    if customized >= 1:
        refs[0].update(reference_image="refs/R1.png", reference_audio="refs/R1.wav")
    if customized >= 2:
        refs[1].update(reference_image="refs/R2.png")
    e1 = [round(0.2 * cut, 2), round(0.8 * cut, 2)]
    e2 = [round(cut + 0.2 * (T - cut), 2), round(cut + 0.7 * (T - cut), 2)]
    return {
        "clip_id": clip_id,
        "duration": T,
        "reference": refs,
        "shot": [
            {
                "id": "S1",
                "time_range": [0.0, cut],
                "visual_description": "a man stands in a kitchen beside a lamp",
                "camera": "static medium shot",
                "references_in_shot": ["R1", "R3"],
                "active_events": ["E1"],
            },
            {
                "id": "S2",
                "time_range": [cut, T],
                "visual_description": "the girl waves in the garden",
                "camera": "wide shot",
                "references_in_shot": ["R2"],
                "active_events": ["E2"],
            },
        ],
        "event": [
            {"id": "E1", "type": "dialogue", "time_range": e1, "speaker": "R1", "line": "hello there", "description": "calm"},
            {"id": "E2", "type": "dialogue", "time_range": e2, "speaker": "R2", "line": "good morning"},
        ],
        "global": {"scene_description": "a family house", "global_style": "flat cartoon", "global_audio": "quiet hum"},
    }


def example_references(config: "ModelConfig", script: dict[str, Any], seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic reference media for every customized role of ``script``:
    ``{role: {"image": (H, W, 3) uint8, "audio": (S,) float32}}`` with the entries the
    script cites. Images have the config's frame size; voices last half a second."""
    rng = np.random.default_rng(seed)
    vc, ac = config.video_codec, config.audio_codec
    out: dict[str, dict[str, np.ndarray]] = {}
    for ent in script["reference"]:
        media: dict[str, np.ndarray] = {}
        if ent.get("reference_image"):
            media["image"] = rng.integers(0, 256, (vc.height, vc.width, 3), dtype=np.uint8)
        if ent.get("reference_audio"):
            n = int(0.5 * ac.sample_rate)
            tone = np.sin(2 * np.pi * 220.0 * np.arange(n) / ac.sample_rate)
            media["audio"] = (0.3 * tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
        if media:
            out[ent["id"]] = media
    return out


def write_example(config: "ModelConfig", folder: str | Path, latent_steps: int | None = None, customized: int = 2, seed: int = 0) -> Path:
    """Write ``scene.json`` and the reference media it cites (png / wav, paths relative to
    the folder) into ``folder``; return the script path."""
    from mavin_ops.data.media import write_png, write_wav

    folder = Path(folder)
    script = example_script(config, latent_steps, customized)
    for role, media in example_references(config, script, seed).items():
        ent = next(e for e in script["reference"] if e["id"] == role)
        if "image" in media:
            (folder / ent["reference_image"]).parent.mkdir(parents=True, exist_ok=True)
            write_png(folder / ent["reference_image"], media["image"])
        if "audio" in media:
            (folder / ent["reference_audio"]).parent.mkdir(parents=True, exist_ok=True)
            write_wav(folder / ent["reference_audio"], media["audio"], config.audio_codec.sample_rate)
    path = folder / "scene.json"
    path.write_text(json.dumps(script, indent=1), encoding="utf-8")
    return path

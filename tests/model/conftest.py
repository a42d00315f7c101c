"""Fixtures for the model tests: hand-written MTSS scripts, random media, debug models with
random (non-zero) weights so every sub-layer is active."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from mavin_ops.mtss import HierarchicalCaption, compile_caption, parse_script
from mavin_ops.model import ClipInput, MavinModel, RoleReference, build_model, preset

torch.set_num_threads(2)

#: 17 frames at 8 fps = 2.125 s; 17000 audio samples at 8 kHz = 54 audio latents of 40 ms.
DURATION = 2.125
NUM_FRAMES = 17
NUM_SAMPLES = 17000


def two_shot_script() -> dict[str, Any]:
    """Two shots; R1 (customized: image + voice) is in S1 and speaks in S1 and, off screen,
    in S2; R2 (customized: image only, no voice) is in S2; R3 (not customized) is in S2 and
    speaks there; R4 (an object) is in S1.

    Video latent steps (debug: 16x16 frames, 4x4 tokens per step) have centre times
    0.0625, 0.375, 0.875 (S1) and 1.375, 1.875 (S2). Audio latent i has centre 0.02 + 0.04 i:
    S1 = 0..24, S2 = 25..53; R1 speaks at i = 5..19 and 40..49, R3 at i = 30..39.
    Caption segments: 1 g, 2 S1, 3 S2, 4 R1 visual, 5 R1 audio, 6 R2 visual, 7 R3 visual,
    8 R3 audio, 9 R4 visual."""
    return {
        "clip_id": "two-shots",
        "duration": DURATION,
        "reference": [
            {
                "id": "R1",
                "category": "person",
                "semantic_description": "a tall man",
                "appearance_anchor": {"detail_description": "red shirt and a grey cap"},
                "voice": "low warm voice",
                "reference_image": "refs/r1.png",
                "reference_audio": "refs/r1.wav",
            },
            {
                "id": "R2",
                "category": "person",
                "semantic_description": "a small girl",
                "appearance_anchor": {"detail_description": "blue dress"},
                "reference_image": "refs/r2.png",
            },
            {
                "id": "R3",
                "category": "person",
                "semantic_description": "an old woman",
                "appearance_anchor": {"detail_description": "green coat"},
                "voice": "thin high voice",
            },
            {"id": "R4", "category": "object", "semantic_description": "a brass lamp", "appearance_anchor": {"detail_description": "shiny"}},
        ],
        "shot": [
            {
                "id": "S1",
                "time_range": [0.0, 1.0],
                "visual_description": "a man stands in a kitchen",
                "camera": "static medium shot",
                "references_in_shot": ["R1", "R4"],
                "active_events": ["E1"],
            },
            {
                "id": "S2",
                "time_range": [1.0, DURATION],
                "visual_description": "a girl and a woman in a garden",
                "camera": "wide shot",
                "references_in_shot": ["R2", "R3"],
                "active_events": ["E2", "E3"],
            },
        ],
        "event": [
            {"id": "E1", "type": "dialogue", "time_range": [0.2, 0.8], "speaker": "R1", "line": "hello there"},
            {"id": "E2", "type": "dialogue", "time_range": [1.2, 1.6], "speaker": "R3", "line": "good morning"},
            {"id": "E3", "type": "dialogue", "time_range": [1.6, 2.0], "speaker": "R1", "line": "see you"},
        ],
        "global": {"scene_description": "a family house", "global_style": "flat cartoon", "global_audio": "quiet hum"},
    }


def caption_of(script: dict[str, Any]) -> HierarchicalCaption:
    return compile_caption(parse_script(copy.deepcopy(script)))


def random_media(seed: int, size: int = 16, frames: int = NUM_FRAMES, samples: int = NUM_SAMPLES):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)  # (F, H, W, 3)
    audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)  # (S,)
    return video, audio


def random_reference(seed: int, size: int = 16, image: bool = True, seconds: float | None = 0.5) -> RoleReference:
    rng = np.random.default_rng(1000 + seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if image else None
    wav = (0.1 * rng.standard_normal(int(seconds * 8000))).astype(np.float32) if seconds else None
    return RoleReference(image=img, audio=wav)


def two_shot_clip(script: dict[str, Any] | None = None, seed: int = 0, references: dict | None = None, size: int = 16) -> ClipInput:
    video, audio = random_media(seed, size)
    refs = references if references is not None else {"R1": random_reference(1, size), "R2": random_reference(2, size, seconds=None)}
    return ClipInput(caption_of(script or two_shot_script()), video=video, audio=audio, references=refs)


def randomize(model: MavinModel, seed: int = 0, std: float = 0.3) -> MavinModel:
    """Give every trainable parameter random values (adaLN-Zero would make a fresh model the
    identity with zero output, which hides every mask)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(model.denoiser.parameters()) + list(model.text_encoder.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def debug_model(seed: int = 0, std: float = 0.3, **changes: Any) -> MavinModel:
    """The debug preset with config changes (dotted names) and random weights."""
    torch.manual_seed(seed)
    return randomize(build_model(preset("debug").replace(**changes)), seed, std)


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (tests import nothing from
    conftest under pytest's importlib mode)."""

    DURATION = DURATION
    NUM_FRAMES = NUM_FRAMES
    NUM_SAMPLES = NUM_SAMPLES
    two_shot_script = staticmethod(two_shot_script)
    caption_of = staticmethod(caption_of)
    random_media = staticmethod(random_media)
    random_reference = staticmethod(random_reference)
    two_shot_clip = staticmethod(two_shot_clip)
    randomize = staticmethod(randomize)
    debug_model = staticmethod(debug_model)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def script() -> dict[str, Any]:
    return two_shot_script()


@pytest.fixture
def model() -> MavinModel:
    return debug_model()

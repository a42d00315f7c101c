"""MAVINSet-mini: a deterministic synthetic multi-shot audio-visual dataset with MTSS scripts.

A small procedural world in which every quantity the papers measure is real and computable:

- *Scenes* (MTSS ``scene`` entities) are backgrounds: a wall colour with a texture (stripes,
  checks, dots, ...) above a floor. The camera (wide / medium / close-up) sets the texture
  scale, the floor line and the sprite size.
- *Characters* are sprites whose look is their identity: persons (build, head shape, skin,
  hair, hat, shirt colour and pattern, trousers), an animal (species, fur colour, pattern)
  and an object (lamp, bell, ...). Persons speak: a voice is a fundamental frequency f0 and a
  harmonic profile (timbre); a line is a run of syllables, each a harmonic burst whose
  spectrum follows its vowel, filling the scripted dialogue interval. The speaker's mouth
  opens on alternate frames while it speaks.
- *Sound effects* are broadband noise bursts tied to a visible action: an object flashes
  white on exactly the frames the sfx event covers.
- *Global audio* is a quiet ambient bed (a low mains hum plus faint noise), about 30 dB
  below speech.

Clips follow the structure of MAVINSet ("MAVIN: Multi-Shot Audio-Visual Generation with
Customized Narrative Control", section 3: multi-shot units, dialogue boundaries at
decisecond precision, role references that are *perturbed* so identity is not copying)
scaled down: 32x32 pixels, 8 fps, 4k+1 frames (about 2-4 s), 1-3 (``debug``) or 1-4
(``tiny``) shots. Each clip carries its MTSS script ("Script-a-Video", section 3: reference,
shot, event and global streams with relational grounding) and a ``world`` dict with the
ground truth a metric needs (ids are the script's; colours are RGB 0-255; frames [f0, f1))::

    {"version": 1,
     "cuts": [8, 17],                       # first frame of every shot after the first
     "shots": [{"id": "S1", "frames": [0, 8], "camera": "wide|medium|close-up",
                "bg": "R4", "bg_rgb": [r, g, b],          # background entity, its mean colour
                "chars": [{"id": "R1", "rgb": [r, g, b],  # mean colour of its pixels
                           "box": [x0, y0, x1, y1]}]}],   # in the shot's first frame
     "entities": {"R1": {"uid": "src0003/p1", "kind": "person", "species": "person",
                         "rgb": [r, g, b], "pattern": "striped"},    # rgb: shirt/fur/body
                  "R4": {"uid": "src0003/b1", "kind": "scene", "rgb": [r, g, b],
                         "texture": "checks"}},                     # rgb: wall colour
     "voices": {"R1": {"f0": 182.4, "timbre": "bright"}},           # every person in the clip
     "refs": {"R1": {"image": "refs/<clip>_R1.png", "audio": "refs/<clip>_R1.wav"}},
     "sfx": [{"event": "E2", "entity": "R3", "frames": [10, 12], "kind": "crack"}],
     "ambient": {"hum_hz": 55.0, "rms": 0.003}}

``uid`` names the identity inside its source, so clips of one source can be matched.

Guarantees checked at generation time (a clip that misses one is redrawn):

- every cut is obvious: the mean absolute frame difference at a scripted cut is at least
  :data:`CUT_MIN_DIFF`, and inside a shot it never exceeds :data:`INTRA_MAX_DIFF`;
- speech lives only inside dialogue intervals (RMS about :data:`SPEECH_RMS`), sfx only on
  their flash frames, and outside both only the ambient bed (RMS about :data:`AMBIENT_RMS`);
- speech is harmonic (f0 in 90-330 Hz), sfx is noise: a pitch/harmonicity check separates
  them;
- the script passes :func:`mtss.grounding_issues`.

Same seed and preset give byte-identical files and manifest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import manifest as _manifest
from mavin_ops import mtss

from . import media
from mavin_ops.errors import MavinError

__all__ = [
    "AMBIENT_RMS",
    "CUT_MIN_DIFF",
    "ClipData",
    "GENERATOR_VERSION",
    "INTRA_MAX_DIFF",
    "NEUTRAL_BG",
    "PALETTE",
    "PITCHES",
    "PRESETS",
    "WorldPresetError",
    "SFX_RMS",
    "SPEECH_RMS",
    "SynthConfig",
    "frame_differences",
    "generate",
    "get_preset",
    "make_clip",
    "make_source",
    "render_reference_image",
    "script_cut_frames",
    "synth_sfx",
    "synth_speech",
]

GENERATOR_VERSION = 1
#: Mean absolute frame difference (uint8 levels, all pixels and channels): every scripted cut
#: is at least CUT_MIN_DIFF, every frame step inside a shot at most INTRA_MAX_DIFF.
CUT_MIN_DIFF = 12.0
INTRA_MAX_DIFF = 4.0
#: Audio levels (RMS of the float waveform): speech per utterance, sfx burst, ambient bed.
SPEECH_RMS = 0.12
SFX_RMS = 0.08
AMBIENT_RMS = 0.003

# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class SynthConfig:
    """A MAVINSet-mini preset. Frame counts are 4k+1 (the video VAE's temporal stride 4)."""

    name: str
    train_clips: int
    eval_clips: int
    clips_per_source: int = 4
    width: int = 32
    height: int = 32
    fps: int = 8
    sample_rate: int = 8000
    frame_choices: tuple[int, ...] = (17, 21, 25, 29, 33)
    min_shots: int = 1
    max_shots: int = 4
    min_shot_frames: int = 4
    max_customized_roles: int = 3
    p_customized: float = 0.5  # per character in a clip, before the max_customized_roles cap
    ref_audio_seconds: float = 1.5
    max_redraws: int = 64

    def __post_init__(self) -> None:
        for f in self.frame_choices:
            if f < 5 or (f - 1) % 4:
                raise ValueError(f"preset {self.name}: frame count {f} is not 4k+1; use 17, 21, 25, ...")
        if self.min_shots < 1 or self.max_shots < self.min_shots:
            raise ValueError(f"preset {self.name}: need 1 <= min_shots <= max_shots")
        if min(self.frame_choices) < self.max_shots * self.min_shot_frames:
            raise ValueError(f"preset {self.name}: {min(self.frame_choices)} frames cannot hold {self.max_shots} shots of {self.min_shot_frames}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"preset {self.name}: width and height must be even (H.264)")
        if self.train_clips < 1 or self.eval_clips < 1 or self.clips_per_source < 1:
            raise ValueError(f"preset {self.name}: needs at least one train clip, one eval clip and one clip per source")


class WorldPresetError(MavinError, ValueError):
    """An unknown dataset preset name or generation setting (a user's mistake)."""


PRESETS: dict[str, SynthConfig] = {
    # Unit tests: 6 clips from 3 sources, seconds to make.
    "debug": SynthConfig(
        name="debug", train_clips=4, eval_clips=2, clips_per_source=2, frame_choices=(17, 21, 25), max_shots=3
    ),
    # The embedded default: enough clips for a tiny model to learn cuts and speech timing.
    "tiny": SynthConfig(name="tiny", train_clips=256, eval_clips=32, clips_per_source=4, max_shots=4),
    # The foundation model's world (``mavin-ops pretrain``): the tiny world's look, four times
    # the clips, the two shortest lengths (a 17-frame clip costs 272 video tokens, a 33-frame one
    # 528). Generated from seeds disjoint from any release's benchmark.
    "base": SynthConfig(name="base", train_clips=1024, eval_clips=32, clips_per_source=4, max_shots=4, frame_choices=(17, 21)),
}


def get_preset(preset: str | SynthConfig) -> SynthConfig:
    """Look a preset up by name (or pass a :class:`SynthConfig` through)."""
    if isinstance(preset, SynthConfig):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise WorldPresetError(f"unknown MAVINSet-mini preset '{preset}'; choose one of {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------- palette

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 45),
    "orange": (235, 135, 30),
    "yellow": (235, 215, 55),
    "green": (55, 165, 65),
    "teal": (30, 150, 150),
    "blue": (45, 75, 210),
    "purple": (135, 60, 185),
    "pink": (235, 125, 175),
    "brown": (135, 85, 45),
    "white": (240, 240, 240),
    "black": (25, 25, 30),
    "grey": (125, 125, 130),
}
CHROMATIC = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
SKINS: dict[str, tuple[int, int, int]] = {"pale": (245, 215, 190), "tan": (215, 165, 120), "brown": (150, 100, 65), "dark": (95, 60, 40)}
HAIRS: dict[str, tuple[int, int, int]] = {"black": (20, 20, 20), "blond": (240, 205, 90), "red": (180, 60, 20), "grey": (175, 175, 175)}
TROUSERS: dict[str, tuple[int, int, int]] = {"dark blue": (30, 40, 100), "black": (20, 20, 25), "grey": (90, 90, 95), "brown": (90, 60, 35)}
FLOORS: dict[str, tuple[int, int, int]] = {"brown": (105, 70, 40), "grey": (80, 80, 85), "sand": (205, 185, 135), "dark green": (35, 75, 40)}
NEUTRAL_BG = (160, 160, 160)  # reference images: the sprite alone on a neutral grey
MOUTH = (60, 15, 20)

PLACES = ("room", "hall", "garden", "street", "studio", "yard")
TEXTURES = ("horizontal stripes", "vertical stripes", "checks", "dots", "diagonal stripes")
SHIRT_PATTERNS = ("plain", "striped", "dotted", "checked")
FUR_PATTERNS = ("plain", "spotted", "striped")
ANIMALS = ("cat", "dog", "rabbit")
OBJECTS = ("lamp", "bell", "box", "clock")
BUILDS = ("tall slim", "tall broad", "short slim", "short broad")
HAIRSTYLES = ("short", "long", "bald")
# (word, f0 range in Hz): speech f0 stays in 90-330 Hz so a pitch check finds it.
PITCHES = (("deep", 95.0, 115.0), ("low", 120.0, 145.0), ("medium", 155.0, 185.0), ("high", 200.0, 240.0), ("very high", 260.0, 300.0))
TIMBRES = ("warm", "bright", "hollow", "reedy")
# Vowel formants (F1, F2) in Hz: the line's vowels shape each syllable's spectrum.
FORMANTS = {"a": (750.0, 1200.0), "e": (500.0, 1900.0), "i": (300.0, 2300.0), "o": (500.0, 900.0), "u": (320.0, 800.0)}
CONSONANTS = "bdgklmnprstvz"
SFX_KINDS = {"crack": "a sharp crack", "hiss": "a short hiss", "clatter": "a clatter"}

# Camera framings: person height in pixels, floor line, wall-texture period, most characters.
CAMERAS: dict[str, dict[str, Any]] = {
    "wide": {"person_px": 12.0, "floor": 22, "feet": 28.5, "period": 4, "max_chars": 2, "drift": True},
    "medium": {"person_px": 17.0, "floor": 26, "feet": 31.5, "period": 6, "max_chars": 2, "drift": False},
    "close-up": {"person_px": 30.0, "floor": 32, "feet": None, "period": 8, "max_chars": 1, "drift": False},
}
SIZE = {"person": 1.0, "animal": 0.55, "object": 0.5}


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _contrast(rgb: tuple[int, int, int]) -> tuple[tuple[int, int, int], str]:
    """A pattern colour that stands out on ``rgb``: white on dark colours, black on light."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return ((240, 240, 240), "white") if lum < 140 else ((25, 25, 30), "black")


# --------------------------------------------------------------------------- world


@dataclass(frozen=True)
class Voice:
    f0: float
    pitch: str
    timbre: str

    def describe(self) -> str:
        return f"{self.pitch} {self.timbre} voice"

    def harmonic_weights(self, n: int) -> np.ndarray:
        """Timbre as relative amplitudes of harmonics 1..n."""
        k = np.arange(1, n + 1, dtype=np.float64)
        if self.timbre == "warm":
            w = k**-1.6
        elif self.timbre == "bright":
            w = k**-0.6
        elif self.timbre == "hollow":
            w = np.where(k % 2 == 1, k**-0.9, 0.08 * k**-0.9)
        else:  # reedy: harmonics 3-6 boosted
            w = k**-1.0 * np.where((k >= 3) & (k <= 6), 2.2, 1.0)
        return w


@dataclass(frozen=True)
class Character:
    """A sprite identity. ``kind`` is person | animal | object (the MTSS category)."""

    uid: str
    kind: str
    species: str  # "person", an animal or an object name
    colour: str  # shirt / fur / body colour name
    pattern: str = "plain"
    build: str = "tall slim"
    head: str = "round"
    skin: str = "tan"
    hair: str = "black"
    hairstyle: str = "short"
    hat: str | None = None
    trousers: str = "dark blue"
    voice: Voice | None = None

    @property
    def rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.colour]

    @property
    def pattern_rgb(self) -> tuple[int, int, int]:
        return _contrast(self.rgb)[0]

    def short(self) -> str:
        if self.kind == "person":
            pat = "" if self.pattern == "plain" else f"{self.pattern} "
            return f"the person in the {self.colour} {pat}shirt"
        if self.kind == "animal":
            pat = "" if self.pattern == "plain" else f"{self.pattern} "
            return f"the {self.colour} {pat}{self.species}"
        return f"the {self.colour} {self.species}"

    def entity(self, rid: str, ref_image: str | None, ref_audio: str | None) -> mtss.Entity:
        pat_name = _contrast(self.rgb)[1]
        if self.kind == "person":
            shirt = f"{self.colour} shirt" if self.pattern == "plain" else f"{self.colour} {self.pattern} shirt ({pat_name} {_PATTERN_NOUN[self.pattern]})"
            hair = "bald" if self.hairstyle == "bald" else f"{self.hairstyle} {self.hair} hair"
            hat = _article(f"{self.hat} hat") if self.hat else "none"
            semantic = (
                f"a {self.build} person with {_article(self.head)} {self.skin} head and "
                + ("no hair" if self.hairstyle == "bald" else hair)
                + (f", wearing {hat}" if self.hat else "")
                + f", in {_article(shirt)} and {self.trousers} trousers"
            )
            anchor = mtss.AppearanceAnchor(
                detail_description=f"{self.build} build, {self.head} {self.skin} head, {shirt}",
                clothing=f"{shirt}, {self.trousers} trousers",
                accessories=hat,
                hairstyle=hair,
            )
        elif self.kind == "animal":
            fur = self.colour if self.pattern == "plain" else f"{self.colour} fur with {pat_name} {_PATTERN_NOUN[self.pattern]}"
            semantic = f"a small {self.colour} {self.species}" + ("" if self.pattern == "plain" else f" with {pat_name} {_PATTERN_NOUN[self.pattern]}")
            anchor = mtss.AppearanceAnchor(detail_description=f"{self.species}, {fur}, {_EARS[self.species]}")
        else:
            semantic = _article(f"{self.colour} {self.species} that flashes white when it sounds")
            anchor = mtss.AppearanceAnchor(detail_description=f"{self.colour} {self.species}, {_OBJECT_SHAPE[self.species]}")
        return mtss.Entity(
            id=rid,
            category=self.kind,
            semantic_description=semantic,
            appearance_anchor=anchor,
            voice=self.voice.describe() if self.voice else None,
            reference_image=ref_image,
            reference_audio=ref_audio,
        )


_PATTERN_NOUN = {"striped": "stripes", "dotted": "dots", "checked": "checks", "spotted": "spots", "plain": ""}
_EARS = {"cat": "pointed ears, tail up", "dog": "floppy ears, short tail", "rabbit": "long upright ears, round tail"}
_OBJECT_SHAPE = {"lamp": "a wide shade on a thin pole", "bell": "a dome with a wide lip", "box": "a square crate", "clock": "a round face with dark hands"}


@dataclass(frozen=True)
class Background:
    uid: str
    place: str
    colour: str
    texture: str
    tone: str  # light | dark: the texture colour relative to the wall
    floor: str

    @property
    def wall_rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.colour]

    @property
    def texture_rgb(self) -> tuple[int, int, int]:
        return _mix(self.wall_rgb, (255, 255, 255) if self.tone == "light" else (0, 0, 0), 0.5)

    @property
    def floor_rgb(self) -> tuple[int, int, int]:
        return FLOORS[self.floor]

    def short(self) -> str:
        return f"the {self.colour} {self.place} with {self.texture}"

    def entity(self, rid: str) -> mtss.Entity:
        return mtss.Entity(
            id=rid,
            category="scene",
            semantic_description=_article(f"{self.colour} {self.place} with {self.tone} {self.colour} {self.texture} on the walls"),
            appearance_anchor=mtss.AppearanceAnchor(
                detail_description=f"{self.colour} walls with {self.tone} {self.colour} {self.texture} above a {self.floor} floor"
            ),
        )


@dataclass(frozen=True)
class Source:
    """One 'source video': a cast and a set of places that several clips are cut from."""

    uid: str
    persons: tuple[Character, ...]
    extras: tuple[Character, ...]  # an animal and/or an object
    backgrounds: tuple[Background, ...]
    hum_hz: float

    @property
    def cast(self) -> tuple[Character, ...]:
        return self.persons + self.extras


def _pick(rng: np.random.Generator, seq: tuple | list) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _make_voice(rng: np.random.Generator, used: set[str]) -> Voice:
    for _ in range(32):
        pitch, lo, hi = _pick(rng, PITCHES)
        timbre = _pick(rng, TIMBRES)
        if pitch not in used:
            break
    used.add(pitch)
    return Voice(f0=round(float(rng.uniform(lo, hi)), 1), pitch=pitch, timbre=timbre)


def make_source(rng: np.random.Generator, uid: str) -> Source:
    """Draw a source: 2-3 persons with distinct voices, maybe an animal and an object, 2-3
    places. Backgrounds and characters use disjoint colours so sprites stand out."""
    colours = list(CHROMATIC)
    rng.shuffle(colours)
    n_bg = int(rng.integers(2, 4))
    bg_colours, char_colours = colours[:n_bg], colours[n_bg:] + ["white", "black", "grey", "brown"]
    places = list(PLACES)
    rng.shuffle(places)
    textures = list(TEXTURES)
    rng.shuffle(textures)
    backgrounds = tuple(
        Background(
            uid=f"{uid}/b{i + 1}",
            place=places[i],
            colour=bg_colours[i],
            texture=textures[i],
            tone=_pick(rng, ("light", "dark")),
            floor=_pick(rng, tuple(FLOORS)),
        )
        for i in range(n_bg)
    )
    rng.shuffle(char_colours)
    used_pitch: set[str] = set()
    persons = []
    n_persons = int(rng.integers(2, 4))
    for i in range(n_persons):
        persons.append(
            Character(
                uid=f"{uid}/p{i + 1}",
                kind="person",
                species="person",
                colour=char_colours[i],
                pattern=_pick(rng, SHIRT_PATTERNS),
                build=_pick(rng, BUILDS),
                head=_pick(rng, ("round", "square")),
                skin=_pick(rng, tuple(SKINS)),
                hair=_pick(rng, tuple(HAIRS)),
                hairstyle=_pick(rng, HAIRSTYLES),
                hat=_pick(rng, (None, None, "yellow", "red", "black")),
                trousers=_pick(rng, tuple(TROUSERS)),
                voice=_make_voice(rng, used_pitch),
            )
        )
    extras = []
    k = n_persons
    if rng.random() < 0.6:
        extras.append(Character(uid=f"{uid}/a1", kind="animal", species=_pick(rng, ANIMALS), colour=char_colours[k], pattern=_pick(rng, FUR_PATTERNS)))
        k += 1
    if rng.random() < 0.7:
        extras.append(Character(uid=f"{uid}/o1", kind="object", species=_pick(rng, OBJECTS), colour=char_colours[k]))
    return Source(uid, tuple(persons), tuple(extras), backgrounds, hum_hz=round(float(rng.uniform(45.0, 65.0)), 1))


# --------------------------------------------------------------------------- rendering


class _Grid:
    """Pixel-centre coordinates of an H x W canvas."""

    def __init__(self, height: int, width: int):
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        self.y, self.x = yy + 0.5, xx + 0.5
        self.h, self.w = height, width


def _render_background(g: _Grid, bg: Background, camera: str, phase: tuple[int, int]) -> np.ndarray:
    """The wall texture at the camera's scale and phase, the floor below the camera's floor
    line. Returns (H, W, 3) uint8."""
    cam = CAMERAS[camera]
    p = cam["period"]
    half = p / 2.0
    x, y = g.x + phase[0], g.y + phase[1]
    if bg.texture == "horizontal stripes":
        m = np.floor(y / half) % 2 == 1
    elif bg.texture == "vertical stripes":
        m = np.floor(x / half) % 2 == 1
    elif bg.texture == "checks":
        m = (np.floor(x / half) + np.floor(y / half)) % 2 == 1
    elif bg.texture == "dots":
        m = ((x % p) - half) ** 2 + ((y % p) - half) ** 2 < (0.3 * p) ** 2
    else:  # diagonal stripes
        m = np.floor((x + y) / half) % 2 == 1
    img = np.empty((g.h, g.w, 3), np.uint8)
    img[:] = bg.wall_rgb
    img[m] = bg.texture_rgb
    img[g.y > cam["floor"]] = bg.floor_rgb
    return img


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if pattern == "striped":
        return np.floor(v / 0.08) % 2 == 1
    if pattern in ("dotted", "spotted"):
        return ((u % 0.16) - 0.08) ** 2 + ((v % 0.16) - 0.08) ** 2 < 0.045**2
    if pattern == "checked":
        return (np.floor(u / 0.1) + np.floor(v / 0.1)) % 2 == 1
    return np.zeros_like(u, dtype=bool)


def _draw_person(img: np.ndarray, g: _Grid, c: Character, cx: float, top: float, h: float, pose: str, mouth: bool) -> np.ndarray:
    """Draw a person whose full height is ``h`` pixels, head top at ``top``. Returns its mask."""
    u, v = (g.x - cx) / h, (g.y - top) / h
    w = 0.34 if c.build.endswith("slim") else 0.46
    if c.head == "round":
        head = u**2 + (v - 0.14) ** 2 < 0.13**2
    else:
        head = (np.abs(u) < 0.12) & (np.abs(v - 0.14) < 0.12)
    torso = (np.abs(u) < w / 2) & (v >= 0.29) & (v < 0.66)
    arm_u = (np.abs(u) >= w / 2) & (np.abs(u) < w / 2 + 0.08)
    if pose == "arms_up":
        arms = arm_u & (v >= 0.0) & (v < 0.34)
    else:
        arms = arm_u & (v >= 0.30) & (v < 0.60)
    legs = (np.abs(u) >= 0.03) & (np.abs(u) < w / 2 - 0.02) & (v >= 0.66) & (v < 1.0)
    neck = (np.abs(u) < 0.05) & (v >= 0.25) & (v < 0.29)
    img[legs] = TROUSERS[c.trousers]
    img[torso | arms] = c.rgb
    img[torso & _pattern_mask(c.pattern, u, v)] = c.pattern_rgb
    img[head | neck] = SKINS[c.skin]
    hair = np.zeros_like(head)
    if c.hairstyle == "short":
        hair = head & (v < 0.075)
    elif c.hairstyle == "long":
        hair = (head & (v < 0.075)) | ((np.abs(u) >= 0.09) & (np.abs(u) < 0.16) & (v >= 0.03) & (v < 0.34))
    img[hair] = HAIRS[c.hair]
    hat = np.zeros_like(head)
    if c.hat:
        hat = ((np.abs(u) < 0.17) & (v >= -0.03) & (v < 0.03)) | ((np.abs(u) < 0.1) & (v >= -0.1) & (v < -0.03))
        img[hat] = PALETTE[c.hat]
    if mouth:
        m = (np.abs(u) < 0.05) & (v >= 0.19) & (v < 0.25)
        # At small scales the mouth may fall between pixel centres: force its centre pixel.
        my, mx = int(math.floor(top + 0.22 * h)), int(math.floor(cx))
        if 0 <= my < g.h and 0 <= mx < g.w:
            m[my, mx] = True
        img[m & head] = MOUTH
    return head | torso | arms | legs | neck | hair | hat


def _draw_animal(img: np.ndarray, g: _Grid, c: Character, cx: float, top: float, h: float, pose: str, facing: int) -> np.ndarray:
    u, v = (g.x - cx) / h * facing, (g.y - top) / h  # facing +1: head on the right
    if pose == "sit":
        body = (u / 0.36) ** 2 + ((v - 0.6) / 0.38) ** 2 < 1
        hx, hy = 0.28, 0.22
    else:
        body = (u / 0.55) ** 2 + ((v - 0.55) / 0.27) ** 2 < 1
        hx, hy = 0.55, 0.3
    head = (u - hx) ** 2 + (v - hy) ** 2 < 0.2**2
    legs = (np.abs(np.abs(u) - 0.33) < 0.06) & (v >= 0.7) & (v < 1.0) if pose != "sit" else (np.abs(u) < 0.3) & (v >= 0.92) & (v < 1.0)
    if c.species == "cat":
        ears = (np.abs(np.abs(u - hx) - 0.1) < 0.05) & (v >= hy - 0.3) & (v < hy - 0.12)
        tail = (np.abs(u + 0.6) < 0.05) & (v >= 0.1) & (v < 0.5)
    elif c.species == "rabbit":
        ears = (np.abs(np.abs(u - hx) - 0.07) < 0.04) & (v >= hy - 0.55) & (v < hy - 0.12)
        tail = (u + 0.55) ** 2 + (v - 0.5) ** 2 < 0.1**2
    else:  # dog
        ears = (np.abs(np.abs(u - hx) - 0.19) < 0.05) & (v >= hy - 0.1) & (v < hy + 0.18)
        tail = (np.abs(u + 0.6) < 0.1) & (np.abs(v - 0.4) < 0.04)
    fur = body | head | legs | ears | tail
    img[fur] = c.rgb
    img[body & _pattern_mask(c.pattern, u, v)] = c.pattern_rgb
    ey, ex = int(math.floor(top + hy * h)), int(math.floor(cx + facing * (hx + 0.08) * h))
    if 0 <= ey < g.h and 0 <= ex < g.w and head[ey, ex]:
        img[ey, ex] = MOUTH
    return fur


def _draw_object(img: np.ndarray, g: _Grid, c: Character, cx: float, top: float, h: float, flash: bool) -> np.ndarray:
    u, v = (g.x - cx) / h, (g.y - top) / h
    if c.species == "lamp":
        shape = ((v >= 0) & (v < 0.4) & (np.abs(u) < 0.2 + 0.6 * v)) | ((np.abs(u) < 0.06) & (v >= 0.4) & (v < 0.9)) | ((np.abs(u) < 0.3) & (v >= 0.9) & (v < 1.0))
        dark = np.zeros_like(shape)
    elif c.species == "bell":
        shape = ((v >= 0.1) & (v < 0.85) & (np.abs(u) < 0.15 + 0.35 * v)) | ((np.abs(u) < 0.5) & (v >= 0.85) & (v < 1.0)) | (u**2 + (v - 0.05) ** 2 < 0.08**2)
        dark = np.zeros_like(shape)
    elif c.species == "box":
        shape = (np.abs(u) < 0.45) & (v >= 0.1) & (v < 1.0)
        dark = shape & ((np.abs(u) > 0.36) | (v < 0.19) | (v >= 0.91))
    else:  # clock
        shape = u**2 + (v - 0.55) ** 2 < 0.45**2
        dark = shape & (((np.abs(u) < 0.05) & (v >= 0.25) & (v < 0.58)) | ((np.abs(v - 0.55) < 0.05) & (u >= 0) & (u < 0.3)))
    body = _mix(c.rgb, (255, 255, 255), 0.55) if flash else c.rgb
    img[shape] = body
    img[dark] = _mix(c.rgb, (0, 0, 0), 0.6)
    return shape


@dataclass
class _Placed:
    """A character in a shot: where it stands and how it drifts."""

    char: Character
    rid: str
    cx: float
    top: float
    h: float
    drift: int  # pixels per 3 frames, -1/0/+1
    facing: int
    side: str


def _draw_placed(img: np.ndarray, g: _Grid, p: _Placed, dx: int, mouth: bool, flash: bool) -> np.ndarray:
    cx = p.cx + dx
    if p.char.kind == "person":
        return _draw_person(img, g, p.char, cx, p.top, p.h, "stand", mouth)
    if p.char.kind == "animal":
        return _draw_animal(img, g, p.char, cx, p.top, p.h, "walk", p.facing)
    return _draw_object(img, g, p.char, cx, p.top, p.h, flash)


def render_reference_image(c: Character, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The role's reference image (MAVIN section 3, role reference annotation): the sprite in
    a pose and scale the clips never use, on a neutral grey background, so matching it means
    keeping identity rather than copying pixels."""
    g = _Grid(height, width)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = NEUTRAL_BG
    jx, jy = int(rng.integers(-2, 3)), int(rng.integers(-1, 2))
    if c.kind == "person":
        h = 0.7 * height * (1.0 if c.build.startswith("tall") else 0.85)
        _draw_person(img, g, c, width / 2 + jx, height - 2.5 - h + jy, h, "arms_up", False)
    elif c.kind == "animal":
        h = 0.5 * height
        _draw_animal(img, g, c, width / 2 + jx, height * 0.35 + jy, h, "sit", -1 if rng.random() < 0.5 else 1)
    else:
        h = 0.55 * height
        _draw_object(img, g, c, width / 2 + jx, height * 0.25 + jy, h, False)
    return img


# --------------------------------------------------------------------------- audio


def _ambient(rng: np.random.Generator, n: int, sr: int, hum_hz: float) -> np.ndarray:
    """Global audio: a quiet low hum with its second harmonic plus faint smoothed noise."""
    t = np.arange(n) / sr
    phase = rng.uniform(0, 2 * np.pi)
    hum = np.sin(2 * np.pi * hum_hz * t + phase) + 0.5 * np.sin(4 * np.pi * hum_hz * t + 2 * phase)
    noise = np.convolve(rng.normal(0.0, 1.0, n + 3), np.ones(4) / 4.0, mode="valid")[:n]
    # hum scaled to RMS 0.8, noise (a 4-tap mean of unit noise has std 0.5) to RMS 0.6:
    # together RMS 1.0, times AMBIENT_RMS.
    bed = 0.8 * hum / np.sqrt(0.625) + 0.6 * noise / 0.5
    return AMBIENT_RMS * bed


def _syllables(rng: np.random.Generator, n: int) -> list[str]:
    return [_pick(rng, CONSONANTS) + _pick(rng, tuple(FORMANTS)) for _ in range(n)]


def _line_text(syllables: list[str], rng: np.random.Generator) -> str:
    words, i = [], 0
    while i < len(syllables):
        k = int(rng.integers(1, 4))
        words.append("".join(syllables[i : i + k]))
        i += k
    return " ".join(words)


def synth_speech(rng: np.random.Generator, voice: Voice, syllables: list[str], n: int, sr: int, contour: str) -> np.ndarray:
    """A voiced utterance of ``n`` samples: one harmonic burst per syllable filling the whole
    span, f0 following the voice and the contour (rising / falling / flat), each syllable's
    harmonics weighted by the timbre and its vowel's formants. The envelope dips between
    syllables but never to silence, and fades in/out over 5 ms, so energy-based speech
    activity covers exactly the span. RMS is :data:`SPEECH_RMS`."""
    m = len(syllables)
    weights = rng.uniform(0.7, 1.3, m)
    bounds = np.round(np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    t = np.arange(n) / n
    slope = {"rising": 0.14, "falling": -0.14, "flat": 0.0}[contour]
    accents = rng.uniform(-0.04, 0.04, m)
    f0 = np.empty(n)
    env = np.empty(n)
    for s in range(m):
        a, b = bounds[s], bounds[s + 1]
        tau = (np.arange(b - a) + 0.5) / max(b - a, 1)
        f0[a:b] = voice.f0 * (1.0 + slope * (t[a:b] - 0.5) + accents[s] * np.sin(np.pi * tau))
        env[a:b] = 0.45 + 0.55 * np.sin(np.pi * tau)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    k_max = max(1, int(3700.0 / (voice.f0 * 1.2)))
    base = voice.harmonic_weights(k_max)
    out = np.zeros(n)
    for s, syl in enumerate(syllables):
        a, b = bounds[s], bounds[s + 1]
        f1, f2 = FORMANTS[syl[-1]]
        freqs = np.arange(1, k_max + 1) * voice.f0
        amp = base * (1.0 + 3.0 * np.exp(-(((freqs - f1) / 160.0) ** 2)) + 2.0 * np.exp(-(((freqs - f2) / 260.0) ** 2)))
        seg = np.zeros(b - a)
        for k in range(k_max):
            seg += amp[k] * np.sin((k + 1) * phase[a:b])
        seg /= np.sqrt(np.mean(seg**2)) + 1e-12
        out[a:b] = seg * env[a:b]
    fade = min(int(0.005 * sr), n // 4)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade + 2)[1:-1]
        out[:fade] *= ramp
        out[n - fade :] *= ramp[::-1]
    return SPEECH_RMS * out / (np.sqrt(np.mean(out**2)) + 1e-12)


def synth_sfx(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """A broadband noise burst of ``n`` samples (no pitch), RMS about :data:`SFX_RMS`."""
    noise = rng.normal(0.0, 1.0, n + 1)
    if kind == "hiss":
        x = noise[1:] - noise[:-1]  # high-passed: a flat hiss
        env = np.ones(n)
    elif kind == "clatter":
        x = noise[1:]
        gates = rng.random(n // 80 + 1) < 0.7
        env = np.repeat(np.where(gates, 1.0, 0.35), 80)[:n]
        env[: min(80, n)] = 1.0
    else:  # crack: sharp attack, decay
        x = noise[1:]
        env = np.exp(-np.arange(n) / (0.45 * n))
    fade = min(int(0.003 * sr), n // 4)
    if fade > 0:
        env[:fade] *= np.linspace(0.0, 1.0, fade)
        env[n - fade :] *= np.linspace(1.0, 0.0, fade)
    y = x * env
    return SFX_RMS * y / (np.sqrt(np.mean(y**2)) + 1e-12)


# --------------------------------------------------------------------------- clips


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each frame and the previous one, over all pixels and
    channels: ``d[k] = mean |f[k] - f[k-1]|`` for k >= 1, ``d[0] = 0``. (F,) float64."""
    f = frames.astype(np.int16)
    d = np.zeros(frames.shape[0])
    d[1:] = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))
    return d


def script_cut_frames(script: mtss.Script, fps: int) -> list[int]:
    """The frame index where each shot after the first starts (the scripted cuts)."""
    return [int(round(s.time_range.start * fps)) for s in script.shot[1:]]


@dataclass
class ClipData:
    """A generated clip in memory, before it is written."""

    clip_id: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    waveform: np.ndarray  # (F / fps * sr,) float32
    script: mtss.Script
    world: dict[str, Any]
    ref_images: dict[str, np.ndarray] = field(default_factory=dict)  # rid -> (H, W, 3)
    ref_audio: dict[str, np.ndarray] = field(default_factory=dict)  # rid -> (n,)


def _shot_lengths(rng: np.random.Generator, total: int, n: int, min_len: int) -> list[int]:
    extra = total - n * min_len
    parts = rng.multinomial(extra, rng.dirichlet(np.full(n, 2.0)))
    return [min_len + int(p) for p in parts]


def _place(rng: np.random.Generator, chars: list[Character], camera: str, width: int, height: int) -> list[tuple[Character, float, float, float, int, int, str]]:
    """Positions for the characters of a shot: (char, cx, top, h, drift, facing, side)."""
    cam = CAMERAS[camera]
    out = []
    if len(chars) == 1:
        slots = [("center", float(rng.uniform(0.36, 0.64)) * width)]
    else:
        slots = [("left", float(rng.uniform(0.2, 0.34)) * width), ("right", float(rng.uniform(0.66, 0.8)) * width)]
    # Small motion only: in a wide shot at most one person drifts, 1 px every 3 frames.
    mover = int(rng.integers(len(chars))) if cam["drift"] and chars and rng.random() < 0.7 else -1
    for n, (c, (side, cx)) in enumerate(zip(chars, slots)):
        h = cam["person_px"] * SIZE[c.kind] * height / 32.0
        if c.kind == "person" and c.build.startswith("short"):
            h *= 0.85
        if cam["feet"] is None:  # close-up: head near the top, body cut by the frame
            top = 4.0 + (0.0 if c.kind != "person" or c.build.startswith("tall") else 2.0)
            top *= height / 32.0
            if c.kind != "person":
                top = height - h - 1.0
        else:
            top = cam["feet"] * height / 32.0 - h
        drift = (1 if rng.random() < 0.5 else -1) if n == mover and c.kind == "person" and c.pattern != "checked" else 0
        facing = 1 if side == "left" else (-1 if side == "right" else (1 if rng.random() < 0.5 else -1))
        out.append((c, round(cx, 2), round(top, 2), round(h, 2), drift, facing, side))
    return out


def _deciseconds(frame: int, fps: int, up: bool) -> int:
    """Frame boundary -> deciseconds, rounded up (``up``) or down."""
    num = frame * 10
    return -(-num // fps) if up else num // fps


def _free_spans(lo: int, hi: int, blocked: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans, cur = [], lo
    for a, b in sorted(blocked):
        if a > cur:
            spans.append((cur, min(a, hi)))
        cur = max(cur, b)
    if cur < hi:
        spans.append((cur, hi))
    return [(a, b) for a, b in spans if b > a]


@dataclass
class _ShotPlan:
    bg: Background
    chars: list[Character]
    camera: str
    placed: list[_Placed]
    phase: tuple[int, int]
    f0: int  # first frame
    f1: int  # one past the last frame
    events: list["_EventPlan"] = field(default_factory=list)


@dataclass
class _EventPlan:
    type: str  # dialogue | sfx
    who: _Placed
    shot: _ShotPlan
    ds: tuple[int, int] = (0, 0)  # dialogue: [start, end) in deciseconds
    frames: tuple[int, int] = (0, 0)  # sfx: [start, end) in frames (the flash)
    kind: str = ""  # sfx kind
    id: str = ""

    def start(self, fps: int) -> float:
        return self.frames[0] / fps if self.type == "sfx" else self.ds[0] / 10.0


def make_clip(rng: np.random.Generator, cfg: SynthConfig, source: Source, clip_id: str) -> ClipData:
    """Draw one clip from ``source``. Redraws (from the same generator, so still
    deterministic) until the cut and intra-shot frame-difference guarantees hold."""
    for _ in range(cfg.max_redraws):
        clip = _draw_clip(rng, cfg, source, clip_id)
        if clip is not None:
            return clip
    raise RuntimeError(f"clip {clip_id}: no draw met the cut-visibility guarantee in {cfg.max_redraws} tries; check the preset's camera and size settings")


def _draw_clip(rng: np.random.Generator, cfg: SynthConfig, source: Source, clip_id: str) -> ClipData | None:
    """One attempt at a clip; None when its cuts would not be obvious from the frames."""
    F = int(_pick(rng, cfg.frame_choices))
    n_max = min(cfg.max_shots, F // cfg.min_shot_frames)
    n_shots = int(rng.integers(cfg.min_shots, n_max + 1))
    starts = np.concatenate([[0], np.cumsum(_shot_lengths(rng, F, n_shots, cfg.min_shot_frames))]).astype(int)
    plans = _plan_shots(rng, cfg, source, [int(s) for s in starts])  # 1. shots
    order, rid = _assign_ids(plans)  # 2. entity ids
    events = _plan_events(rng, plans, cfg.fps)  # 3. events
    frames, shot_world = _render(plans, events, cfg, F, rid)  # 4. frames
    cuts = [int(s) for s in starts[1:-1]]
    if not _cuts_obvious(frames, cuts):
        return None
    wav, script_events, sfx_world = _render_audio(rng, events, cfg, F, source.hum_hz)  # 5. audio
    ref_images, ref_audio, refs_world = _customize(rng, cfg, order, rid, clip_id)  # 6. references
    script = _build_script(clip_id, cfg, source, plans, order, rid, script_events, refs_world, F)  # 7. script
    people = [o for o in order if isinstance(o, Character)]
    world = {
        "version": GENERATOR_VERSION,
        "cuts": cuts,
        "shots": shot_world,
        "entities": {rid[o.uid]: _entity_world(o) for o in order},
        "voices": {rid[c.uid]: {"f0": c.voice.f0, "timbre": c.voice.timbre} for c in people if c.voice is not None},
        "refs": refs_world,
        "sfx": sfx_world,
        "ambient": {"hum_hz": source.hum_hz, "rms": AMBIENT_RMS},
    }
    return ClipData(clip_id, frames, wav, script, world, ref_images, ref_audio)


def _plan_shots(rng: np.random.Generator, cfg: SynthConfig, source: Source, starts: list[int]) -> list[_ShotPlan]:
    """Background, characters, camera and placement per shot. Consecutive shots may share a
    background or a character (the CISC/BISC pairs of MAVIN eq. S8) but never the same
    background *and* camera, so every cut changes the framing."""
    n_shots = len(starts) - 1
    plans: list[_ShotPlan] = []
    for i in range(n_shots):
        prev = plans[-1] if plans else None
        if prev is not None and rng.random() < 0.4:
            bg = prev.bg
        else:
            bg = _pick(rng, [b for b in source.backgrounds if prev is None or b is not prev.bg])
        # An empty (establishing) shot only in multi-shot clips.
        n_chars = int(rng.choice(3, p=[0.1, 0.45, 0.45] if n_shots > 1 else [0.0, 0.5, 0.5]))
        chars: list[Character] = []
        if prev is not None and prev.chars and n_chars > 0 and rng.random() < 0.6:
            chars.append(_pick(rng, prev.chars))
        pool = [c for c in source.cast if c not in chars]
        rng.shuffle(pool)
        chars += pool[: max(0, n_chars - len(chars))]
        cams = [c for c, spec in CAMERAS.items() if spec["max_chars"] >= len(chars)]
        if len(chars) == 1 and chars[0].kind == "object":
            cams = [c for c in cams if c != "close-up"]
        if not chars:
            cams = ["wide", "medium"]
        if prev is not None and bg is prev.bg:
            cams = [c for c in cams if c != prev.camera]
        camera = _pick(rng, cams)
        placed = [_Placed(c, "", cx, top, h, drift, facing, side) for c, cx, top, h, drift, facing, side in _place(rng, chars, camera, cfg.width, cfg.height)]
        period = CAMERAS[camera]["period"]
        phase = (int(rng.integers(period)), int(rng.integers(period)))
        plans.append(_ShotPlan(bg, chars, camera, placed, phase, starts[i], starts[i + 1]))
    return plans


def _assign_ids(plans: list[_ShotPlan]) -> tuple[list[Character | Background], dict[str, str]]:
    """MTSS reference ids R1..: characters in order of first appearance, then backgrounds."""
    rid: dict[str, str] = {}
    order: list[Character | Background] = []
    for thing in [c for p in plans for c in p.chars] + [p.bg for p in plans]:
        if thing.uid not in rid:
            rid[thing.uid] = f"R{len(rid) + 1}"
            order.append(thing)
    for p in plans:
        for pl in p.placed:
            pl.rid = rid[pl.char.uid]
    return order, rid


def _plan_events(rng: np.random.Generator, plans: list[_ShotPlan], fps: int) -> list[_EventPlan]:
    """sfx first (frame-aligned to the object's flash), then dialogue at decisecond times
    inside a shot where the speaker is visible, 0.1 s from the cuts and from any sfx, and
    0.2 s between two lines. Returns the events in time order."""
    events: list[_EventPlan] = []
    for p in plans:
        blocked: list[tuple[int, int]] = []
        objects = [pl for pl in p.placed if pl.char.kind == "object"]
        if objects and p.f1 - p.f0 >= 4 and rng.random() < 0.7:
            dur = int(rng.integers(1, 3))
            a = int(rng.integers(p.f0 + 1, p.f1 - dur))  # the flash starts and ends inside the shot
            events.append(_EventPlan("sfx", objects[0], p, frames=(a, a + dur), kind=_pick(rng, tuple(SFX_KINDS))))
            blocked.append((_deciseconds(a, fps, False) - 1, _deciseconds(a + dur, fps, True) + 1))
        speakers = [pl for pl in p.placed if pl.char.voice is not None]
        if not speakers or rng.random() >= 0.8:
            continue
        lo, hi = _deciseconds(p.f0, fps, True) + 1, _deciseconds(p.f1, fps, False) - 1
        spans = _free_spans(lo, hi, blocked)
        rng.shuffle(speakers)
        n_lines = 2 if len(speakers) == 2 and rng.random() < 0.5 else 1
        for k in range(n_lines):
            spans = [s for s in spans if s[1] - s[0] >= 3]  # a line lasts at least 0.3 s
            if not spans:
                break
            a, b = _pick(rng, spans)
            length = int(rng.integers(3, min(b - a, 20) + 1))
            start = int(rng.integers(a, b - length + 1))
            events.append(_EventPlan("dialogue", speakers[k % len(speakers)], p, ds=(start, start + length)))
            spans = _free_spans(a, b, [(start - 2, start + length + 2)]) + [s for s in spans if s != (a, b)]
    events.sort(key=lambda e: e.start(fps))
    for j, ev in enumerate(events):
        ev.id = f"E{j + 1}"
        ev.shot.events.append(ev)
    return events


def _render(plans: list[_ShotPlan], events: list[_EventPlan], cfg: SynthConfig, F: int, rid: dict[str, str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw every frame: the shot's background, then its characters (drifting, mouths
    flapping on frames that overlap their dialogue by at least half a frame, objects flashing
    on their sfx frames). Returns frames (F, H, W, 3) uint8 and the per-shot world truth."""
    fps = cfg.fps
    speaking: list[set[str]] = [set() for _ in range(F)]
    flashing: list[set[str]] = [set() for _ in range(F)]
    for ev in events:
        if ev.type == "sfx":
            for k in range(*ev.frames):
                flashing[k].add(ev.who.rid)
            continue
        s, e = ev.ds[0] / 10.0, ev.ds[1] / 10.0
        first = None
        for k in range(F):
            if min(e, (k + 1) / fps) - max(s, k / fps) >= 0.5 / fps - 1e-9:
                first = k if first is None else first
                if (k - first) % 2 == 0:  # open, closed, open, ...
                    speaking[k].add(ev.who.rid)
    g = _Grid(cfg.height, cfg.width)
    frames = np.empty((F, cfg.height, cfg.width, 3), np.uint8)  # (F, H, W, 3)
    shot_world = []
    for i, p in enumerate(plans):
        bg_img = _render_background(g, p.bg, p.camera, p.phase)
        chars_world = []
        for k in range(p.f0, p.f1):
            img = bg_img.copy()
            for pl in p.placed:
                dx = pl.drift * ((k - p.f0) // 3)
                mask = _draw_placed(img, g, pl, dx, pl.rid in speaking[k], pl.rid in flashing[k])
                if k == p.f0:  # truth for the metrics: where the character is and its mean colour
                    ys, xs = np.nonzero(mask)
                    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
                    mean = img[mask].mean(axis=0) if len(xs) else np.zeros(3)
                    chars_world.append({"id": pl.rid, "rgb": [round(float(x), 1) for x in mean], "box": box})
            frames[k] = img
        shot_world.append(
            {
                "id": f"S{i + 1}",
                "frames": [p.f0, p.f1],
                "camera": p.camera,
                "bg": rid[p.bg.uid],
                "bg_rgb": [round(float(x), 1) for x in bg_img.reshape(-1, 3).mean(axis=0)],
                "chars": chars_world,
            }
        )
    return frames, shot_world


def _cuts_obvious(frames: np.ndarray, cuts: list[int]) -> bool:
    """Every cut at least CUT_MIN_DIFF, every step inside a shot at most INTRA_MAX_DIFF."""
    d = frame_differences(frames)
    inside = np.ones(len(d), dtype=bool)
    inside[0] = False
    inside[cuts] = False
    if cuts and d[cuts].min() < CUT_MIN_DIFF:
        return False
    return not (inside.any() and d[inside].max() > INTRA_MAX_DIFF)


def _render_audio(rng: np.random.Generator, events: list[_EventPlan], cfg: SynthConfig, F: int, hum_hz: float) -> tuple[np.ndarray, list[mtss.Event], list[dict[str, Any]]]:
    """Ambient bed + speech on dialogue intervals + sfx bursts on flash frames. Returns the
    waveform (F / fps * sr,) float32, the script's events and the sfx world truth."""
    fps, sr = cfg.fps, cfg.sample_rate
    wav = _ambient(rng, F * sr // fps, sr, hum_hz)
    script_events: list[mtss.Event] = []
    sfx_world = []
    for ev in events:
        who = ev.who
        if ev.type == "dialogue":
            voice = who.char.voice
            assert voice is not None
            a, b = ev.ds[0] * sr // 10, ev.ds[1] * sr // 10
            m = max(2, int(round((b - a) / sr / 0.16)) + int(rng.integers(-1, 2)))  # ~0.16 s a syllable
            m = min(m, max(2, (b - a) // int(0.08 * sr)))
            syl = _syllables(rng, m)
            contour = _pick(rng, ("rising", "falling", "flat"))
            wav[a:b] += synth_speech(rng, voice, syl, b - a, sr, contour)
            verb = {"rising": "asks a question", "falling": "states firmly", "flat": "speaks calmly"}[contour]
            script_events.append(
                mtss.Event(
                    id=ev.id,
                    type="dialogue",
                    time_range=mtss.TimeRange(ev.ds[0] / 10.0, ev.ds[1] / 10.0),
                    description=f"{who.rid} {verb} in a {voice.describe()}",
                    speaker=who.rid,
                    line=_line_text(syl, rng),
                )
            )
        else:
            a, b = ev.frames[0] * sr // fps, ev.frames[1] * sr // fps
            wav[a:b] += synth_sfx(rng, ev.kind, b - a, sr)
            script_events.append(
                mtss.Event(
                    id=ev.id,
                    type="sfx",
                    time_range=mtss.TimeRange(ev.frames[0] / fps, ev.frames[1] / fps),
                    description=f"{who.rid}, {who.char.short()}, flashes white with {SFX_KINDS[ev.kind]}",
                )
            )
            sfx_world.append({"event": ev.id, "entity": who.rid, "frames": list(ev.frames), "kind": ev.kind})
    return np.clip(wav, -1.0, 1.0).astype(np.float32), script_events, sfx_world


def _customize(rng: np.random.Generator, cfg: SynthConfig, order: list[Character | Background], rid: dict[str, str], clip_id: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, dict[str, str]]]:
    """Pick at most ``max_customized_roles`` characters and give each a perturbed reference
    image and, for speakers, a reference voice (the same voice saying other syllables)."""
    sr = cfg.sample_rate
    chars = [o for o in order if isinstance(o, Character)]
    custom = [c for c in chars if rng.random() < cfg.p_customized][: cfg.max_customized_roles]
    ref_images: dict[str, np.ndarray] = {}
    ref_audio: dict[str, np.ndarray] = {}
    refs_world: dict[str, dict[str, str]] = {}
    for c in custom:
        r = rid[c.uid]
        ref_images[r] = render_reference_image(c, rng, cfg.height, cfg.width)
        refs_world[r] = {"image": f"refs/{clip_id}_{r}.png"}
        if c.voice is not None:
            n_ref, pad = int(round(cfg.ref_audio_seconds * sr)), int(0.15 * sr)
            ref = np.zeros(n_ref)
            syl = _syllables(rng, int(rng.integers(4, 9)))
            ref[pad : n_ref - pad] = synth_speech(rng, c.voice, syl, n_ref - 2 * pad, sr, _pick(rng, ("rising", "falling", "flat")))
            ref_audio[r] = ref.astype(np.float32)
            refs_world[r]["audio"] = f"refs/{clip_id}_{r}.wav"
    return ref_images, ref_audio, refs_world


def _build_script(
    clip_id: str,
    cfg: SynthConfig,
    source: Source,
    plans: list[_ShotPlan],
    order: list[Character | Background],
    rid: dict[str, str],
    events: list[mtss.Event],
    refs_world: dict[str, dict[str, str]],
    F: int,
) -> mtss.Script:
    """The clip's MTSS script: the text says what is drawn and heard. Checked for grounding."""
    entities = []
    for o in order:
        r = rid[o.uid]
        if isinstance(o, Character):
            ref = refs_world.get(r, {})
            entities.append(o.entity(r, ref.get("image"), ref.get("audio")))
        else:
            entities.append(o.entity(r))
    shots = []
    for i, p in enumerate(plans):
        desc = [f"{p.camera.capitalize()} view of {rid[p.bg.uid]}, {p.bg.short()}"]
        for pl in p.placed:
            move = {-1: ", moving slowly left", 0: "", 1: ", moving slowly right"}[pl.drift]
            where = "in the middle" if pl.side == "center" else f"on the {pl.side}"
            desc.append(f"{pl.rid}, {pl.char.short()}, {where}{move}")
        if not p.placed:
            desc.append("nobody in view")
        shots.append(
            mtss.Shot(
                id=f"S{i + 1}",
                time_range=mtss.TimeRange(p.f0 / cfg.fps, p.f1 / cfg.fps),
                visual_description="; ".join(desc),
                camera=f"static {p.camera} shot",
                references_in_shot=tuple(pl.rid for pl in p.placed) + (rid[p.bg.uid],),
                active_events=tuple(ev.id for ev in p.events),
            )
        )
    chars = [_article(o.short().removeprefix("the ")) for o in order if isinstance(o, Character)]
    places = [o.short() for o in order if isinstance(o, Background)]
    global_ = mtss.GlobalStream(
        scene_description=f"A short scene with {_join(chars) if chars else 'nobody'}, in {_join(places)}.",
        global_style=f"flat-colour pixel animation, {cfg.width}x{cfg.height} pixels, {cfg.fps} fps, hard cuts, static camera per shot",
        global_audio=f"a quiet low hum at about {int(round(source.hum_hz))} Hz with faint room noise",
    )
    script = mtss.Script(clip_id, F / cfg.fps, tuple(entities), tuple(shots), tuple(events), global_)
    issues = mtss.grounding_issues(script, cfg.max_customized_roles)
    if issues:  # a generator bug, never bad data: fail loudly
        raise AssertionError(f"synthetic clip is not grounded: {issues[0]}")
    return script


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _entity_world(o: Character | Background) -> dict[str, Any]:
    if isinstance(o, Background):
        return {"uid": o.uid, "kind": "scene", "rgb": list(o.wall_rgb), "texture": o.texture}
    out: dict[str, Any] = {"uid": o.uid, "kind": o.kind, "species": o.species, "rgb": list(o.rgb), "pattern": o.pattern}
    return out


# --------------------------------------------------------------------------- dataset


def _write_clip(root: Path, clip: ClipData, cfg: SynthConfig, split: str, source: str) -> dict[str, Any]:
    """Write a clip's media under ``root`` and return its manifest row."""
    video_rel, audio_rel = f"clips/{clip.clip_id}.mp4", f"clips/{clip.clip_id}.wav"
    media.write_video(root / video_rel, clip.frames, cfg.fps, clip.waveform, cfg.sample_rate)
    media.write_wav(root / audio_rel, clip.waveform, cfg.sample_rate)
    rels = [video_rel, audio_rel]
    for r, img in clip.ref_images.items():
        rel = clip.world["refs"][r]["image"]
        media.write_png(root / rel, img)
        rels.append(rel)
    for r, wav in clip.ref_audio.items():
        rel = clip.world["refs"][r]["audio"]
        media.write_wav(root / rel, wav, cfg.sample_rate)
        rels.append(rel)
    return {
        "id": clip.clip_id,
        "split": split,
        "source": source,
        "video": video_rel,
        "audio": audio_rel,
        "fps": cfg.fps,
        "num_frames": int(clip.frames.shape[0]),
        "width": cfg.width,
        "height": cfg.height,
        "sample_rate": cfg.sample_rate,
        "sha256": {rel: _manifest.sha256_file(root / rel) for rel in rels},
        "script": clip.script.to_dict(),
        "world": clip.world,
    }


def _plan(cfg: SynthConfig) -> list[tuple[str, int, int]]:
    """(split, source index, clips in that source) for every source, train first."""
    out = []
    idx = 0
    for split, total in (("train", cfg.train_clips), ("eval", cfg.eval_clips)):
        left = total
        while left > 0:
            k = min(cfg.clips_per_source, left)
            out.append((split, idx, k))
            idx += 1
            left -= k
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; pick another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it or pick another folder")


def generate(
    out_dir: str | os.PathLike,
    preset: str | SynthConfig = "debug",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate MAVINSet-mini into ``out_dir`` and return a summary.

    Everything is written into a temporary sibling folder that is renamed onto ``out_dir``
    at the end, so a crash never leaves half a dataset there. A non-empty ``out_dir`` is
    only replaced with ``overwrite=True``. Same ``preset`` and ``seed`` give byte-identical
    files and manifest. Layout: ``manifest.jsonl``, ``mavinset.json`` (preset, seed,
    counts), ``clips/<id>.mp4|.wav``, ``refs/<id>_<role>.png|.wav``.

    Returns ``{"root", "preset", "seed", "clips": {"train", "eval"}, "sources": {...},
    "files", "bytes", "seconds"}``.
    """
    cfg = get_preset(preset)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WorldPresetError(f"seed (--seed) must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    plan = _plan(cfg)
    total = cfg.train_clips + cfg.eval_clips
    rows: list[dict[str, Any]] = []
    report: Callable[[int], None] = (lambda k: print(f"\rMAVINSet-mini {cfg.name}: {k}/{total} clips", end="", file=sys.stderr, flush=True)) if progress else (lambda k: None)
    try:
        (tmp / "clips").mkdir(parents=True)
        (tmp / "refs").mkdir()
        n = 0
        for split, sidx, count in plan:
            # Each source draws from its own stream: (seed, source index) -> the same clips
            # whatever the other sources are.
            rng = np.random.default_rng([int(seed), GENERATOR_VERSION, sidx])
            source = make_source(rng, f"src{sidx:04d}")
            for _ in range(count):
                clip_id = f"c{n:06d}"
                clip = make_clip(rng, cfg, source, clip_id)
                rows.append(_write_clip(tmp, clip, cfg, split, source.uid))
                n += 1
                report(n)
        counts = {s: sum(1 for r in rows if r["split"] == s) for s in _manifest.SPLITS}
        sources = {s: len({r["source"] for r in rows if r["split"] == s}) for s in _manifest.SPLITS}
        meta = {
            "name": "MAVINSet-mini",
            "generator": "mavin_ops.data.synth",
            "generator_version": GENERATOR_VERSION,
            "preset": cfg.name,
            "seed": int(seed),
            "config": asdict(cfg),
            "clips": counts,
            "sources": sources,
        }
        (tmp / "mavinset.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _manifest.write_manifest(tmp, rows)
        files = [p for p in tmp.rglob("*") if p.is_file()]
        nbytes = sum(p.stat().st_size for p in files)
        # Publish: an empty or replaced out_dir swaps in whole.
        _check_target(out, overwrite)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            print(file=sys.stderr)
        raise
    if progress:
        print(file=sys.stderr)
    return {
        "root": str(out),
        "preset": cfg.name,
        "seed": int(seed),
        "clips": counts,
        "sources": sources,
        "files": len(files),
        "bytes": int(nbytes),
        "seconds": round(time.perf_counter() - t0, 2),
    }

"""Model configuration: one typed dataclass tree and the named presets.

``ModelConfig`` nests the configs of every part (each part's class carries its own
``Config``): ``video_codec`` (:class:`~.codecs.VideoCodecConfig`), ``audio_codec``
(:class:`~.codecs.AudioCodecConfig`), ``text`` (:class:`~.text.TextConfig`), ``denoiser``
(:class:`~.dit.DiTConfig`), ``routing`` (:class:`~.masks.RoutingConfig`) and ``flow``
(:class:`~.flow.FlowConfig`). The preset name is what pipelines and the CLI pass around:

- ``debug``: unit tests, seconds. 16x16 frames, one block per tower, width 32.
- ``tiny``: the embedded default; learns the synthetic 32x32 / 8 fps / 8 kHz world on two CPU
  cores in minutes. Exact patch video codec with one latent step per frame and 8x8 pixel
  patches (192 channels, width 192 so no video token is squeezed below its channel count):
  boundary-aware routing assigns whole latent steps to shots, so per-frame steps let a cut
  land on its scripted frame (with 4-frame steps a cut inside a step moved to the step's edge,
  about a frame per cut, which on 17-frame clips cost 0.04 STA); DCT audio at 10 latents/s (0.1 s
  frames: the dialogue boundaries' decisecond grid) keeping 60 coefficients (0-300 Hz: the
  voices' fundamentals, which is what makes speech periodic). Four choices make it learn on
  a CPU budget (BENCHMARKS.md, "Does it learn?" and "Which head?"): video noise 99 % shared over
  time (``flow.video_noise_shared``); both heads predict the clean latent with the loss kept in
  velocity space (``denoiser.prediction = audio_prediction = "data"``: JiT, "Back to Basics",
  Li and He 2025; on raw 192-channel patches a velocity head memorises one clip about 30 to 200
  times worse at the same budget: BENCHMARKS.md, "Which head?");
  training times from a logit-normal skewed toward noise (median t 0.69), where the layout is
  decided, since the velocity-space loss of a clean-latent head weighs a sample by about 1/t^2;
  and sampling uses classifier-free guidance 3. Releases fine-tune a shipped foundation model
  (``training/bases/tiny.json``).
  About 3M parameters; a 17-frame clip is 272 video (17 x 4 x 4) + 22 audio tokens.
- ``paper``: OVI scale (MAVIN section 5.1): 30 blocks per tower, width 3072, 24 heads, about
  11B denoiser parameters; pretrained causal video VAE (16x spatial, 48 channels), audio VAE
  at 31.25 latents/s and a frozen UMT5-XXL-sized text encoder, all from local files.

A config round-trips through JSON (``to_json`` / ``from_json``); checkpoints store it beside
the weights.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .codecs import AudioCodecConfig, VideoCodecConfig
from .dit import DiTConfig
from .flow import FlowConfig
from .masks import RoutingConfig
from .text import TextConfig
from mavin_ops.errors import MavinError

__all__ = ["PRESETS", "ModelConfig", "PresetError", "preset"]


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"
    video_codec: VideoCodecConfig = field(default_factory=VideoCodecConfig)
    audio_codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    text: TextConfig = field(default_factory=TextConfig)
    denoiser: DiTConfig = field(default_factory=DiTConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    @property
    def video_token_dim(self) -> int:
        return self.video_codec.channels * self.denoiser.patch_size**2

    @property
    def audio_token_dim(self) -> int:
        return self.audio_codec.channels

    @property
    def video_noise_channel_groups(self) -> int:
        """How many frames a video token's channels hold in equal blocks (the exact patch codec
        with 1x1 denoiser patches: its temporal stride); 1 when the channels mix frames."""
        if self.video_codec.kind == "patch" and self.denoiser.patch_size == 1:
            return int(self.video_codec.temporal_stride)
        return 1

    def replace(self, **changes: Any) -> "ModelConfig":
        """Copy with changes; nested fields by dotted name, e.g. ``replace(**{"denoiser.depth": 1})``."""
        out = self
        for key, value in changes.items():
            head, _, rest = key.partition(".")
            if not rest:
                out = dataclasses.replace(out, **{head: value})
            else:
                out = dataclasses.replace(out, **{head: dataclasses.replace(getattr(out, head), **{rest: value})})
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field '{unknown[0]}'; the known fields are {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- presets


def debug() -> ModelConfig:
    return ModelConfig(
        name="debug",
        video_codec=VideoCodecConfig(kind="patch", fps=8.0, temporal_stride=4, spatial_stride=4, height=16, width=16),
        audio_codec=AudioCodecConfig(kind="dct", sample_rate=8000, hop=320, latent_channels=32, scale=6.0, max_reference_seconds=0.5),
        text=TextConfig(tokenizer="words", vocab_size=256, max_caption_tokens=24, encoder="small", width=32, depth=1, heads=2, ffn_dim=64),
        denoiser=DiTConfig(width=32, heads=2, depth=1, ffn_dim=64, time_dim=32, patch_size=1),
        flow=FlowConfig(sample_steps=4),
    )


def tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        video_codec=VideoCodecConfig(kind="patch", fps=8.0, temporal_stride=1, spatial_stride=8, height=32, width=32),
        audio_codec=AudioCodecConfig(kind="dct", sample_rate=8000, hop=800, latent_channels=60, scale=6.0, max_reference_seconds=1.0),
        text=TextConfig(tokenizer="words", vocab_size=1024, max_caption_tokens=48, encoder="small", width=64, depth=2, heads=2, ffn_dim=128),
        denoiser=DiTConfig(width=192, heads=4, depth=2, ffn_dim=256, time_dim=64, patch_size=1, prediction="data", audio_prediction="data"),
        # t = 1 is noise here: JiT's logit-normal(-0.8, 0.8) toward noise, mirrored.
        flow=FlowConfig(sample_steps=25, guidance=3.0, video_noise_shared=0.99, timestep_sampling="logit_normal", logit_mean=0.8, logit_std=0.8),
    )


def paper() -> ModelConfig:
    return ModelConfig(
        name="paper",
        video_codec=VideoCodecConfig(
            kind="vae", fps=24.0, temporal_stride=4, spatial_stride=16, height=704, width=1280, latent_channels=48, hidden_channels=256, num_res_blocks=2
        ),
        audio_codec=AudioCodecConfig(kind="vae", sample_rate=16000, hop=512, latent_channels=20, hidden_channels=256, num_res_blocks=2, max_reference_seconds=5.0),
        text=TextConfig(
            tokenizer="unigram",
            vocab_size=256384,
            max_caption_tokens=128,
            encoder="t5",
            width=4096,
            depth=24,
            heads=64,
            head_dim=64,
            ffn_dim=10240,
            relative_buckets=32,
            relative_max_distance=128,
            bias_per_layer=True,
        ),
        denoiser=DiTConfig(width=3072, heads=24, depth=30, ffn_dim=10496, time_dim=3072, patch_size=2, rope_time_scale=24.0),
        flow=FlowConfig(sample_steps=50, guidance=4.0, shift=5.0),
    )


class PresetError(MavinError, ValueError):
    """An unknown model preset name (a user's mistake)."""


PRESETS: dict[str, Callable[[], ModelConfig]] = {"debug": debug, "tiny": tiny, "paper": paper}


def preset(name: str) -> ModelConfig:
    """The named preset's config (``debug``, ``tiny``, ``paper``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise PresetError(f"unknown model preset '{name}'; use one of {', '.join(PRESETS)}") from None

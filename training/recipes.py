"""Stage recipes: the four training stages, each a typed config per preset.

Sources: "Script-a-Video (MTSS)" section 4.2.2 (the phased recipe: ID customization,
multi-shot control, audio-visual synergy, then joint fine-tuning on an interleaved mixture of
the earlier stages' data) and "MAVIN" section 5.1 and appendix C.2 (AdamW with beta1 0.9,
beta2 0.95, eps 1e-8; learning rate 5e-5 in every stage; flow-matching loss weights 0.85 for
video and 0.15 for audio).

A recipe says *what* a stage trains:

- ``mixture``: which clips it reads (named subsets of a dataset, each with a weight; more than
  one subset means the batches are interleaved, see ``training/data.py``);
- ``trainable``: parameter groups (names in :data:`PARAM_GROUPS`, each a tuple of glob
  patterns over parameter names); every other parameter is frozen;
- ``steps``, ``batch`` (per process), the optimizer and the loss weights;
- ``zero_stage``, the checkpoint cadence and how many checkpoints to keep.

Every stage starts from the previous stage's final checkpoint (``previous_stage``); ``id``
starts from the model's initial weights. A recipe is picked by the pair (stage, preset), the
names pipelines and the CLI pass around::

    r = get_recipe("multishot", "tiny")
    r = get_recipe("joint", "debug", steps=3)      # field overrides, checked

Presets: ``debug`` (unit tests: a handful of steps), ``tiny`` (the embedded default: enough
steps to learn the synthetic data on 2 CPU cores), ``paper`` (cluster scale; the steps follow
the papers' schedules).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable
from mavin_ops.errors import MavinError
from mavin_ops.presets import MODEL_PRESETS

__all__ = [
    "PARAM_GROUPS",
    "PRESETS",
    "ALL_STAGES",
    "BASE_STAGE",
    "STAGES",
    "SUBSETS",
    "RecipeError",
    "StageRecipe",
    "get_recipe",
    "match_groups",
    "needs_base",
    "previous_stage",
    "stage_chain",
]

#: Training stages of a release, in order (MTSS 4.2.2).
STAGES: tuple[str, ...] = ("id", "multishot", "av", "joint")
#: The foundation stage (MAVIN's text-driven stage 1): trained by ``mavin-ops pretrain``, not by a
#: release; a release's ``id`` stage fine-tunes from its checkpoint (the *base*).
BASE_STAGE = "base"
#: Every stage a recipe can name.
ALL_STAGES: tuple[str, ...] = (BASE_STAGE, *STAGES)
#: Recipe presets. ``debug`` and ``tiny`` train on one machine; ``paper`` on a GPU cluster.
PRESETS: tuple[str, ...] = MODEL_PRESETS

#: Named clip subsets a mixture can draw from (see ``training/data.py:subset_members``):
#: ``identity`` clips have at least one customized role (reference image or audio);
#: ``multishot`` clips have two or more shots; ``dialogue`` clips have at least one dialogue
#: event; ``all`` is every training clip.
SUBSETS: tuple[str, ...] = ("identity", "multishot", "dialogue", "all")

#: Parameter groups by the model's parameter names (glob patterns, ``*`` crosses dots).
#: The model (model/) mirrors the video and audio towers' names; a test checks that every
#: group matches at least one parameter of the debug model, so a rename cannot silently
#: freeze everything.
PARAM_GROUPS: dict[str, tuple[str, ...]] = {
    # ID-aware propagation (MAVIN eq. 5): the learnable role embeddings p_j^v / p_j^a and the
    # timbre encoder e_j that turn reference media into identity anchors.
    "identity": ("*role_embed*", "*timbre*"),
    # Hierarchical text attention with boundary routing (MAVIN eq. 3-4): both towers' text
    # cross-attention (attn2 / audio_attn2), the caption projection and the caption encoder.
    "text": ("*.attn2.*", "*audio_attn2.*", "*text_embed*", "text_encoder.*"),
    # Every audio-tower parameter (mirrored names carry ``audio_``).
    "audio_tower": ("*audio_*",),
    # Audio-to-video and video-to-audio cross-attention on the shared time axis.
    "av_cross": ("*audio_to_video_attn*", "*video_to_audio_attn*"),
    # Self-attention of both towers (identity anchors are concatenated to these sequences).
    "self_attn": ("*.attn1.*", "*audio_attn1.*"),
    # Everything.
    "all": ("*",),
}


class RecipeError(MavinError, ValueError):
    """An unknown stage, preset, subset, parameter group or override."""


@dataclass(frozen=True)
class StageRecipe:
    """What one training stage does, for one preset."""

    stage: str
    preset: str
    #: (subset, weight) pairs; batches interleave subsets in proportion to the weights.
    mixture: tuple[tuple[str, float], ...]
    #: Names from PARAM_GROUPS; the union of their patterns is trained, the rest frozen.
    trainable: tuple[str, ...]
    steps: int
    batch: int  # micro-batch per process
    #: Micro-batches per optimizer step on each process (gradient accumulation). The global
    #: batch is ``batch * accum * world size``: one process with ``accum`` 2 takes the same
    #: steps as two processes with ``accum`` 1 (same clips, same noise; tests check it).
    accum: int = 1
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    #: Learning-rate schedule: linear warm-up over ``warmup_steps``, then ``constant`` or a
    #: ``cosine`` decay to ``min_lr_ratio * lr`` at the last step (a function of the step, so a
    #: resumed run follows the same curve).
    warmup_steps: int = 0
    decay: str = "constant"
    min_lr_ratio: float = 0.0
    #: Flow-matching loss weights per tower (MAVIN C.2).
    loss_weights: dict[str, float] = field(default_factory=lambda: {"video": 0.85, "audio": 0.15})
    zero_stage: int = 2
    #: bf16 on CUDA (ignored on CPU, which trains in fp32); on for ``paper`` only.
    bf16: bool = False
    checkpoint_every: int = 0  # 0: only at the end (and on SIGTERM)
    keep_last: int = 2
    log_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage not in ALL_STAGES:
            raise RecipeError(f"unknown stage '{self.stage}'; use one of {', '.join(ALL_STAGES)}")
        if not self.mixture:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: the data mixture is empty; name at least one subset")
        for subset, weight in self.mixture:
            if subset not in SUBSETS:
                raise RecipeError(f"recipe {self.stage}/{self.preset}: unknown subset '{subset}'; use one of {', '.join(SUBSETS)}")
            if not weight > 0:
                raise RecipeError(f"recipe {self.stage}/{self.preset}: subset '{subset}' has weight {weight}; weights must be > 0")
        for group in self.trainable:
            if group not in PARAM_GROUPS:
                raise RecipeError(
                    f"recipe {self.stage}/{self.preset}: unknown parameter group '{group}'; use one of {', '.join(PARAM_GROUPS)}"
                )
        if not self.trainable:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: no trainable parameter group; name at least one")
        for name in ("steps", "batch", "accum", "keep_last", "log_every"):
            if int(getattr(self, name)) < 1:
                raise RecipeError(f"recipe {self.stage}/{self.preset}: {name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: checkpoint_every must be >= 0 (0 = only at the end)")
        if self.zero_stage not in (0, 1, 2):
            raise RecipeError(
                f"recipe {self.stage}/{self.preset}: ZeRO stage {self.zero_stage} is not supported; use 0, 1 or 2 "
                "(the checkpoint converter gathers full tensors from ZeRO 0-2 partitions)"
            )
        if self.decay not in ("constant", "cosine"):
            raise RecipeError(f"recipe {self.stage}/{self.preset}: decay '{self.decay}' is unknown; use 'constant' or 'cosine'")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if not self.lr > 0:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: lr must be > 0, got {self.lr}")
        if set(self.loss_weights) != {"video", "audio"}:
            raise RecipeError(f"recipe {self.stage}/{self.preset}: loss_weights needs exactly 'video' and 'audio', got {sorted(self.loss_weights)}")

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.lr
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    @property
    def patterns(self) -> tuple[str, ...]:
        """The union of the trainable groups' glob patterns."""
        out: list[str] = []
        for group in self.trainable:
            out.extend(p for p in PARAM_GROUPS[group] if p not in out)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mixture"] = [list(m) for m in self.mixture]
        d["trainable"] = list(self.trainable)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageRecipe":
        d = dict(d)
        d["mixture"] = tuple((str(s), float(w)) for s, w in d["mixture"])
        d["trainable"] = tuple(d["trainable"])
        d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# Stage definitions shared by every preset: (mixture, trainable groups).
# ID customization trains the identity anchors and the self-attention that reads them;
# multi-shot control trains the routed text attention; AV synergy the audio tower and the
# cross-modal attention; the joint stage everything, on an interleaved mixture of the three
# earlier stages' data (MTSS 4.2.2).
_STAGE_DEFS: dict[str, tuple[tuple[tuple[str, float], ...], tuple[str, ...]]] = {
    # The foundation: every parameter on every clip of the foundation world.
    "base": ((("all", 1.0),), ("all",)),
    "id": ((("identity", 1.0),), ("identity", "self_attn")),
    "multishot": ((("multishot", 1.0),), ("text",)),
    "av": ((("dialogue", 1.0),), ("audio_tower", "av_cross")),
    "joint": ((("identity", 1.0), ("multishot", 1.0), ("dialogue", 1.0)), ("all",)),
}

# Per preset: steps per stage, micro-batch, checkpoint cadence, lr, and what a preset without
# a pretrained backbone adds to the trainable groups.
# The papers fine-tune a pretrained OVI / LTX-2 backbone, and so do the tiny and paper presets:
# debug: a handful of steps (unit tests, the golden loss file); it has no base, so its first
#   stage (id) also trains the backbone ("all", the role of MAVIN's text-driven stage 1; with
#   adaLN-Zero a frozen fresh backbone gets no gradient), the later stages train only their own
#   groups, so freezing is exercised with real gradients. Its base stage is a few steps.
# tiny: the base stage (``mavin-ops pretrain``) trains every parameter on its own synthetic
#   world for thousands of steps at a constant lr after a warm-up (resumable in chunks; the
#   shipped base in bases/ is one), then a release fine-tunes it stage by stage with the papers'
#   freezing (each stage only its own groups, joint everything) at a fine-tuning lr decayed
#   along a cosine within each stage.
# paper: the MAVIN C.2 schedule (60K / 20K / 15K steps) and 15K joint steps (MTSS 4.2.2),
#   lr 5e-5, only the stage's own groups train.
_PRESET_DEFS: dict[str, dict[str, Any]] = {
    "debug": {
        "steps": {"base": 4, "id": 4, "multishot": 4, "av": 4, "joint": 6},
        "batch": 2,
        "checkpoint_every": 2,
        "lr": 5e-5,
        "extra_trainable": {"id": ("all",)},
    },
    "tiny": {
        "steps": {"base": 8000, "id": 60, "multishot": 100, "av": 120, "joint": 300},
        "batch": 8,
        "checkpoint_every": 50,
        "log_every": 10,
        "lr": 3e-4,
        "decay": "cosine",
        "min_lr_ratio": 0.05,
        "needs_base": True,
        "stage": {"base": {"lr": 1e-3, "decay": "constant", "warmup_steps": 200, "checkpoint_every": 500, "keep_last": 16}},
    },
    "paper": {
        "needs_base": True,
        "steps": {"base": 100_000, "id": 60_000, "multishot": 20_000, "av": 15_000, "joint": 15_000},
        "batch": 1,
        "checkpoint_every": 1000,
        "log_every": 50,
        "lr": 5e-5,
        "bf16": True,
    },
}


def get_recipe(stage: str, preset: str, **overrides: Any) -> StageRecipe:
    """The recipe of ``stage`` for ``preset``, with optional field overrides (e.g. ``steps=3``).

    Raises :class:`RecipeError` for an unknown stage, preset or field."""
    if stage not in ALL_STAGES:
        raise RecipeError(f"unknown stage '{stage}'; use one of {', '.join(ALL_STAGES)}")
    if preset not in _PRESET_DEFS:
        raise RecipeError(f"unknown training preset '{preset}'; use one of {', '.join(PRESETS)}")
    mixture, trainable = _STAGE_DEFS[stage]
    p = _PRESET_DEFS[preset]
    trainable = tuple(dict.fromkeys(trainable + tuple(p.get("extra_trainable", {}).get(stage, ()))))
    fields = {f.name for f in dataclasses.fields(StageRecipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise RecipeError(f"unknown recipe field(s) {', '.join(unknown)}; fields are {', '.join(sorted(fields))}")
    base: dict[str, Any] = {
        "stage": stage,
        "preset": preset,
        "mixture": mixture,
        "trainable": trainable,
        "steps": p["steps"][stage],
        "batch": p["batch"],
        "checkpoint_every": p["checkpoint_every"],
        "lr": p["lr"],
        "log_every": p.get("log_every", 1),
        "bf16": p.get("bf16", False),
        "decay": p.get("decay", "constant"),
        "min_lr_ratio": p.get("min_lr_ratio", 0.0),
    }
    base.update(p.get("stage", {}).get(stage, {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StageRecipe(**base)


def previous_stage(stage: str) -> str | None:
    """The release stage whose final checkpoint ``stage`` starts from (None for ``id``, which
    starts from a base when the preset has one, and for ``base``)."""
    if stage not in ALL_STAGES:
        raise RecipeError(f"unknown stage '{stage}'; use one of {', '.join(ALL_STAGES)}")
    i = STAGES.index(stage) if stage in STAGES else 0
    return STAGES[i - 1] if i else None


def needs_base(preset: str) -> bool:
    """Whether a release of ``preset`` fine-tunes a foundation model (its ``id`` stage starts
    from a ``base`` checkpoint): true where the preset freezes what the papers freeze."""
    if preset not in _PRESET_DEFS:
        raise RecipeError(f"unknown training preset '{preset}'; use one of {', '.join(PRESETS)}")
    return bool(_PRESET_DEFS[preset].get("needs_base", False))


def stage_chain(until: str = "joint") -> tuple[str, ...]:
    """The stages from ``id`` up to and including ``until``."""
    if until not in STAGES:
        raise RecipeError(f"unknown stage '{until}'; use one of {', '.join(STAGES)}")
    return STAGES[: STAGES.index(until) + 1]


def match_groups(names: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The parameter names matched by any glob pattern (order of ``names`` kept)."""
    pats = tuple(patterns)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]

"""The preset names, declared once; every layer imports them from here.

- :data:`MODEL_PRESETS`: model sizes (``model/config.py`` builds each, ``training/recipes.py``
  trains each); ``paper`` is the papers' size, for a GPU cluster.
- :data:`RELEASE_PRESETS`: what a release runs end to end, a world and a model of the same name.
- :data:`WORLD_PRESETS`: the synthetic worlds ``data/synth.py`` generates: the release worlds
  and ``base``, the foundation model's larger world.
"""

from __future__ import annotations

__all__ = ["BASE_WORLDS", "MIN_BASE_SEED", "MODEL_PRESETS", "RELEASE_PRESETS", "WORLD_PRESETS"]

MODEL_PRESETS: tuple[str, ...] = ("debug", "tiny", "paper")
RELEASE_PRESETS: tuple[str, ...] = ("debug", "tiny")
WORLD_PRESETS: tuple[str, ...] = (*RELEASE_PRESETS, "base")
#: The world a model preset's foundation base learns: the same frame size and rates as the
#: preset's release world, more clips.
BASE_WORLDS: dict[str, str] = {"debug": "debug", "tiny": "base"}
#: Seeds below this are the release benchmarks' (``release --seed``); a foundation world is
#: generated from seeds at or above it, so a base never sees a benchmark clip's source.
MIN_BASE_SEED = 1000

"""What the trainer needs from a model: one small interface, so the training machinery does not
depend on the model's internals (and tests can drive it with a toy model).

A :class:`ModelAdapter` builds the single-device torch module for a preset, turns a loaded
clip into precomputed tensors (latents, reference media, whatever the batch needs), collates
records into a batch and computes the per-tower flow-matching losses. The trainer weights
the towers with the recipe's ``loss_weights`` (or, when ``losses`` also returns ``"loss"``,
checks that the model weighted them the same way), wraps the module in the DeepSpeed engine
and owns everything distributed.

Optional methods the trainer uses when present:

- ``checkpoint_state_dict(model) -> dict``: what a checkpoint stores (default: the whole
  ``state_dict``), e.g. without frozen pretrained encoders that live in their own files;
- ``checkpoint_metadata() -> dict[str, str]``: safetensors metadata of ``model.safetensors``,
  so the model's own loader can open a training checkpoint;
- ``canonical_config(saved) -> dict``: a checkpoint's saved config in today's form (fields
  added since at their defaults), compared with :meth:`ModelAdapter.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from mavin_ops.data.media import Clip

    from .data import Record

__all__ = ["ModelAdapter", "get_adapter"]


@runtime_checkable
class ModelAdapter(Protocol):
    """The model side of training. ``name`` identifies the adapter in checkpoints."""

    name: str
    preset: str

    def build(self) -> "torch.nn.Module":
        """A freshly initialized module (the caller seeds torch first)."""

    def config(self) -> dict[str, Any]:
        """The model config as JSON-able data; saved beside every checkpoint's weights."""

    def encoder_fingerprint(self) -> str:
        """Identifies what :meth:`encode_clip` computes (encoder config and weights): the
        precompute cache is keyed by it."""

    def encode_clip(self, clip: "Clip") -> tuple[dict[str, "np.ndarray"], dict[str, Any]]:
        """(named arrays, JSON metadata) for one clip; done once per dataset version."""

    def collate(self, records: list["Record"]) -> Any:
        """A batch the model's loss reads, from precomputed records."""

    def losses(self, model: "torch.nn.Module", batch: Any, generator: "torch.Generator | None" = None) -> dict[str, "torch.Tensor"]:
        """Per-tower flow-matching losses ``{"video": ..., "audio": ...}`` (unweighted scalars),
        optionally with ``"loss"``, the differentiable weighted total. ``model`` is the
        DeepSpeed engine (call it like the module; ``model.module`` is the module)."""


def get_adapter(preset: str) -> ModelAdapter:
    """The adapter of the project's model (model/) for a model preset (debug, tiny, paper)."""
    from .mavin_adapter import MavinAdapter

    return MavinAdapter(preset)

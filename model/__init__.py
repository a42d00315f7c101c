"""Model: the dual-tower audio-video diffusion transformer (MAVIN / MTSS family), single-device torch.

Modules, top to bottom:

- ``config``: ``ModelConfig`` and the presets ``debug`` / ``tiny`` / ``paper``.
- ``codecs``: video and audio autoencoders behind one interface (latent shapes and times).
- ``text``: tokenizers and text encoders; captions tokenized caption by caption.
- ``masks``: boundary-aware routing (MAVIN eq. 3-4) and identity-aware masks (section 4.3),
  dense and FlexAttention forms of the same predicate.
- ``dit``: the dual-tower denoiser (mirrored video / audio towers).
- ``flow``: flow matching (MAVIN eq. 1) and the Euler sampler.
- ``batch``: ``ClipInput`` -> ``Batch`` (padded tokens, masks, loss masks).
- ``mavin``: ``MavinModel`` (training forward, sampling, decoding) and checkpoints.
- ``export``: ONNX export of the denoiser step with the masks as inputs.
"""

from .batch import Batch, ClipInput, RoleReference, prepare_batch
from .config import PRESETS, ModelConfig, preset
from .mavin import GeneratedClip, MavinModel, build_model, load_checkpoint, save_checkpoint

__all__ = [
    "PRESETS",
    "Batch",
    "ClipInput",
    "GeneratedClip",
    "MavinModel",
    "ModelConfig",
    "RoleReference",
    "build_model",
    "load_checkpoint",
    "prepare_batch",
    "preset",
    "save_checkpoint",
]

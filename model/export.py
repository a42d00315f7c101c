"""ONNX export of the denoiser step: both towers, the masks as inputs.

The exported graph is ``DualTowerDiT.forward`` with dense boolean masks, so a serving runtime
(ONNX Runtime, Triton) feeds the routing and identity masks a batch needs, built by
``Batch.dense_masks()`` or any code that follows ``model.masks``. Batch, token and caption
lengths are dynamic axes. The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) is used;
``onnx.checker`` validates the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .batch import Batch
from .dit import DualTowerDiT

__all__ = ["DENOISER_INPUTS", "DENOISER_OUTPUTS", "export_denoiser", "denoiser_example"]

DENOISER_INPUTS = (
    "video",
    "audio",
    "text",
    "t",
    "video_pos",
    "audio_pos",
    "video_role",
    "audio_role",
    "video_self_mask",
    "audio_self_mask",
    "video_text_mask",
    "audio_text_mask",
    "av_mask",
)
DENOISER_OUTPUTS = ("video_velocity", "audio_velocity")


class _Positional(nn.Module):
    """The denoiser with positional inputs in ``DENOISER_INPUTS`` order."""

    def __init__(self, denoiser: DualTowerDiT):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        return self.denoiser(**dict(zip(DENOISER_INPUTS, args)))


def denoiser_example(batch: Batch, text: Tensor, t: Tensor | None = None) -> dict[str, Tensor]:
    """Named denoiser inputs for ``batch`` (clean latents as the state, dense masks)."""
    t = t if t is not None else torch.full((batch.video.shape[0],), 0.5)
    return batch.denoiser_inputs(batch.video, batch.audio, text, t)


def export_denoiser(denoiser: DualTowerDiT, example: dict[str, Tensor], path: str | Path, dynamic: bool = True) -> Path:
    """Write the denoiser step to ``path`` (ONNX, opset of the dynamo exporter) and check it."""
    import onnx
    from torch.export import Dim

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(example[n] for n in DENOISER_INPUTS)
    dynamic_shapes = None
    if dynamic:
        B, Nv, Na, L = Dim("batch"), Dim("video_tokens"), Dim("audio_tokens"), Dim("text_tokens")
        per = {
            "video": {0: B, 1: Nv},
            "audio": {0: B, 1: Na},
            "text": {0: B, 1: L},
            "t": {0: B},
            "video_pos": {0: B, 1: Nv},
            "audio_pos": {0: B, 1: Na},
            "video_role": {0: B, 1: Nv},
            "audio_role": {0: B, 1: Na},
            "video_self_mask": {0: B, 1: Nv, 2: Nv},
            "audio_self_mask": {0: B, 1: Na, 2: Na},
            "video_text_mask": {0: B, 1: Nv, 2: L},
            "audio_text_mask": {0: B, 1: Na, 2: L},
            "av_mask": {0: B, 1: Nv, 2: Na},
        }
        dynamic_shapes = (tuple(per[n] for n in DENOISER_INPUTS),)
    was_training = denoiser.training
    denoiser.eval()
    try:
        with warnings.catch_warnings():
            # the exporter notes that axes sharing a Dim share one name; that is what we ask for
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
            program = torch.onnx.export(
                _Positional(denoiser).eval(),
                args,
                dynamo=True,
                input_names=list(DENOISER_INPUTS),
                output_names=list(DENOISER_OUTPUTS),
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
        program.save(str(path))
    finally:
        denoiser.train(was_training)
    onnx.checker.check_model(str(path))
    return path

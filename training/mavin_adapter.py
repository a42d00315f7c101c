"""The project's model (model/: MavinModel) behind the trainer's ModelAdapter interface.

- precompute: each clip's video latents (C, T', H', W') and audio latents (N, C) from the
  model's codecs, plus the reference media of its customized roles, once per dataset version;
  the MTSS script rides along in the metadata and is compiled and tokenized per batch
  (cheap) by ``model.prepare_batch``, which also builds the routing and identity masks;
- a batch is ``prepare_batch`` over ``ClipInput`` with precomputed latents; the encoder side
  (codecs + tokenizer) is built without the denoiser, so the data path never allocates the
  big model;
- the losses are the model's own flow-matching forward (MAVIN eq. 1), run through the
  DeepSpeed engine so its hooks see it; the model weights the towers with its flow config
  (0.85 / 0.15), which the trainer checks against the recipe;
- checkpoints store ``model.trainable_state_dict()`` with the model's own safetensors
  metadata (format + config), so ``mavin_ops.model.load_checkpoint(<step>/model.safetensors)``
  opens a training checkpoint directly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["LATENTS_VERSION", "MavinAdapter"]

#: Bump when what encode_clip stores changes: the precompute cache is keyed by it.
LATENTS_VERSION = 1


class _EncoderSide(nn.Module):
    """What ``prepare_batch`` reads from a model: config, codecs, tokenizer (no denoiser)."""

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.video_codec = config.video_codec.build(None, True)
        self.audio_codec = config.audio_codec.build(None, True)
        self.tokenizer = config.text.build_tokenizer()

    @property
    def codec_device(self) -> torch.device:
        p = next(self.video_codec.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def _unwrap(model: Any) -> Any:
    """The MavinModel inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


class MavinAdapter:
    """ModelAdapter for ``mavin_ops.model`` at a preset (debug, tiny, paper)."""

    name = "mavin"

    def __init__(self, preset: str = "tiny", config: Any = None):
        from mavin_ops.model import config as mconfig

        self.preset = preset
        self.model_config = config if config is not None else mconfig.preset(preset)
        self._encoder: _EncoderSide | None = None

    # ------------------------------------------------------------------ model

    def build(self) -> nn.Module:
        from mavin_ops.model import build_model

        return build_model(self.model_config)

    def config(self) -> dict[str, Any]:
        return json.loads(self.model_config.to_json())

    def canonical_config(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved config as :meth:`config` writes it today: fields added since take their
        defaults (an unknown field is an error)."""
        from mavin_ops.model.config import ModelConfig

        return json.loads(ModelConfig.from_dict(saved).to_json())

    def may_train(self, model: nn.Module, name: str) -> bool:
        """Whether training may change parameter ``name`` (frozen pretrained parts: never)."""
        return _unwrap(model).may_train(name)

    def checkpoint_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the trained parts (frozen pretrained files are not copied)."""
        return _unwrap(model).trainable_state_dict()

    def checkpoint_metadata(self) -> dict[str, str]:
        """safetensors metadata making model.safetensors a ``mavin_ops.model`` checkpoint."""
        from mavin_ops.model.mavin import CHECKPOINT_FORMAT

        return {"format": CHECKPOINT_FORMAT, "config": self.model_config.to_json()}

    def loss_weights(self) -> dict[str, float]:
        fc = self.model_config.flow
        return {"video": float(fc.video_weight), "audio": float(fc.audio_weight)}

    # ------------------------------------------------------------------ data

    @property
    def encoder(self) -> _EncoderSide:
        if self._encoder is None:
            self._encoder = _EncoderSide(self.model_config)
        return self._encoder

    def encoder_fingerprint(self) -> str:
        import dataclasses

        c = self.model_config
        spec = {"v": LATENTS_VERSION, "video_codec": dataclasses.asdict(c.video_codec), "audio_codec": dataclasses.asdict(c.audio_codec)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    def encode_clip(self, clip: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from mavin_ops.model.codecs import audio_to_tensor, frames_to_tensor

        enc = self.encoder
        with torch.no_grad():
            zv = enc.video_codec.encode(frames_to_tensor(clip.frames).to(enc.codec_device))[0].float().cpu()  # (C, T', H', W')
            za = enc.audio_codec.encode(audio_to_tensor(clip.waveform).to(enc.codec_device))[0].float().cpu()  # (N, C)
        arrays: dict[str, np.ndarray] = {"video_latent": zv.numpy(), "audio_latent": za.numpy()}
        for rid, img in clip.ref_images.items():
            arrays[f"ref_image.{rid}"] = np.asarray(img, dtype=np.uint8)
        for rid, wav in clip.ref_audio.items():
            arrays[f"ref_audio.{rid}"] = np.asarray(wav, dtype=np.float32)
        return arrays, {"script": clip.row["script"], "height": int(clip.frames.shape[1]), "width": int(clip.frames.shape[2])}

    def clip_inputs(self, records: list[Any]) -> list[Any]:
        """Precomputed records -> ``ClipInput`` with latents and reference media."""
        from mavin_ops import mtss
        from mavin_ops.model import ClipInput, RoleReference

        clips = []
        for r in records:
            caption = mtss.compile_caption(mtss.parse_script(r.meta["script"], clip_id=r.id))
            refs: dict[str, dict[str, Any]] = {}
            for key, value in r.tensors.items():
                kind, _, rid = key.partition(".")
                if kind == "ref_image":
                    refs.setdefault(rid, {})["image"] = value.numpy()
                elif kind == "ref_audio":
                    refs.setdefault(rid, {})["audio"] = value.numpy()
            clips.append(
                ClipInput(
                    caption=caption,
                    video_latent=r.tensors["video_latent"],
                    audio_latent=r.tensors["audio_latent"],
                    references={rid: RoleReference(image=v.get("image"), audio=v.get("audio")) for rid, v in refs.items()},
                )
            )
        return clips

    def collate(self, records: list[Any]) -> Any:
        from mavin_ops.model.batch import prepare_batch

        with torch.no_grad():
            return prepare_batch(self.encoder, self.clip_inputs(records))

    # ------------------------------------------------------------------ loss

    def losses(self, model: Any, batch: Any, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        module = _unwrap(model)
        inputs = module.training_inputs(batch, generator)
        dtype = next(module.denoiser.parameters()).dtype
        if dtype != torch.float32:  # DeepSpeed bf16 casts the weights; the inputs follow
            inputs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        out = model(**inputs)
        return {"loss": out["loss"], "video": out["video_loss"], "audio": out["audio_loss"]}

"""MAVIN: the whole model (codecs, text encoder, dual-tower denoiser), its training forward,
sampling, and the checkpoint format.

The trainer's loop, on one device (DeepSpeed wraps ``model`` from outside)::

    model = build_model("tiny")                        # or load_checkpoint(path)
    batch = model.prepare_batch(clips).to(device)      # list[ClipInput] -> Batch
    out = model(**model.training_inputs(batch, generator))
    out["loss"].backward()                             # also out["video_loss"], out["audio_loss"]

Generation: ``model.generate(clips, steps=..., guidance=...)`` -> list of ``GeneratedClip``.

Checkpoints are one safetensors file: the trainable weights (denoiser, and the text encoder
when it is trained) plus metadata ``{"format": "mavin-ops/model", "config": <ModelConfig JSON>,
...lineage ids}``. Frozen pretrained parts (a VAE, a T5 encoder) are not copied: the config
names their local files and loading reads them again. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .batch import Batch, ClipInput, prepare_batch, unpatchify
from .codecs import tensor_to_audio, tensor_to_frames
from .config import ModelConfig, preset
from .flow import euler_sample, interpolate, masked_mse, sample_timesteps, time_shared_noise, velocity_target

__all__ = ["CHECKPOINT_FORMAT", "GeneratedClip", "MavinModel", "build_model", "load_checkpoint", "read_checkpoint_metadata", "save_checkpoint"]

CHECKPOINT_FORMAT = "mavin-ops/model"


@dataclass(frozen=True)
class GeneratedClip:
    clip_id: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    audio: np.ndarray  # (S,) float32
    fps: float
    sample_rate: int


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _draw(fn, shape, generator: torch.Generator | None, device) -> Tensor:
    """Random numbers from ``generator`` on its own device, moved to ``device``."""
    return fn(tuple(shape), generator=generator, device=_generator_device(generator)).to(device)


class MavinModel(nn.Module):
    """Codecs + text encoder + dual-tower denoiser, built from a :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig, device=None, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        meta = device is not None and torch.device(device).type == "meta"
        load = load_pretrained and not meta
        self.video_codec = config.video_codec.build(device, load)
        self.audio_codec = config.audio_codec.build(device, load)
        self.text_encoder = config.text.build(device, load)
        with torch.device(device or "cpu"):
            self.denoiser = config.denoiser.build(config.video_token_dim, config.audio_token_dim, self.text_encoder.dim)
        self._tokenizer = None

    # ------------------------------------------------------------------ parts

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.config.text.build_tokenizer()
        return self._tokenizer

    @property
    def codec_device(self) -> torch.device:
        p = next(self.video_codec.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def trainable_prefixes(self) -> tuple[str, ...]:
        """The parts training may change: the denoiser, and the text encoder when it is not a
        frozen pretrained one. The codecs (VAEs) and a pretrained text encoder stay frozen,
        whatever a stage's parameter groups match."""
        return ("denoiser.",) + (("text_encoder.",) if self.config.text.trainable else ())

    def may_train(self, name: str) -> bool:
        return name.startswith(self.trainable_prefixes)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a checkpoint stores: every part training may change (:attr:`trainable_prefixes`)."""
        return {k: v for k, v in self.state_dict().items() if self.may_train(k)}

    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        return {
            "denoiser": count(self.denoiser),
            "text_encoder": count(self.text_encoder),
            "video_codec": count(self.video_codec),
            "audio_codec": count(self.audio_codec),
            "trainable": sum(v.numel() for v in self.trainable_state_dict().values()),
        }

    # ------------------------------------------------------------------ batches

    def prepare_batch(self, clips: list[ClipInput]) -> Batch:
        """Media/latents + compiled captions + references -> padded tensors and masks."""
        with torch.no_grad():
            return prepare_batch(self, clips)

    def encode_text(self, batch: Batch) -> Tensor:
        return self.text_encoder(**batch.text_inputs())  # (B, L, text_dim)

    def training_inputs(self, batch: Batch, generator: torch.Generator | None = None, masks: dict | None = None) -> dict:
        """Everything ``forward`` needs, with the random draws made here: t, noise, and which
        samples see the null caption (classifier-free guidance dropout)."""
        fc = self.config.flow
        B, dev = batch.video.shape[0], batch.video.device
        t = sample_timesteps(B, fc, generator, _generator_device(generator)).to(dev)
        keep = (_draw(torch.rand, (B,), generator, dev) >= fc.caption_dropout).float()
        return dict(
            video=batch.video,
            audio=batch.audio,
            video_noise=self.video_noise(batch, generator),
            audio_noise=_draw(torch.randn, batch.audio.shape, generator, dev),
            t=t,
            text_keep=keep,
            video_loss_mask=batch.video_loss_mask,
            audio_loss_mask=batch.audio_loss_mask,
            **batch.text_inputs(),
            video_pos=batch.video_pos,
            audio_pos=batch.audio_pos,
            video_role=batch.video_role,
            audio_role=batch.audio_role,
            **(masks if masks is not None else batch.dense_masks()),
        )

    def video_noise(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise for the video tokens, ``flow.video_noise_shared`` of its
        variance common over time (:func:`time_shared_noise`)."""
        draw = lambda: _draw(torch.randn, batch.video.shape, generator, batch.video.device)  # noqa: E731
        return time_shared_noise(draw(), draw, batch.video_pos, self.config.flow.video_noise_shared, self.config.video_noise_channel_groups)

    # ------------------------------------------------------------------ training forward

    def forward(
        self,
        video: Tensor,  # (B, Nv, Dv) clean latent tokens z_0 + anchors
        audio: Tensor,  # (B, Na, Da)
        video_noise: Tensor,  # (B, Nv, Dv) eps
        audio_noise: Tensor,
        t: Tensor,  # (B,)
        text_keep: Tensor,  # (B,) 1 = caption, 0 = null caption
        video_loss_mask: Tensor,  # (B, Nv) bool: latent tokens
        audio_loss_mask: Tensor,
        ids: Tensor,
        segment: Tensor,
        position: Tensor,
        **denoiser_inputs,
    ) -> dict[str, Tensor]:
        fc = self.config.flow
        # 1. flow-matching interpolation on latent tokens (MAVIN eq. 1); anchors stay clean
        zt_v = torch.where(video_loss_mask[..., None], interpolate(video, video_noise, t), video)
        zt_a = torch.where(audio_loss_mask[..., None], interpolate(audio, audio_noise, t), audio)
        # 2. caption features; dropped samples get the null caption (all-zero features)
        text = self.text_encoder(ids, segment, position) * text_keep[:, None, None].to(video.dtype)
        # 3. both towers' velocities
        v_v, v_a = self.denoiser(zt_v, zt_a, text, t, **denoiser_inputs)
        # 4. loss on latent tokens only: w_v * video + w_a * audio (MAVIN appendix C.2)
        video_loss = masked_mse(v_v, velocity_target(video, video_noise), video_loss_mask)
        audio_loss = masked_mse(v_a, velocity_target(audio, audio_noise), audio_loss_mask)
        loss = fc.video_weight * video_loss + fc.audio_weight * audio_loss
        return {"loss": loss, "video_loss": video_loss.detach(), "audio_loss": audio_loss.detach()}

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample_latents(
        self,
        batch: Batch,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        masks: dict | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Euler ODE from noise at t = 1 to latents at t = 0; anchors stay fixed."""
        fc = self.config.flow
        steps = steps or fc.sample_steps
        guidance = fc.guidance if guidance is None else guidance
        text = self.encode_text(batch)
        null = torch.zeros_like(text)
        masks = masks if masks is not None else batch.dense_masks()
        eps_v = self.video_noise(batch, generator)
        eps_a = _draw(torch.randn, batch.audio.shape, generator, batch.audio.device)
        z_v = torch.where(batch.video_loss_mask[..., None], eps_v, batch.video)
        z_a = torch.where(batch.audio_loss_mask[..., None], eps_a, batch.audio)

        def velocity(zv: Tensor, za: Tensor, t: Tensor, null_caption: bool):
            return self.denoiser(**batch.denoiser_inputs(zv, za, null if null_caption else text, t, masks))

        return euler_sample(velocity, z_v, z_a, batch.video_loss_mask, batch.audio_loss_mask, steps, guidance, fc.shift)

    @torch.no_grad()
    def decode(self, batch: Batch, video: Tensor, audio: Tensor) -> list[GeneratedClip]:
        """Latent tokens (B, Nv, Dv), (B, Na, Da) -> frames and waveforms per clip."""
        p = self.config.denoiser.patch_size
        out = []
        for b, meta in enumerate(batch.clips):
            z = unpatchify(video[b, : meta.video_tokens].cpu().float(), meta.latent_shape, p)
            frames = self.video_codec.decode(z[None].to(self.codec_device))[0]
            wave = self.audio_codec.decode(audio[b : b + 1, : meta.audio_tokens].to(self.codec_device), meta.num_samples)[0]
            out.append(
                GeneratedClip(
                    meta.layout.caption.clip_id,
                    tensor_to_frames(frames),
                    tensor_to_audio(wave),
                    self.config.video_codec.fps,
                    self.config.audio_codec.sample_rate,
                )
            )
        return out

    @torch.no_grad()
    def generate(
        self,
        clips: list[ClipInput],
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        device=None,
    ) -> list[GeneratedClip]:
        """Captions (+ reference media) -> generated frames and audio."""
        batch = self.prepare_batch(clips)
        if device is not None:
            batch = batch.to(device)
        z_v, z_a = self.sample_latents(batch, steps, guidance, generator)
        return self.decode(batch, z_v, z_a)


# --------------------------------------------------------------------------- building / checkpoints


def build_model(name_or_config: str | ModelConfig, device=None, load_pretrained: bool = True) -> MavinModel:
    """A model from a preset name or a config."""
    cfg = preset(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return MavinModel(cfg, device=device, load_pretrained=load_pretrained)


def save_checkpoint(model: MavinModel, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the trainable weights and the config (JSON metadata) to one safetensors file.
    ``metadata`` adds string entries (lineage ids: run id, dataset digest, commit)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"format": CHECKPOINT_FORMAT, "config": model.config.to_json()}
    for k, v in (metadata or {}).items():
        if k in meta:
            raise ValueError(f"checkpoint metadata key '{k}' is reserved; use another name")
        meta[k] = str(v)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is not a readable safetensors file ({exc}); write it with save_checkpoint") from None
    if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
        raise ValueError(f"checkpoint {path} has no mavin-ops model metadata (format '{meta.get('format')}'); write it with save_checkpoint")
    return meta


def load_checkpoint(path: str | Path, device=None, load_pretrained: bool = True) -> MavinModel:
    """Rebuild the model from the config stored in the file and load its weights (strict)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_metadata(path)
    try:
        config = ModelConfig.from_json(meta["config"])
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path}: its config does not parse ({exc})") from None
    model = MavinModel(config, device=device, load_pretrained=load_pretrained)
    state = load_file(str(path), device=str(device) if device is not None else "cpu")
    own = model.trainable_state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise ValueError(f"checkpoint {path}: weights do not match its config ({what}); the file is damaged or was edited")
    model.load_state_dict(state, strict=False)
    return model

"""Latent interfaces: exact patch video codec, DCT audio codec, and pretrained conv VAEs
loaded from local safetensors files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mavin_ops.model.codecs import (
    AudioCodecConfig,
    ConvAudioVAE,
    ConvVideoVAE,
    VideoCodecConfig,
    dct_matrix,
    frames_to_tensor,
    tensor_to_frames,
)


def test_patch_video_codec_is_exact_and_causal():
    codec = VideoCodecConfig(kind="patch", spatial_stride=4).build()
    frames = np.random.default_rng(0).integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    z = codec.encode(x)
    assert z.shape == (1, 192, 5, 8, 8) == (1, *codec.latent_shape(17, 32, 32))
    assert np.array_equal(tensor_to_frames(codec.decode(z)[0]), frames)
    # first frame alone, then groups of 4: frame 5 lives in latent step 2 only
    x2 = x.clone()
    x2[:, 5] = 0.0
    changed = (codec.encode(x2) != z).flatten(3).any(-1).any(1)[0]
    assert changed.tolist() == [False, False, True, False, False]
    # the replicated first frame: latent step 0 holds frame 0 four times
    assert torch.equal(z[0, :48, 0], z[0, 48:96, 0])


def test_video_latent_times_and_errors():
    codec = VideoCodecConfig(kind="patch", fps=8.0).build()
    torch.testing.assert_close(codec.latent_times(17), torch.tensor([0.0625, 0.375, 0.875, 1.375, 1.875]))
    assert codec.num_frames(5) == 17
    with pytest.raises(ValueError, match="video has 18 frames; the video codec needs 4k\\+1 frames .* e.g. 17 or 21"):
        codec.latent_shape(18, 32, 32)
    with pytest.raises(ValueError, match="frame size 30x32 is not divisible by the video codec's spatial stride 4"):
        codec.latent_shape(17, 30, 32)


def test_dct_audio_codec():
    cfg = AudioCodecConfig(kind="dct", sample_rate=8000, hop=320, latent_channels=320, scale=2.0)
    codec = cfg.build()
    d = dct_matrix(320)
    torch.testing.assert_close(d @ d.T, torch.eye(320), atol=1e-5, rtol=0)
    assert cfg.latent_rate == 25.0
    x = torch.randn(1, 17000) * 0.1
    z = codec.encode(x)
    assert z.shape == (1, 54, 320) == (1, *codec.latent_shape(17000))
    torch.testing.assert_close(codec.decode(z, 17000), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(codec.latent_times(17000)[:2], torch.tensor([0.02, 0.06]))
    # low-pass variant: a signal made of the kept basis functions is reconstructed exactly
    low = AudioCodecConfig(kind="dct", hop=320, latent_channels=64).build()
    coeffs = torch.randn(1, 3, 64)
    signal = (coeffs @ d[:64]).reshape(1, -1)
    torch.testing.assert_close(low.encode(signal), coeffs, atol=1e-5, rtol=0)
    torch.testing.assert_close(low.decode(low.encode(signal)), signal, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="latent_channels=400 must be in 1..hop"):
        AudioCodecConfig(kind="dct", hop=320, latent_channels=400).build()


def _save(module: torch.nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def test_pretrained_video_vae_loads_from_local_file(tmp_path):
    cfg = VideoCodecConfig(kind="vae", spatial_stride=4, latent_channels=8, hidden_channels=16, num_res_blocks=1)
    torch.manual_seed(0)
    source = ConvVideoVAE(cfg)
    path = _save(source, tmp_path / "video_vae.safetensors")
    codec = VideoCodecConfig(**{**cfg.__dict__, "weights": path}).build()
    assert not any(p.requires_grad for p in codec.parameters())
    x = frames_to_tensor(np.random.default_rng(1).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8))
    z = codec.encode(x)
    assert z.shape == (1, 8, 3, 4, 4)
    torch.testing.assert_close(z, source.encode(x))
    assert codec.decode(z).shape == x.shape
    # causal: the last frames do not change the first latent step
    x2 = x.clone()
    x2[:, 5:] = 0.0
    torch.testing.assert_close(codec.encode(x2)[:, :, 0], z[:, :, 0])
    assert not torch.allclose(codec.encode(x2)[:, :, 2], z[:, :, 2])


def test_pretrained_audio_vae_loads_from_local_file(tmp_path):
    cfg = AudioCodecConfig(kind="vae", sample_rate=16000, hop=512, latent_channels=20, hidden_channels=32)
    torch.manual_seed(0)
    source = ConvAudioVAE(cfg)
    path = _save(source, tmp_path / "audio_vae.safetensors")
    codec = AudioCodecConfig(**{**cfg.__dict__, "weights": path}).build()
    x = torch.randn(1, 16000)
    z = codec.encode(x)
    assert z.shape == (1, 32, 20) and cfg.latent_rate == 31.25
    torch.testing.assert_close(z, source.encode(x))
    assert codec.decode(z, 16000).shape == (1, 16000)


def test_vae_loading_errors_are_one_line(tmp_path):
    cfg = VideoCodecConfig(kind="vae", latent_channels=8, hidden_channels=16)
    with pytest.raises(FileNotFoundError, match="video_codec.weights is empty; set it to a local .safetensors file"):
        cfg.build()
    with pytest.raises(FileNotFoundError, match="does not exist; point it at a local .safetensors file"):
        VideoCodecConfig(**{**cfg.__dict__, "weights": str(tmp_path / "nope.safetensors")}).build()
    other = ConvVideoVAE(VideoCodecConfig(kind="vae", latent_channels=8, hidden_channels=16, num_res_blocks=2))
    path = _save(other, tmp_path / "deeper.safetensors")
    with pytest.raises(ValueError, match=r"does not match the configured architecture: unexpected 'decoder.blocks.1.conv1.bias' \(\+7 more\); set video_codec to the sizes") as err:
        VideoCodecConfig(**{**cfg.__dict__, "weights": path, "num_res_blocks": 1}).build()
    assert "\n" not in str(err.value)
    wide = ConvVideoVAE(VideoCodecConfig(kind="vae", latent_channels=8, hidden_channels=24))
    path = _save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"'encoder.conv_in.weight' has shape \(24, 192, 1, 1, 1\), the config builds \(16, 192, 1, 1, 1\)"):
        VideoCodecConfig(**{**cfg.__dict__, "weights": path}).build()
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        VideoCodecConfig(**{**cfg.__dict__, "weights": str(tmp_path / "junk.safetensors")}).build()


def test_batch_tokens_decode_back_to_the_clip(kit):
    # prepare_batch -> tokens -> decode is the codec round trip (exact video, low-passed audio)
    model = kit.debug_model()
    clip = kit.two_shot_clip()
    batch = model.prepare_batch([clip])
    out = model.decode(batch, batch.video, batch.audio)[0]
    assert np.array_equal(out.frames, clip.video)
    codec = model.audio_codec
    expected = codec.decode(codec.encode(torch.as_tensor(clip.audio)[None]), len(clip.audio))[0].numpy()
    np.testing.assert_allclose(out.audio, expected, atol=1e-5)
    assert out.audio.shape == (17000,) and out.fps == 8.0 and out.sample_rate == 8000

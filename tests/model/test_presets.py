"""Presets, parameter counts, the checkpoint format, and the paper path (pretrained parts read
from local files, written small by the test)."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mavin_ops.model import ClipInput, ModelConfig, RoleReference, build_model, load_checkpoint, preset, save_checkpoint
from mavin_ops.model.codecs import ConvAudioVAE, ConvVideoVAE
from mavin_ops.model.text import T5Encoder


def test_paper_preset_on_meta_is_about_11b_and_allocates_nothing():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    model = build_model("paper", device="meta")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    counts = model.parameter_counts()
    assert abs(counts["denoiser"] - 11e9) <= 0.05 * 11e9, counts
    assert all(p.is_meta for p in model.parameters())
    assert grown_mib < 1024  # 11B fp32 weights would be 44 GB
    cfg = model.config.denoiser
    assert (cfg.depth, cfg.width, cfg.heads) == (30, 3072, 24)
    assert len(model.denoiser.blocks) == 30
    assert counts["text_encoder"] > 5e9  # a UMT5-XXL-sized frozen encoder, not counted in the 11B


def test_tiny_preset_size_and_tokens():
    model = build_model("tiny")
    counts = model.parameter_counts()
    assert 1.0e6 <= counts["trainable"] <= 3.1e6, counts
    cfg = model.config
    assert model.video_codec.latent_shape(17, 32, 32) == (192, 17, 4, 4)  # one step per frame: 17 x 16 = 272 video tokens
    assert model.audio_codec.latent_shape(17000) == (22, 60)  # 10 latents per second (0.1 s frames), 0-300 Hz
    assert cfg.video_token_dim <= cfg.denoiser.width and cfg.audio_token_dim <= cfg.denoiser.width
    assert cfg.denoiser.prediction == "data" and cfg.denoiser.audio_prediction == "data"  # clean-latent heads (JiT)


@pytest.mark.parametrize("name", ["debug", "tiny", "paper"])
def test_config_round_trips_through_json(name):
    cfg = preset(name)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.name == name


def test_config_errors():
    with pytest.raises(ValueError, match="unknown model preset 'huge'; use one of debug, tiny, paper"):
        preset("huge")
    data = json.loads(preset("debug").to_json())
    data["denoiser"]["widht"] = 3
    with pytest.raises(ValueError, match="config.denoiser: unknown field 'widht'"):
        ModelConfig.from_dict(data)
    with pytest.raises(ValueError, match="routing.self_attention_scope 'frame' is unknown"):
        preset("debug").replace(**{"routing.self_attention_scope": "frame"})


def _forward(model, batch):
    with torch.no_grad():
        return model(**model.training_inputs(batch, torch.Generator().manual_seed(3)))


def test_checkpoint_round_trip(kit, tmp_path):
    model = kit.debug_model(seed=4)
    batch = model.prepare_batch([kit.two_shot_clip()])
    path = save_checkpoint(model, tmp_path / "ckpt" / "model.safetensors", metadata={"run_id": "abc", "dataset_digest": "d1"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "mavin-ops/model" and meta["run_id"] == "abc"
    assert ModelConfig.from_json(meta["config"]) == model.config
    assert keys == set(model.trainable_state_dict()) and any(k.startswith("text_encoder.") for k in keys)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    a, b = _forward(model, batch), _forward(loaded.eval(), batch)
    assert torch.equal(a["loss"], b["loss"])
    with pytest.raises(ValueError, match="metadata key 'config' is reserved"):
        save_checkpoint(model, tmp_path / "x.safetensors", metadata={"config": "{}"})


def test_checkpoint_errors(kit, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="has no mavin-ops model metadata .* write it with save_checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    model = kit.debug_model()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state.pop("denoiser.proj_out.weight")
    save_file(state, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="weights do not match its config \\(missing 'denoiser.proj_out.weight'\\)"):
        load_checkpoint(tmp_path / "edited.safetensors")


def _one_shot_script(duration: float) -> dict:
    return {
        "clip_id": "paper-like",
        "duration": duration,
        "reference": [
            {"id": "R1", "category": "person", "semantic_description": "a man", "appearance_anchor": {"detail_description": "a man in a garden"}, "voice": "low", "reference_image": "r1.png", "reference_audio": "r1.wav"}
        ],
        "shot": [{"id": "S1", "time_range": [0.0, duration], "visual_description": "a man in a kitchen", "references_in_shot": ["R1"], "active_events": ["E1"]}],
        "event": [{"id": "E1", "type": "dialogue", "time_range": [0.1, 0.5], "speaker": "R1", "line": "the man"}],
        "global": {"scene_description": "a garden"},
    }


def test_paper_path_reads_pretrained_parts_from_local_files(kit, tmp_path):
    # The paper preset's structure (VAE codecs, frozen T5 encoder, unigram tokenizer) at toy
    # sizes: every pretrained part comes from a file written here; nothing is downloaded.
    small = preset("paper").replace(
        **{
            "video_codec.spatial_stride": 8,
            "video_codec.latent_channels": 8,
            "video_codec.hidden_channels": 16,
            "video_codec.num_res_blocks": 1,
            "video_codec.height": 32,
            "video_codec.width": 32,
            "audio_codec.hidden_channels": 16,
            "audio_codec.num_res_blocks": 1,
            "audio_codec.max_reference_seconds": 0.5,
            "text.width": 16,
            "text.depth": 1,
            "text.heads": 2,
            "text.head_dim": 8,
            "text.ffn_dim": 24,
            "denoiser.width": 32,
            "denoiser.heads": 2,
            "denoiser.depth": 1,
            "denoiser.ffn_dim": 64,
            "denoiser.time_dim": 32,
        }
    )
    pieces = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]] + [[f"▁{w}", -1.0] for w in "a man in the garden kitchen low".split()]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "unk_id": 2, "vocab": pieces}}))
    small = small.replace(**{"text.tokenizer_file": str(tmp_path / "tokenizer.json"), "text.vocab_size": len(pieces)})
    torch.manual_seed(0)
    parts = {
        "video_codec": ConvVideoVAE(small.video_codec),
        "audio_codec": ConvAudioVAE(small.audio_codec),
        "text": T5Encoder(small.text),
    }
    for name, module in parts.items():
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
        small = small.replace(**{f"{name}.weights": str(path)})

    model = build_model(small)
    assert model.parameter_counts()["trainable"] == model.parameter_counts()["denoiser"]  # frozen parts are not trained
    script = _one_shot_script(17 / 24)
    rng = np.random.default_rng(0)
    clip = ClipInput(
        kit.caption_of(script),
        video=rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8),
        audio=(0.1 * rng.standard_normal(int(round(17 / 24 * 16000)))).astype(np.float32),
        references={"R1": RoleReference(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), audio=(0.1 * rng.standard_normal(8000)).astype(np.float32))},
    )
    batch = model.prepare_batch([clip])
    assert batch.clips[0].video_tokens == 5 * 2 * 2  # 4x4 latent grid, patch 2
    assert batch.clips[0].layout.audio_anchors == (16,)  # 0.5 s at 31.25 latents/s
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(batch), parts["text"](**batch.text_inputs()))
    out = _forward(model, batch)
    assert torch.isfinite(out["loss"])

    # the checkpoint holds the denoiser only; loading reads the pretrained files again
    path = save_checkpoint(model, tmp_path / "paper-like.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert all(k.startswith("denoiser.") for k in f.keys())
    assert torch.equal(_forward(load_checkpoint(path), batch)["loss"], out["loss"])

    gen = model.generate([ClipInput(kit.caption_of(script), references=clip.references)], steps=1, generator=torch.Generator().manual_seed(0))[0]
    assert gen.frames.shape == (17, 32, 32, 3) and gen.frames.dtype == np.uint8
    assert gen.audio.shape == (int(round(17 / 24 * 16000)),) and gen.fps == 24.0


def test_generate_keeps_anchors_and_is_seeded(kit):
    model = kit.debug_model()
    clip = ClipInput(kit.caption_of(kit.two_shot_script()), references={"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)})
    batch = model.prepare_batch([clip])
    z_v, z_a = model.sample_latents(batch, steps=2, generator=torch.Generator().manual_seed(0))
    anchors = ~batch.video_loss_mask
    assert torch.equal(z_v[anchors], batch.video[anchors])  # references are conditioning, never denoised
    again, _ = model.sample_latents(batch, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z_v, again)
    out = model.generate([clip], steps=2, guidance=2.0, generator=torch.Generator().manual_seed(0))[0]
    assert out.frames.shape == (17, 16, 16, 3) and out.audio.shape == (17000,)
    assert np.isfinite(out.audio).all()


def test_clip_length_mismatch_is_a_clear_error(kit):
    model = kit.debug_model()
    video, audio = kit.random_media(0, frames=9)
    clip = ClipInput(kit.caption_of(kit.two_shot_script()), video=video, audio=audio, references={"R1": kit.random_reference(1), "R2": kit.random_reference(2)})
    with pytest.raises(ValueError, match=r"clip two-shots \(batch item 0\): the video has 9 frames \(1.125 s at 8 fps\) but the caption lasts 2.125 s"):
        model.prepare_batch([clip])


def test_public_api_resolves():
    import mavin_ops.model as pkg
    from mavin_ops.model import batch, codecs, config, dit, export, flow, masks, mavin, text

    for module in (pkg, batch, codecs, config, dit, export, flow, masks, mavin, text):
        for name in module.__all__:
            assert getattr(module, name, None) is not None, f"{module.__name__}.{name}"
    assert set(pkg.__all__) >= {"build_model", "prepare_batch", "save_checkpoint", "load_checkpoint", "ClipInput", "ModelConfig"}


def test_initialize_weights_is_adaln_zero(kit):
    # A fresh model: every block is the identity and both heads output zero velocity.
    model = build_model("debug").eval()
    batch = model.prepare_batch([kit.two_shot_clip()])
    d = model.denoiser
    with torch.no_grad():
        text = model.encode_text(batch)
        out_v, out_a = d(**batch.denoiser_inputs(batch.video, batch.audio, text, torch.tensor([0.5])))
        assert torch.equal(out_v, torch.zeros_like(out_v)) and torch.equal(out_a, torch.zeros_like(out_a))
        x, a = d.patch_embed(batch.video), d.audio_patch_embed(batch.audio)
        masks = {k.removesuffix("_mask"): v for k, v in batch.dense_masks().items()}
        masks["va"] = masks["av"].transpose(1, 2)
        mod = torch.zeros(1, 2, 12, d.config.width)
        ropes = {k: None for k in ("video", "audio", "video_time", "audio_time")}
        x2, a2 = d.blocks[0](x, a, d.text_embed(text), mod, mod, batch.video_role >= 0, batch.audio_role >= 0, masks, ropes)
        assert torch.equal(x2, x) and torch.equal(a2, a)
    gates = d.time_modulation.weight.view(14, d.config.width, -1)[2::3]
    assert torch.equal(gates, torch.zeros_like(gates))

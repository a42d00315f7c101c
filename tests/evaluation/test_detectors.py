"""Detectors and feature extractors: the weight-free defaults on numpy-built clips, the
registry and its errors, and the model-file path with a tiny ONNX model and a tiny
TorchScript model built by the tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mavin_ops.evaluation import detectors as D
from mavin_ops.evaluation.metrics import cosine


# --------------------------------------------------------------------------- cuts


def test_frame_difference_finds_exactly_the_cuts(kit, spec):
    frames, _ = kit.render(spec)
    assert D.FrameDifferenceCuts().detect(frames, kit.FPS) == [8, 16]


def test_frame_difference_ignores_small_motion(kit):
    # one shot, a sprite drifting one pixel per frame: no cut
    frames = np.zeros((17, 32, 32, 3), np.uint8)
    frames[:] = (120, 200, 220)
    for k in range(17):
        frames[k, 10:20, 5 + k // 2 : 11 + k // 2] = (200, 40, 40)
    assert D.FrameDifferenceCuts().detect(frames, 8) == []
    assert D.FrameDifferenceCuts().detect(frames[:1], 8) == []


def test_min_shot_frames_keeps_the_strongest_of_close_cuts():
    scores = np.array([0.0, 30.0, 50.0, 0.0, 0.0, 0.0, 40.0])  # differences at frames 1..7
    assert D._peaks(scores, 20.0, 1, offset=1) == [2, 3, 7]
    assert D._peaks(scores, 20.0, 3, offset=1) == [3, 7]


# --------------------------------------------------------------------------- speech


def test_speech_is_exact_and_sfx_noise_is_not_speech(kit, spec):
    _, wav = kit.render(spec)
    assert D.EnergyHarmonicitySpeech().detect(wav, kit.SR) == [(0.5, 1.5), (2.1, 2.6)]


def test_noise_burst_alone_and_ambient_are_not_speech(kit):
    rng = np.random.default_rng(3)
    wav = (0.003 * rng.standard_normal(kit.SR * 2)).astype(np.float32)
    assert D.EnergyHarmonicitySpeech().detect(wav, kit.SR) == []
    wav[4000:8000] += (0.12 * rng.standard_normal(4000)).astype(np.float32)  # loud, not periodic
    assert D.EnergyHarmonicitySpeech().detect(wav, kit.SR) == []
    quiet = kit.harmonic(150.0, kit.SR, rms=0.003)  # periodic but below the level (a hum)
    assert D.EnergyHarmonicitySpeech().detect(quiet, kit.SR) == []


def test_pauses_shorter_than_min_gap_are_filled(kit):
    wav = np.zeros(kit.SR * 2, np.float32)
    wav[800:4000] = kit.harmonic(180.0, 3200)
    wav[4400:8000] = kit.harmonic(180.0, 3600)  # a 0.05 s pause at 0.5 s
    assert D.EnergyHarmonicitySpeech().detect(wav, kit.SR) == [(0.1, 1.0)]
    assert D.EnergyHarmonicitySpeech(min_gap=0.0).detect(wav, kit.SR) == [(0.1, 0.5), (0.55, 1.0)]


def test_frame_analysis_finds_f0_without_octave_errors(kit):
    for f0 in (95.0, 150.0, 233.0, 300.0):
        fa = D.frame_analysis(kit.harmonic(f0, kit.SR), kit.SR)
        assert np.nanmedian(fa.f0) == pytest.approx(f0, rel=0.01)
        assert np.median(fa.harmonicity) > 0.95


# --------------------------------------------------------------------------- voice


@pytest.mark.parametrize("cents", [0.0, 50.0, 100.0, 200.0])
def test_pitch_voice_similarity_has_the_closed_form(kit, cents):
    v = D.PitchVoice()
    a = v.embed(kit.harmonic(160.0, kit.SR), kit.SR)
    b = v.embed(kit.harmonic(160.0 * 2 ** (cents / 1200), kit.SR), kit.SR)
    assert cosine(a, b) == pytest.approx(math.exp(-(cents**2) / (4 * v.sigma**2)), abs=0.01)


def test_pitch_voice_is_none_without_voice(kit):
    rng = np.random.default_rng(0)
    assert D.PitchVoice().embed((0.1 * rng.standard_normal(kit.SR)).astype(np.float32), kit.SR) is None
    assert D.PitchVoice().embed(np.zeros(10, np.float32), kit.SR) is None


# --------------------------------------------------------------------------- visual features


def test_colour_feature_cosine_has_the_closed_form():
    f = D.ColourFeatures()
    a, b = np.array([200.0, 40.0, 40.0]), np.array([170.0, 70.0, 40.0])
    want = math.exp(-float((a - b) @ (a - b)) / (4 * f.sigma**2))
    assert cosine(f.embed_colours([a]), f.embed_colours([b])) == pytest.approx(want, abs=1e-6)
    assert f.features(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4), bool)).size == 0


def test_dominant_colours_ignore_proportions():
    f = D.ColourFeatures(statistic="dominant", colours=2)
    wide = np.zeros((1, 8, 8, 3), np.uint8)
    wide[:] = (120, 200, 220)
    wide[:, ::4] = (60, 100, 110)  # 1 row in 4
    close = wide.copy()
    close[:, ::2] = (60, 100, 110)  # 1 row in 2: other proportions, same two colours
    assert cosine(f.features(wide), f.features(close)) == pytest.approx(1.0)


def test_mean_look_ignores_a_flash_on_a_minority_of_frames():
    f = D.ColourFeatures(statistic="mean")
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    frames[:] = (200, 40, 40)
    frames[2] = (240, 240, 240)  # the object flashes on one frame
    assert np.allclose(f.representative(frames)[0], (200, 40, 40))
    frames[3] = (240, 240, 240)
    frames[4] = (240, 240, 240)  # now the flash is the majority
    assert np.allclose(f.representative(frames)[0], (240, 240, 240))
    tie = frames[:4].copy()  # 2 at rest (first), 2 flashing: the earliest group wins
    assert np.allclose(f.representative(tie)[0], (200, 40, 40))


def test_colour_texture_weights_add_up():
    f = D.ColourTextureFeatures(texture_weight=0.3)
    a = np.zeros((1, 8, 8, 3), np.uint8)
    a[:] = (200, 40, 40)
    b = a.copy()
    b[:] = (40, 40, 200)  # other colour bin, same (flat) texture
    assert cosine(f.features(a), f.features(b)) == pytest.approx(0.3)


# --------------------------------------------------------------------------- registry


def test_build_suite_defaults_and_resolved_config():
    suite = D.build_suite()
    assert isinstance(suite.cuts, D.FrameDifferenceCuts)
    assert isinstance(suite.speech, D.EnergyHarmonicitySpeech)
    assert isinstance(suite.look, D.ColourFeatures) and suite.look.statistic == "mean"
    assert suite.shot_features.statistic == "dominant"
    assert suite.config["voice"] == {"name": "pitch"}
    s2 = D.build_suite({"cuts": {"name": "frame_difference", "threshold": 3.0}, "look": "colour_texture"})
    assert s2.cuts.threshold == 3.0 and isinstance(s2.look, D.ColourTextureFeatures)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"faces": {"name": "x"}}, r"detectors\.faces: unknown detector kind"),
        ({"cuts": {"name": "transnet"}}, r"detectors\.cuts\.name: unknown cuts detector 'transnet'; available: frame_difference, model"),
        ({"cuts": {"name": "frame_difference", "treshold": 3}}, r"detectors\.cuts\.treshold: unknown option.*threshold"),
        ({"look": {"statistic": "mean"}}, r"detectors\.look: no 'name'"),
        ({"look": {"name": "colour", "statistic": "max"}}, r"detectors\.look: bad options for 'colour'"),
    ],
)
def test_bad_detector_config_is_one_clear_line(config, match):
    with pytest.raises(D.DetectorConfigError, match=match) as err:
        D.build_suite(config)
    assert "\n" not in str(err.value)


def test_register_a_custom_detector():
    @D.register("cuts", name="every_fourth")
    class EveryFourth:
        def detect(self, frames, fps):
            return list(range(4, frames.shape[0], 4))

    try:
        det = D.build_detector("cuts", {"name": "every_fourth"})
        assert det.detect(np.zeros((9, 2, 2, 3), np.uint8), 8) == [4, 8]
    finally:
        del D.REGISTRY["cuts"]["every_fourth"]


# --------------------------------------------------------------------------- model files


@pytest.mark.parametrize("kind", ["look", "shot_features"])
def test_onnx_image_embedder_runs_with_onnxruntime(onnx_mean_colour, kind):
    path = onnx_mean_colour
    det = D.build_detector(kind, {"name": "model", "path": str(path), "size": 8})
    assert isinstance(det, D.ModelFeatureExtractor) and det.model.backend == "onnx"
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    frames[:, :, :8] = (200, 40, 40)
    frames[:, :, 8:] = (40, 40, 200)
    # whole frame: mean of both halves; masked to the left half: the red only
    assert det.features(frames) == pytest.approx(np.array([120, 40, 120]) / 255.0, abs=1e-3)
    mask = np.zeros((2, 16, 16), bool)
    mask[:, :, :8] = True
    assert det.features(frames, mask) == pytest.approx(np.array([200, 40, 40]) / 255.0, abs=1e-3)
    assert cosine(det.features(frames, mask), det.features(frames, ~mask)) == pytest.approx(
        cosine(np.array([200, 40, 40.0]), np.array([40, 40, 200.0])), abs=1e-4
    )


def test_torchscript_cut_detector(tmp_path, kit, spec):
    torch = pytest.importorskip("torch")

    class Cuts(torch.nn.Module):
        def forward(self, x):  # (1, F, H, W, 3) -> (1, F): 1 where a frame differs from the last
            d = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4))
            return torch.cat([torch.zeros_like(d[:, :1]), (d > 8.0).float()], dim=1)

    path = tmp_path / "cuts.pt"
    torch.jit.script(Cuts()).save(str(path))
    det = D.build_detector("cuts", {"name": "model", "path": str(path), "size": [32, 32]})
    assert det.model.backend == "torchscript"
    frames, _ = kit.render(spec)
    assert det.detect(frames, kit.FPS) == [8, 16]


@pytest.mark.parametrize("kind", ["cuts", "speech", "shot_features", "look", "voice"])
def test_missing_model_file_is_an_error_naming_file_and_key(tmp_path, kind):
    missing = tmp_path / "weights" / "absent.onnx"
    with pytest.raises(D.DetectorConfigError) as err:
        D.build_suite({kind: {"name": "model", "path": str(missing)}})
    msg = str(err.value)
    assert str(missing) in msg and f"detectors.{kind}.path" in msg and "\n" not in msg


def test_model_file_with_unknown_format_or_no_path(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\0")
    with pytest.raises(D.DetectorConfigError, match="neither .onnx nor a TorchScript"):
        D.build_detector("look", {"name": "model", "path": str(bad)})
    with pytest.raises(D.DetectorConfigError, match=r"detectors\.voice\.path: no model file given"):
        D.build_detector("voice", {"name": "model"})
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(D.DetectorConfigError, match="cannot load ONNX model"):
        D.build_detector("look", {"name": "model", "path": str(broken)})


def test_pixel_noise_is_not_a_cut(kit, spec):
    """A generated video flickers: independent noise of std 10 on every pixel and frame
    (mean |difference| 11 per pixel, above the threshold) must not cut every frame."""
    frames, _ = kit.render(spec)
    noisy = np.clip(frames + np.random.default_rng(0).normal(0, 10, frames.shape), 0, 255).astype(np.uint8)
    assert np.abs(noisy[1:].astype(int) - noisy[:-1]).mean() > 8.0
    assert D.FrameDifferenceCuts().detect(noisy, kit.FPS) == [8, 16]
    # without block averaging the flicker is as large as a cut
    assert len(D.FrameDifferenceCuts(block=1, relative=0.0).detect(noisy, kit.FPS)) > 10


def test_relative_floor_ignores_uniform_flicker():
    d = D.FrameDifferenceCuts(block=1, threshold=8.0, relative=2.0)
    frames = np.zeros((12, 4, 4, 3), np.uint8)
    frames[1::2] = 10  # every step differs by 10: above 8, but it is the clip's normal level
    frames[6:] += 100  # one real cut at frame 6
    assert d.detect(frames, 8) == [6]

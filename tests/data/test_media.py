"""Media I/O: lossless, deterministic round trips and load_clip."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from mavin_ops.data import media


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames(seed: int = 0, n: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # (F, H, W, 3)


def test_video_round_trip_is_lossless_and_bytes_are_deterministic(tmp_path: Path) -> None:
    frames = _frames()
    audio = (0.3 * np.sin(2 * np.pi * 200 * np.arange(9000) / 8000)).astype(np.float32)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    media.write_video(a, frames, 8, audio, 8000)
    media.write_video(b, frames, 8, audio, 8000)
    assert _sha(a) == _sha(b)
    got, fps = media.read_video(a)
    assert fps == 8 and isinstance(fps, int)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    assert np.array_equal(got, frames)
    # One changed pixel value changes the file.
    frames2 = frames.copy()
    frames2[4, 7, 7, 1] ^= 1
    media.write_video(b, frames2, 8, audio, 8000)
    assert _sha(a) != _sha(b)
    assert np.array_equal(media.read_video(b)[0], frames2)


def test_video_carries_an_aac_track_only_when_audio_is_given(tmp_path: Path) -> None:
    frames = _frames(1, 5)
    media.write_video(tmp_path / "v.mp4", frames, 8)
    media.write_video(tmp_path / "av.mp4", frames, 8, np.zeros(5000, np.float32), 8000)
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert len(c.streams.audio) == 0
        assert c.streams.video[0].codec_context.name == "h264"
    with av.open(str(tmp_path / "av.mp4")) as c:
        (a,) = c.streams.audio
        assert a.codec_context.name == "aac" and a.sample_rate == 8000
        assert "creation_time" not in c.metadata


@pytest.mark.parametrize(
    "frames, fragment",
    [
        (np.zeros((3, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((3, 31, 32, 3), np.uint8), "even"),
        (np.zeros((32, 32, 3), np.uint8), "(F, H, W, 3)"),
    ],
)
def test_write_video_rejects_bad_frames_naming_the_file(tmp_path: Path, frames: np.ndarray, fragment: str) -> None:
    with pytest.raises(media.MediaError, match="bad.mp4") as exc:
        media.write_video(tmp_path / "bad.mp4", frames, 8)
    assert fragment in str(exc.value)


def test_wav_round_trip_is_exact_after_16_bit_quantisation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wave = rng.uniform(-1.2, 1.2, 4001).astype(np.float32)
    media.write_wav(tmp_path / "a.wav", wave, 8000)
    got, sr = media.read_wav(tmp_path / "a.wav")
    assert sr == 8000 and got.dtype == np.float32 and got.shape == wave.shape
    clipped = np.clip(wave, -1, 1)
    assert np.max(np.abs(got - clipped)) <= 0.5 / 32767 + 1e-7
    assert got.max() <= 1.0 and got.min() >= -1.0
    # A waveform already on the 16-bit grid comes back bit-exact, and rewriting it gives the same bytes.
    media.write_wav(tmp_path / "b.wav", got, 8000)
    again, _ = media.read_wav(tmp_path / "b.wav")
    assert np.array_equal(again, got)
    assert _sha(tmp_path / "a.wav") == _sha(tmp_path / "b.wav")


def test_wav_rejects_stereo_and_non_finite(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError, match="1-D"):
        media.write_wav(tmp_path / "s.wav", np.zeros((2, 10), np.float32), 8000)
    with pytest.raises(media.MediaError, match="NaN"):
        media.write_wav(tmp_path / "n.wav", np.array([0.0, np.nan], np.float32), 8000)
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(media.MediaError, match="junk.wav"):
        media.read_wav(tmp_path / "junk.wav")


def test_png_round_trip_is_exact_and_deterministic(tmp_path: Path) -> None:
    img = _frames(2, 1)[0]
    media.write_png(tmp_path / "a.png", img)
    media.write_png(tmp_path / "b.png", img)
    assert _sha(tmp_path / "a.png") == _sha(tmp_path / "b.png")
    got = media.read_png(tmp_path / "a.png")
    assert got.dtype == np.uint8 and np.array_equal(got, img)


def test_load_clip_returns_consistent_shapes(debug_dataset: Path, synth_debug_rows: list[dict]) -> None:
    for row in synth_debug_rows:
        clip = media.load_clip(debug_dataset, row, verify=True)
        F = row["num_frames"]
        assert clip.id == row["id"] and clip.split == row["split"]
        assert clip.frames.shape == (F, 32, 32, 3) and clip.frames.dtype == np.uint8
        assert clip.fps == 8 and clip.sample_rate == 8000
        assert clip.waveform.dtype == np.float32 and clip.waveform.shape == (F * 1000,)
        assert clip.duration == pytest.approx(clip.script.duration)
        assert clip.script.clip_id == row["id"]
        roles = {e.id for e in clip.script.customized_roles()}
        assert set(clip.ref_images) | set(clip.ref_audio) == roles
        for img in clip.ref_images.values():
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        for w in clip.ref_audio.values():
            assert w.shape == (12000,) and w.dtype == np.float32
        # The wav is the exact audio: it is the file's PCM, not the mp4's lossy AAC.
        exact, _ = media.read_wav(debug_dataset / row["audio"])
        assert np.array_equal(clip.waveform, exact)


def test_load_clip_errors_name_the_clip_and_the_file(tmp_path: Path, debug_dataset: Path, synth_debug_rows: list[dict]) -> None:
    root = tmp_path / "copy"
    shutil.copytree(debug_dataset, root)
    row = synth_debug_rows[0]
    cid = row["id"]

    (root / row["audio"]).unlink()
    with pytest.raises(media.MediaError, match=rf"clip {cid}: .*{row['audio']}.*missing"):
        media.load_clip(root, row)

    escaping = dict(row, video="../outside.mp4")
    with pytest.raises(media.MediaError, match=rf"clip {cid}: video: .*climbs out"):
        media.load_clip(root, escaping)

    shutil.copy(debug_dataset / row["audio"], root / row["audio"])
    wrong = dict(row, num_frames=row["num_frames"] + 4)
    with pytest.raises(media.MediaError, match=rf"clip {cid}: video '{row['video']}' has {row['num_frames']} frames"):
        media.load_clip(root, wrong)

    (root / row["video"]).write_bytes(b"\x00" * 64)
    with pytest.raises(media.MediaError, match=rf"clip {cid}: video '{row['video']}'"):
        media.load_clip(root, row)
    with pytest.raises(media.MediaError, match=rf"clip {cid}: video file '{row['video']}' has sha256"):
        media.load_clip(root, row, verify=True)

    broken = copy.deepcopy(row)
    broken["script"]["shot"][0].pop("time_range")
    with pytest.raises(media.MediaError, match=rf"clip {cid}: manifest field 'script'.*time_range"):
        media.load_clip(debug_dataset, broken)

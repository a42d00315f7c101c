"""MAVINSet-mini generator: determinism, structure, grounding, and the audio-visual truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mavin_ops import mtss
from mavin_ops.data import manifest, media, synth

WINDOW = 80  # 10 ms at 8 kHz


def _rms_frames(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMS per 10 ms window and the window centres in seconds."""
    n = len(w) // WINDOW
    rms = np.sqrt((w[: n * WINDOW].reshape(n, WINDOW).astype(np.float64) ** 2).mean(axis=1))
    return rms, (np.arange(n) + 0.5) * WINDOW / 8000


def _harmonicity(x: np.ndarray, sr: int = 8000) -> tuple[float, float]:
    """(max normalised autocorrelation over 80-400 Hz lags, the pitch in Hz). The pitch lag
    is the shortest lag within 90 % of the best, which avoids octave errors (2T, 3T)."""
    x = x.astype(np.float64) - x.mean()
    lags = np.arange(sr // 400, sr // 80 + 1)
    r = np.array([(x[:-k] * x[k:]).sum() / np.sqrt((x[:-k] ** 2).sum() * (x[k:] ** 2).sum() + 1e-12) for k in lags])
    best = float(r.max())
    lag = int(lags[np.nonzero(r >= 0.9 * best)[0][0]])
    while lag + 1 <= lags[-1] and r[lag + 1 - lags[0]] > r[lag - lags[0]]:  # climb to the local peak
        lag += 1
    return best, sr / lag


@pytest.fixture(scope="module")
def memory_clips() -> list[synth.ClipData]:
    """40 tiny-preset clips made in memory (no files), enough to hold sfx, dialogue and
    customized roles."""
    cfg = synth.get_preset("tiny")
    out = []
    for s in range(10):
        rng = np.random.default_rng([7, s])
        src = synth.make_source(rng, f"t{s}")
        out += [synth.make_clip(rng, cfg, src, f"m{s}_{k}") for k in range(4)]
    return out


# --------------------------------------------------------------------------- dataset files


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path, debug_dataset: Path) -> None:
    again = synth.generate(tmp_path / "again", preset="debug", seed=0, progress=False)
    other = synth.generate(tmp_path / "other", preset="debug", seed=1, progress=False)
    assert again["clips"] == {"train": 4, "eval": 2} and other["clips"] == {"train": 4, "eval": 2}
    ref_manifest = (debug_dataset / manifest.MANIFEST).read_bytes()
    assert (tmp_path / "again" / manifest.MANIFEST).read_bytes() == ref_manifest
    files = sorted(p.relative_to(debug_dataset) for p in debug_dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for rel in files:
        assert manifest.sha256_file(debug_dataset / rel) == manifest.sha256_file(tmp_path / "again" / rel), rel
    assert (tmp_path / "other" / manifest.MANIFEST).read_bytes() != ref_manifest
    assert manifest.sha256_file(tmp_path / "other" / "clips/c000000.mp4") != manifest.sha256_file(debug_dataset / "clips/c000000.mp4")


def test_manifest_rows_are_grounded_and_within_preset_limits(debug_dataset: Path, synth_debug_rows: list[dict]) -> None:
    cfg = synth.get_preset("debug")
    assert len(synth_debug_rows) == cfg.train_clips + cfg.eval_clips
    assert len({r["id"] for r in synth_debug_rows}) == len(synth_debug_rows)
    for row in synth_debug_rows:
        script = mtss.parse_script(row["script"])
        assert mtss.grounding_issues(script, cfg.max_customized_roles) == []
        F = row["num_frames"]
        assert (F - 1) % 4 == 0 and F in cfg.frame_choices
        assert (row["fps"], row["width"], row["height"], row["sample_rate"]) == (8, 32, 32, 8000)
        assert script.duration == F / 8 and 2.0 <= script.duration <= 4.2
        assert cfg.min_shots <= len(script.shot) <= cfg.max_shots
        for shot in script.shot:  # frame-aligned cuts
            assert shot.time_range.start * 8 == int(shot.time_range.start * 8)
            assert shot.time_range.duration * 8 >= cfg.min_shot_frames
        for ev in script.event:
            if ev.type == "dialogue":  # decisecond timestamps
                for t in ev.time_range.to_json():
                    assert abs(t * 10 - round(t * 10)) < 1e-9
        assert len(script.customized_roles()) <= cfg.max_customized_roles


def test_splits_never_share_a_source(synth_debug_rows: list[dict]) -> None:
    by_split = {s: {r["source"] for r in synth_debug_rows if r["split"] == s} for s in manifest.SPLITS}
    assert by_split["train"] and by_split["eval"]
    assert not by_split["train"] & by_split["eval"]
    assert {r["split"] for r in synth_debug_rows} == set(manifest.SPLITS)


def test_manifest_sha256_matches_every_file_and_nothing_is_orphaned(debug_dataset: Path, synth_debug_rows: list[dict]) -> None:
    cited = set()
    for row in synth_debug_rows:
        paths = manifest.media_paths(row)
        assert set(paths) == set(row["sha256"])
        for rel in paths:
            assert manifest.sha256_file(manifest.resolve_media(debug_dataset, rel)) == row["sha256"][rel]
            cited.add(rel)
    on_disk = {str(p.relative_to(debug_dataset)) for p in debug_dataset.rglob("*") if p.is_file()}
    assert on_disk - cited == {manifest.MANIFEST, "mavinset.json"}
    meta = json.loads((debug_dataset / "mavinset.json").read_text())
    assert meta["preset"] == "debug" and meta["seed"] == 0 and meta["clips"] == {"train": 4, "eval": 2}


def test_world_truth_matches_script_and_frames(debug_dataset: Path, synth_debug_rows: list[dict]) -> None:
    for row in synth_debug_rows:
        clip = media.load_clip(debug_dataset, row)
        world = row["world"]
        assert world["cuts"] == synth.script_cut_frames(clip.script, clip.fps)
        assert len(world["shots"]) == len(clip.script.shot)
        for shot, ws in zip(clip.script.shot, world["shots"]):
            f0, f1 = ws["frames"]
            assert (f0, f1) == (round(shot.time_range.start * 8), round(shot.time_range.end * 8))
            assert world["entities"][ws["bg"]]["kind"] == "scene"
            assert set(shot.references_in_shot) == {ws["bg"]} | {c["id"] for c in ws["chars"]}
            # The background's mean colour is what the frame shows outside the characters.
            img = clip.frames[f0].astype(np.float64)
            keep = np.ones(img.shape[:2], bool)
            for c in ws["chars"]:
                x0, y0, x1, y1 = c["box"]
                keep[y0:y1, x0:x1] = False
                assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32  # a visible, in-frame box
            if keep.sum() > 100:
                assert np.abs(img[keep].mean(axis=0) - np.array(ws["bg_rgb"])).max() < 30
        for ev in clip.script.event:
            if ev.type == "dialogue":
                assert ev.speaker in world["voices"]
        for rid, refs in world["refs"].items():
            ent = clip.script.entity(rid)
            assert ent.reference_image == refs["image"] and ent.reference_audio == refs.get("audio")


def test_cuts_are_where_the_script_says(debug_dataset: Path, synth_debug_rows: list[dict], memory_clips: list[synth.ClipData]) -> None:
    seen_cuts = 0
    pairs = [(media.load_clip(debug_dataset, r).frames, media.load_clip(debug_dataset, r).script) for r in synth_debug_rows]
    pairs += [(c.frames, c.script) for c in memory_clips]
    for frames, script in pairs:
        d = synth.frame_differences(frames)
        cuts = synth.script_cut_frames(script, 8)
        inside = np.ones(len(d), bool)
        inside[0] = False
        inside[cuts] = False
        if cuts:
            seen_cuts += len(cuts)
            assert d[cuts].min() >= synth.CUT_MIN_DIFF
            assert d[cuts].min() > 3 * max(d[inside].max(initial=0.0), 1.0)
        assert d[inside].max(initial=0.0) <= synth.INTRA_MAX_DIFF
        # A threshold detector between the two bounds recovers the script exactly.
        detected = [k for k in range(1, len(d)) if d[k] > (synth.CUT_MIN_DIFF + synth.INTRA_MAX_DIFF) / 2]
        assert detected == cuts
    assert seen_cuts >= 20


def test_speech_only_inside_dialogue_and_sfx_is_not_speech(debug_dataset: Path, synth_debug_rows: list[dict], memory_clips: list[synth.ClipData]) -> None:
    clips = [(media.load_clip(debug_dataset, r).waveform, media.load_clip(debug_dataset, r).script) for r in synth_debug_rows]
    clips += [(c.waveform, c.script) for c in memory_clips]
    n_dialogue = n_sfx = 0
    for wave, script in clips:
        rms, t = _rms_frames(wave)
        speech = np.zeros(len(t), bool)
        loud_ok = np.zeros(len(t), bool)  # windows touching an event: may be loud
        for ev in script.event:
            a, b = ev.time_range.start, ev.time_range.end
            loud_ok |= (t > a - 0.011) & (t < b + 0.011)
            if ev.type == "dialogue":
                n_dialogue += 1
                speech |= (t > a + 0.011) & (t < b - 0.011)
                for s in np.arange(a + 0.01, b - 0.05, 0.04):  # 40 ms windows: voiced
                    seg = wave[int(s * 8000) : int(s * 8000) + 320]
                    h, _ = _harmonicity(seg)
                    assert h > 0.7
            else:
                n_sfx += 1
                seg = wave[int(a * 8000) : int(a * 8000) + 320]
                h, _ = _harmonicity(seg)
                assert h < 0.5
                assert np.sqrt(np.mean(seg.astype(np.float64) ** 2)) > 10 * synth.AMBIENT_RMS
        if speech.any():
            assert rms[speech].min() > 0.03
        assert rms[~loud_ok].max() < 0.01  # only the ambient bed, ~30 dB below speech
        assert rms[~loud_ok].mean() == pytest.approx(synth.AMBIENT_RMS, rel=0.4)
    assert n_dialogue >= 20 and n_sfx >= 3


def test_voice_pitch_matches_world_f0_and_reference_voice(memory_clips: list[synth.ClipData]) -> None:
    checked = refs = 0
    for clip in memory_clips:
        voices = clip.world["voices"]
        for ev in clip.script.event:
            if ev.type != "dialogue":
                continue
            f0 = voices[ev.speaker]["f0"]
            mid = (ev.time_range.start + ev.time_range.end) / 2
            seg = clip.waveform[int(mid * 8000) - 160 : int(mid * 8000) + 160]
            _, pitch = _harmonicity(seg)
            # Contour +-7 % and syllable accents +-4 % around f0.
            assert abs(pitch - f0) / f0 < 0.15, (clip.clip_id, ev.id, pitch, f0)
            checked += 1
        for rid, wav in clip.ref_audio.items():
            assert wav.shape == (12000,)
            assert np.abs(wav[:1000]).max() == 0.0  # silence pad, then speech
            _, pitch = _harmonicity(wav[5840:6160])
            assert abs(pitch - voices[rid]["f0"]) / voices[rid]["f0"] < 0.15
            refs += 1
    assert checked >= 20 and refs >= 3


def test_reference_images_show_the_role_not_a_clip_frame(memory_clips: list[synth.ClipData]) -> None:
    n = 0
    for clip in memory_clips:
        for rid, img in clip.ref_images.items():
            n += 1
            assert img.shape == (32, 32, 3)
            assert tuple(img[0, 0]) == synth.NEUTRAL_BG and tuple(img[0, -1]) == synth.NEUTRAL_BG
            colour = tuple(clip.world["entities"][rid]["rgb"])
            assert (img.reshape(-1, 3) == colour).all(axis=1).sum() >= 6  # the identity colour is there
            for frame in clip.frames:  # a different pose and background: never a frame
                assert (frame != img).any(axis=-1).mean() > 0.5
    assert n >= 5


def test_text_describes_what_is_drawn_and_heard(memory_clips: list[synth.ClipData]) -> None:
    pitch_words = {w: (lo, hi) for w, lo, hi in synth.PITCHES}
    for clip in memory_clips:
        for ent in clip.script.reference:
            truth = clip.world["entities"][ent.id]
            colour_name = next(k for k, v in synth.PALETTE.items() if list(v) == truth["rgb"])
            assert colour_name in ent.semantic_description
            if ent.voice is not None:
                f0 = clip.world["voices"][ent.id]["f0"]
                word = ent.voice.removesuffix(" voice").rsplit(" ", 1)[0]
                lo, hi = pitch_words[word]
                assert lo <= f0 <= hi
                assert clip.world["voices"][ent.id]["timbre"] in ent.voice
        caption = mtss.compile_caption(clip.script)
        assert all(c.text for c in caption.captions())


def test_shot_pairs_share_characters_and_backgrounds(memory_clips: list[synth.ClipData]) -> None:
    char_pairs = bg_pairs = 0
    for clip in memory_clips:
        shots = clip.world["shots"]
        for i in range(len(shots)):
            for j in range(i + 1, len(shots)):
                char_pairs += bool({c["id"] for c in shots[i]["chars"]} & {c["id"] for c in shots[j]["chars"]})
                bg_pairs += shots[i]["bg"] == shots[j]["bg"]
    assert char_pairs >= 5 and bg_pairs >= 5


# --------------------------------------------------------------------------- generate()


def test_generate_refuses_non_empty_target_and_overwrites_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        synth.generate(out, preset="debug", progress=False)
    assert (out / "keep.txt").exists()
    summary = synth.generate(out, preset="debug", seed=3, overwrite=True, progress=True)
    assert not (out / "keep.txt").exists()
    assert "6/6 clips" in capsys.readouterr().err
    assert summary["files"] == sum(1 for p in out.rglob("*") if p.is_file())
    assert summary["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary sibling left


def test_a_crash_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.make_clip
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "make_clip", failing)
    with pytest.raises(RuntimeError, match="boom"):
        synth.generate(tmp_path / "ds", preset="debug", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_presets_are_typed_and_validated() -> None:
    assert set(synth.PRESETS) >= {"debug", "tiny"}
    debug, tiny = synth.get_preset("debug"), synth.get_preset("tiny")
    assert (debug.train_clips, debug.eval_clips, debug.max_shots) == (4, 2, 3)
    assert (tiny.train_clips, tiny.eval_clips, tiny.max_shots) == (256, 32, 4)
    assert synth.get_preset(tiny) is tiny
    with pytest.raises(ValueError, match="unknown MAVINSet-mini preset 'huge'.*debug"):
        synth.get_preset("huge")
    with pytest.raises(ValueError, match="not 4k\\+1"):
        synth.SynthConfig(name="bad", train_clips=1, eval_clips=1, frame_choices=(18,))
    with pytest.raises(ValueError, match="cannot hold"):
        synth.SynthConfig(name="bad", train_clips=1, eval_clips=1, frame_choices=(9,), max_shots=3)

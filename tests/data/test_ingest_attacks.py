"""``data ingest`` against footage and folders that broke it in a hostile review: audio that
starts late or outlasts the picture, a sidecar whose cuts are a few frames off, an entity id
that is no file name, an odd source that makes a detector fail, the output folder inside the
footage, and a tampered resume record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


from footage_kit import Shot, make_source

from mavin_ops.data import footage as fx
from mavin_ops import mtss
from mavin_ops.data import ingest, manifest, media


def _rows(out: Path) -> list[dict]:
    return [line.row for line in manifest.read_manifest(out)]


def _rejected(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]


def test_audio_laid_by_its_timestamps_keeps_speech_in_sync_and_uncovered_shots_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # Audio only from 2.5 s: the speech at 3.5 s must be measured at 3.5 s (not 1.0 s), and the
    # first shot, which the audio does not cover, is refused with the numbers.
    truth = make_source(src / "late.mkv", [Shot("shapes", 3.0, 0), Shot("shapes", 3.0, 1)], codec="libvpx-vp9",
                        container="matroska", audio="libopus", sample_rate=48000,
                        speech=[(3.5, 0, "The ship leaves at dawn.")], audio_span=(2.5, 6.0))
    out = tmp_path / "out"
    report = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    m = report["sources"]["late.mkv"]
    ((a, b),) = m["speech_s"]
    ((ta, tb),) = truth.speech_s
    assert abs(a - ta) <= 0.2 and abs(b - tb) <= 0.2, (m["speech_s"], truth.speech_s)
    reasons = [r["reason"] for r in _rejected(out)]
    assert any("[0.00, 3.00] s: audio covers only 0.50 s of the shot's 3.00 s" in r for r in reasons), reasons
    rows = _rows(out)
    assert rows and all(r["source_span"][0] >= 3.0 - 1e-6 for r in rows)
    # The clip's audio holds the line where its script says it is.
    row = rows[0]
    clip = media.load_clip(out, row)
    ev = next(e for e in mtss.parse_script(row["script"], clip_id=row["id"]).event if e.type == "dialogue")
    sr = clip.sample_rate
    inside = np.abs(clip.waveform[int(ev.time_range.start * sr) : int(ev.time_range.end * sr)]).mean()
    before = np.abs(clip.waveform[: max(1, int((ev.time_range.start - 0.1) * sr))]).mean()
    assert inside > 5 * before, (inside, before)


def test_an_intact_file_whose_audio_outlasts_its_picture_is_not_called_truncated(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "long.mkv", [Shot("shapes", 3.0, 0)], codec="libvpx-vp9", container="matroska", audio="libopus",
                sample_rate=48000, speech=[(0.5, 1, "It is colder than yesterday.")], audio_span=(0.0, 4.5))
    fo = fx.decode_footage(src / "long.mkv", (32, 32), 8000)
    assert fo.duration_s == pytest.approx(3.0, abs=0.05)
    assert fo.audio_spans[0][0] == pytest.approx(0.0, abs=0.03) and fo.audio_spans[-1][1] > 4.3
    assert len(fo.audio_out) == pytest.approx(fo.duration_s * 8000, abs=2)  # cut to the picture


def test_lay_audio_places_chunks_by_time_with_gaps_as_silence():
    sr = 1000
    ones = np.ones(100, np.float32)
    chunks = [(0.5, sr, ones), (0.6, sr, ones), (1.0, sr, 2 * ones), (None, sr, 3 * ones)]
    a16, aout, spans = fx._lay_audio(chunks, 0.0, 2.0, sr)
    assert spans == [(0.5, 0.7), (1.0, 1.2)]
    assert aout.shape == (2000,) and aout[:500].max() == 0 and aout[500:700].min() == 1 and aout[700:1000].max() == 0
    assert (aout[1000:1100] == 2).all() and (aout[1100:1200] == 3).all() and aout[1200:].max() == 0
    assert a16.shape == (32000,)
    # Video starting later than the audio: audio before the first frame is dropped.
    _, late, spans = fx._lay_audio([(0.0, sr, ones)], 0.05, 1.0, sr)
    assert spans == [(0.0, 0.05)] and late[:50].min() == 1 and late[50:].max() == 0


def test_sidecar_cuts_a_few_frames_off_land_on_the_detected_cut_and_ids_are_no_file_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "a.mp4", [Shot("face", 3.0), Shot("shapes", 2.5, 1)], speech=[(0.5, 0, "The ship leaves at dawn.")])
    m = ingest.measure(src / "a.mp4", ingest.IngestSettings(preset=ingest.get_preset("tiny")))[1]
    ((sa, sb),) = m["speech_s"]
    # The human's cut is 0.2 s late (inside the 0.25 s tolerance), and the speaker's id holds a
    # slash: it once became a sub-folder of refs/ and sank the whole ingest.
    human = {
        "clip_id": "a", "duration": 5.5,
        "reference": [{"id": "ANN/1", "category": "person", "semantic_description": "Ann",
                       "appearance_anchor": {"detail_description": "as filmed"}, "voice": "as recorded"}],
        "shot": [{"id": "S1", "time_range": [0.0, 3.2], "visual_description": "the face", "references_in_shot": ["ANN/1"],
                  "active_events": ["E1"]},
                 {"id": "S2", "time_range": [3.2, 5.5], "visual_description": "shapes", "references_in_shot": [], "active_events": []}],
        "event": [{"id": "E1", "type": "dialogue", "time_range": [sa, sb], "speaker": "ANN/1", "line": "The ship leaves at dawn."}],
        "global": {"scene_description": "x", "global_style": "footage", "global_audio": "speech"},
    }
    (src / "a.mtss.json").write_text(json.dumps(human))
    out = tmp_path / "out"
    ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    rows = _rows(out)
    assert rows and not any("ingest_issues" in r for r in rows), [r.get("ingest_issues") for r in rows]
    cut = next(tr["t"] for tr in m["transitions"])
    for row in rows:
        a, b = row["source_span"]
        starts = [s["time_range"][0] for s in row["script"]["shot"]]
        if a < cut < b:  # the shot edge sits on the detected cut's frame, not 0.2 s later
            assert len(starts) == 2 and starts[1] == pytest.approx(np.ceil((cut - a) * 8 - 1e-6) / 8), (a, cut, starts)
        else:  # a clip after the cut has no phantom sliver of the shot before it
            assert len(starts) == 1, (a, b, row["script"]["shot"])
        for ent in row["script"]["reference"]:
            for key in ("reference_image", "reference_audio"):
                if ent.get(key):
                    assert "/" not in ent[key][len("refs/"):] and (out / ent[key]).is_file()


def test_a_source_that_breaks_a_detector_is_refused_and_the_rest_ingested_then_retried(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "good.mp4", [Shot("shapes", 3.0, 0)], speech=[(0.5, 0, "The ship leaves at dawn.")])
    make_source(src / "odd.mp4", [Shot("shapes", 3.0, 2)], speech=[(0.5, 1, "Bring the lantern.")])
    real = fx.detect_shots
    odd_frames = fx.decode_footage(src / "odd.mp4", (32, 32), 8000).small

    def fragile(small, *args, **kw):
        if small.shape == odd_frames.shape and np.array_equal(small, odd_frames):
            raise RuntimeError("detector fell over")
        return real(small, *args, **kw)

    monkeypatch.setattr(fx, "detect_shots", fragile)
    out = tmp_path / "out"
    report = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    assert {r["source"] for r in _rows(out)} == {"good.mp4"}
    (line,) = [r for r in _rejected(out) if r["source"] == "odd.mp4"]
    assert "RuntimeError: detector fell over" in line["reason"]
    assert not list((out / "clips").glob(f"v{manifest.sha256_file(src / 'odd.mp4')[:12]}*"))
    assert report["counts"]["sources_ingested"] == 1
    # The failure is not remembered as a result: the next run tries it again and takes it.
    monkeypatch.setattr(fx, "detect_shots", real)
    again = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    assert again["counts"]["sources_resumed"] == 1 and {r["source"] for r in _rows(out)} == {"good.mp4", "odd.mp4"}


def test_an_output_folder_inside_the_footage_is_not_ingested_as_footage(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "a.mp4", [Shot("shapes", 3.0, 0)], speech=[(0.5, 0, "The ship leaves at dawn.")])
    out = src / "dataset"
    first = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    again = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)  # its clips/*.mp4 are not sources
    assert first["counts"]["videos"] == again["counts"]["videos"] == 1
    assert again["counts"]["sources_resumed"] == 1 and not any("dataset/" in r["source"] for r in _rejected(out))
    with pytest.raises(ingest.IngestError, match="inside the output folder"):
        ingest.ingest([out / "clips"], out, preset="tiny", workers=1, progress=False)


@pytest.mark.parametrize("attack", ["path", "shape", "failed"])
def test_a_tampered_resume_record_is_redone_not_trusted(tmp_path, attack):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "a.mp4", [Shot("shapes", 3.0, 0)], speech=[(0.5, 0, "The ship leaves at dawn.")])
    out = tmp_path / "out"
    ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    (state,) = (out / ".ingest" / "sources").glob("*.json")
    rec = json.loads(state.read_text())
    if attack == "path":  # a name read from storage that points outside the dataset
        row = rec["rows"][0]
        row["sha256"]["../src/a.mp4"] = manifest.sha256_file(src / "a.mp4")
    elif attack == "shape":
        rec["rows"] = {"not": "a list"}
    else:
        rec["failed"] = True
    state.write_text(json.dumps(rec))
    again = ingest.ingest([src], out, preset="tiny", workers=1, progress=False)
    assert again["counts"]["sources_resumed"] == 0 and len(_rows(out)) >= 1


def test_a_dialogue_line_the_vad_split_at_a_pause_is_one_utterance():
    cfg = ingest.IngestSettings(preset=ingest.get_preset("tiny"))
    script = mtss.parse_script({
        "clip_id": "a", "duration": 4.0,
        "reference": [{"id": "R1", "category": "person", "semantic_description": "x", "appearance_anchor": {"detail_description": "y"}}],
        "shot": [{"id": "S1", "time_range": [0.0, 4.0], "visual_description": "v", "references_in_shot": ["R1"], "active_events": ["E1"]}],
        "event": [{"id": "E1", "type": "dialogue", "time_range": [0.5, 2.5], "speaker": "R1", "line": "a long line, with a pause"}],
        "global": {"scene_description": "s", "global_style": "g", "global_audio": "a"},
    }, clip_id="a")
    m = {"transitions": [], "speech_s": [[0.5, 1.3], [1.6, 2.5]]}
    assert ingest.sidecar_disagreements(script, m, cfg) == []
    m["speech_s"] = [[0.5, 1.3]]  # the second half is missing: that still disagrees
    (why,) = [r for _, _, r in ingest.sidecar_disagreements(script, m, cfg)]
    assert "end by 1.20 s" in why


def test_files_joined_end_to_end_change_size_and_reset_their_clock_and_still_decode(tmp_path):
    a, b, ab = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "ab.ts"
    make_source(a, [Shot("shapes", 2.0, 0)], size=(320, 180), container="mpegts", speech=[(0.5, 0, "Hello there.")])
    make_source(b, [Shot("shapes", 2.0, 1)], size=(480, 360), container="mpegts", speech=[(0.5, 1, "Bring the lantern.")])
    ab.write_bytes(a.read_bytes() + b.read_bytes())  # MPEG-TS joins by concatenation
    fo = fx.decode_footage(ab, (32, 32), 8000)
    assert fo.small.shape[0] == fo.out.shape[0] == 100 and fo.duration_s == pytest.approx(4.0, abs=0.05)
    assert np.all(np.diff(fo.times) > 0)  # the second file's frames come after the first's
    assert [round(t.t, 2) for t in fx.detect_shots(fo.small, fo.times, fo.fps)] == [2.0]
    speech = fx.detect_speech(fo.audio16)
    assert len(speech) == 2 and speech[1][0] == pytest.approx(2.5, abs=0.2), speech  # the second line after the join


def test_a_flat_patch_the_face_detector_returns_is_not_a_face(monkeypatch):
    monkeypatch.setattr(fx, "detect_faces", lambda grey, settings: [(10, 10, 40, 40)])
    flat = np.full((180, 320, 3), 128, np.uint8)
    assert fx._sightings(flat, 0.0, (32, 32), fx.DetectorSettings()) == []
    flat[20:80, 20:80] = np.random.default_rng(0).integers(0, 255, (60, 60, 3))
    assert len(fx._sightings(flat, 0.0, (32, 32), fx.DetectorSettings())) == 1

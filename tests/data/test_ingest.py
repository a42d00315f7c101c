"""``data ingest`` on footage made here (tests/data/footage_kit.py): real codecs, sizes and
frame rates, hard cuts and a dissolve at known times, espeak-ng speech in two voices, a
photograph with a face, and the bad files a real folder holds."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest


from footage_kit import Shot, faststart, make_source

from mavin_ops import mtss
from mavin_ops.data import ingest, manifest, media, validate

VENV_BIN = Path(sys.executable).parent


def _human_script(stem: str, duration: float, cuts: list[float], dialogue: list[tuple[float, float, str]]) -> dict:
    edges = [0.0, *cuts, duration]
    shots = [{"id": f"S{i + 1}", "time_range": [edges[i], edges[i + 1]], "visual_description": f"human shot {i + 1}",
              "references_in_shot": [], "active_events": []} for i in range(len(edges) - 1)]
    events = []
    for k, (a, b, who) in enumerate(dialogue, start=1):
        events.append({"id": f"E{k}", "type": "dialogue", "time_range": [a, b], "speaker": who, "line": f"line {k}"})
        for s in shots:
            if min(b, s["time_range"][1]) > max(a, s["time_range"][0]):
                s["active_events"].append(f"E{k}")
    people = sorted({w for _, _, w in dialogue})
    return {"clip_id": stem, "duration": duration,
            "reference": [{"id": p, "category": "person", "semantic_description": f"the person {p}",
                           "appearance_anchor": {"detail_description": "as filmed"}, "voice": "as recorded",
                           # a hostile path: ingest never takes media paths from a sidecar
                           "reference_image": "../../../etc/passwd"} for p in people],
            "shot": shots, "event": events,
            "global": {"scene_description": "a human wrote this", "global_style": "footage", "global_audio": "speech"}}


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict:
    src = tmp_path_factory.mktemp("footage")
    truth = {}
    truth["talk.mp4"] = make_source(
        src / "talk.mp4", [Shot("face", 3.0), Shot("shapes", 2.0, 0), Shot("face", 2.5), Shot("shapes", 2.5, 1)],
        size=(320, 180), fps=25, dissolve_after={2: 1.0},
        speech=[(0.5, 0, "The ship leaves at dawn."), (3.4, 1, "Bring the lantern to the tower."), (6.0, 0, "I will wait by the harbour.")])
    (src / "sub").mkdir()
    truth["sub/scenes.mkv"] = make_source(
        src / "sub" / "scenes.mkv", [Shot("shapes", 3.0, 2), Shot("face", 3.0)], size=(426, 240), fps=30,
        codec="libvpx-vp9", container="matroska", audio="libopus", sample_rate=48000,
        speech=[(0.4, 1, "It is colder than yesterday."), (3.5, 0, "We should go home now.")])
    truth["quiet.mov"] = make_source(src / "quiet.mov", [Shot("shapes", 2.5, 1), Shot("shapes", 2.5, 0)], size=(640, 360),
                                     fps=Fraction(30000, 1001), codec="mjpeg", container="mov", audio="pcm_s16le")
    truth["scripted.mp4"] = make_source(src / "scripted.mp4", [Shot("shapes", 3.0, 0), Shot("shapes", 2.5, 2)],
                                        speech=[(0.5, 0, "Bring the lantern to the tower.")])
    # The human says the cut is at 2.0 s and the line ends a second late: both disagree.
    (src / "scripted.mtss.json").write_text(json.dumps(_human_script("scripted", 5.5, [2.0], [(0.5, 3.2, "R1")])))
    truth["noaudio.webm"] = make_source(src / "noaudio.webm", [Shot("shapes", 3.0, 1)], codec="libvpx", container="webm", audio=None)
    truth["black.mp4"] = make_source(src / "black.mp4", [Shot("shapes", 3.0, 0)], speech=[(0.5, 1, "Hello there.")])
    _blacken(src / "black.mp4")
    data = (src / "talk.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])  # index at the end: unreadable
    faststart(src / "talk.mp4", src / "web.mp4")
    data = (src / "web.mp4").read_bytes()
    (src / "web.mp4").write_bytes(data[: len(data) * 6 // 10])  # index first: opens, then breaks off
    (src / "notes.mp4").write_text("this is not a video\n")
    (src / "README.txt").write_text("footage for the ingest tests\n")
    out = tmp_path_factory.mktemp("ingested") / "ds"
    report = ingest.ingest([src], out, preset="tiny", workers=2, progress=False)
    rows = [line.row for line in manifest.read_manifest(out)]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    return {"src": src, "out": out, "truth": truth, "report": report, "rows": rows, "rejected": rejected}


def _blacken(path: Path) -> None:
    """Re-encode a source with every frame black (the audio kept)."""
    import av

    frames, fps = media.read_video(path)
    wav, rate = media.read_video_audio(path)
    media.write_video(path, np.zeros_like(frames), int(fps), wav, rate)
    del av


def test_hard_cuts_within_one_source_frame_and_the_dissolve_inside_its_span(footage):
    src = footage["report"]["sources"]
    for rel in ("talk.mp4", "sub/scenes.mkv", "quiet.mov"):
        truth, m = footage["truth"][rel], src[rel]
        hard = [t["t"] for t in m["transitions"] if t["kind"] == "hard"]
        assert len(hard) == len(truth.cuts_s), (rel, m["transitions"], truth.cuts_s)
        for got, want in zip(hard, truth.cuts_s):
            assert abs(got - want) <= 1.0 / m["fps"] + 1e-6, (rel, got, want)
        gradual = [t["t"] for t in m["transitions"] if t["kind"] == "gradual"]
        assert len(gradual) == len(truth.dissolves_s), (rel, m["transitions"])
        for got, (a, b) in zip(gradual, truth.dissolves_s):
            assert a <= got <= b, (rel, got, a, b)
        assert m["cuts_s"] == sorted(hard + gradual)


def test_speech_spans_within_a_fifth_of_a_second_and_two_voices_two_keys(footage):
    src = footage["report"]["sources"]
    for rel in ("talk.mp4", "sub/scenes.mkv"):
        truth, m = footage["truth"][rel], src[rel]
        assert len(m["speech_s"]) == len(truth.speech_s), (rel, m["speech_s"], truth.speech_s)
        for (a, b), (ta, tb) in zip(m["speech_s"], truth.speech_s):
            assert abs(a - ta) <= 0.2 and abs(b - tb) <= 0.2, (rel, (a, b), (ta, tb))
        # The same voice gets the same key, another voice another key.
        keys = m["speech_speaker"]
        assert m["speakers"] == len(set(truth.speakers)) == 2
        for i in range(len(keys)):
            for j in range(len(keys)):
                assert (keys[i] == keys[j]) == (truth.speakers[i] == truth.speakers[j]), (rel, keys, truth.speakers)
    assert src["quiet.mov"]["speech_s"] == [] and src["quiet.mov"]["speakers"] == 0


def test_faces_seen_only_where_the_photograph_is(footage):
    m, truth = footage["report"]["sources"]["talk.mp4"], footage["truth"]["talk.mp4"]
    assert m["people"] == 1
    times = [f["t"] for f in m["faces"]]
    assert times, "no face found in the photograph shots"
    face_spans = truth.face_shots + [(a, b) for a, b in truth.dissolves_s]  # the dissolve blends a face shot out
    assert all(any(a - 0.05 <= t < b for a, b in face_spans) for t in times), times
    # Most looks inside the two face shots saw the face.
    looks = [t for t in np.arange(0, 10, 0.25) if any(a <= t < b - 0.3 for a, b in truth.face_shots)]
    assert len(times) >= 0.8 * len(looks)


def test_bad_files_are_rejected_by_name_and_the_rest_is_ingested(footage):
    by_file = {}
    for line in footage["rejected"]:
        by_file.setdefault(line["source"], []).append(line["reason"])
    for name, words in (("notes.mp4", "not a readable video"), ("truncated.mp4", "truncated.mp4"), ("web.mp4", "(truncated file)"),
                        ("noaudio.webm", "no audio track"), ("black.mp4", "black"), ("README.txt", "not a video file")):
        assert name in by_file, (name, by_file)
        assert any(words in r and (name in r or name == "README.txt") for r in by_file[name]), by_file[name]
    sources = {r["source"] for r in footage["rows"]}
    assert sources == {"talk.mp4", "sub/scenes.mkv", "quiet.mov", "scripted.mp4"}
    counts = footage["report"]["counts"]
    assert counts["videos"] == 9 and counts["files"] == 10 and counts["sources_ingested"] == 4
    assert sum(counts["clips"].values()) == len(footage["rows"]) >= 5


def test_every_clip_traces_back_to_its_footage_in_the_preset_format(footage):
    out, src = footage["out"], footage["src"]
    for row in footage["rows"]:
        assert row["source_sha256"] == manifest.sha256_file(src / row["source"])
        a, b = row["source_span"]
        assert 0 <= a < b <= footage["report"]["sources"][row["source"]]["duration_s"] + 1e-6
        assert abs((b - a) - row["num_frames"] / row["fps"]) < 1e-6
        assert (row["num_frames"] - 1) % 4 == 0 and (row["fps"], row["width"], row["height"], row["sample_rate"]) == (8, 32, 32, 8000)
        clip = media.load_clip(out, row, verify=True)
        assert clip.frames.shape == (row["num_frames"], 32, 32, 3)
        assert row["id"].startswith("v" + row["source_sha256"][:12])  # ids from bytes, never from a file name
        for kind in ("speech", "speakers", "faces"):
            assert len(row["detectors"][kind]["weights_sha256"]) == 64
        assert set(row["provenance"].values()) <= {"detected", "human", "captioner"}
    splits = {}
    for row in footage["rows"]:
        splits.setdefault(row["source"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values()) and {s for v in splits.values() for s in v} == {"train", "eval"}


def test_cut_and_speech_land_in_the_clip_script_on_its_frame_grid(footage):
    row = next(r for r in footage["rows"] if r["source"] == "talk.mp4" and r["source_span"][0] == 0.0)
    script = mtss.parse_script(row["script"], clip_id=row["id"])
    assert [s.time_range.start for s in script.shot] == [0.0, 3.0]  # the cut at 3.0 s
    assert script.shot[0].references_in_shot == ("P1",) and script.shot[1].references_in_shot == ()
    speakers = [e.speaker for e in script.event]
    assert speakers == ["SPK1", "SPK2"]
    assert all(e.line for e in script.event) and row["provenance"]["event[E1].line"] == "detected"


def test_references_are_cut_from_another_moment_of_the_source(footage):
    out = footage["out"]
    talk = [r for r in footage["rows"] if r["source"] == "talk.mp4"]
    m = footage["report"]["sources"]["talk.mp4"]
    for row in talk:
        a, b = row["source_span"]
        ents = {e["id"]: e for e in row["script"]["reference"]}
        assert "P1" in ents and ents["P1"].get("reference_image"), ents
        img = media.read_png(out / ents["P1"]["reference_image"])
        assert img.shape == (32, 32, 3)
        spk1 = ents.get("SPK1")
        assert spk1 is not None and spk1.get("reference_audio")
        wav, rate = media.read_wav(out / spk1["reference_audio"])
        assert rate == 8000 and len(wav) == 12000 and np.abs(wav).max() > 0.05
        # SPK1 speaks outside this clip: the reference comes from there.
        outside = [s for s, k in zip(m["speech_s"], m["speech_speaker"]) if k == "SPK1" and (s[1] <= a or s[0] >= b)]
        assert outside


def test_the_ingested_dataset_validates_and_the_disagreeing_sidecar_is_quarantined_with_numbers(footage, tmp_path):
    scripted = [r for r in footage["rows"] if r["source"] == "scripted.mp4"]
    assert scripted and all(r["ingest_issues"] for r in scripted)
    assert all(set(r["provenance"].values()) <= {"human", "detected"} for r in scripted)
    for r in scripted:  # the hostile media path of the sidecar is never used
        assert all("passwd" not in json.dumps(e) for e in r["script"]["reference"])
    report = validate.validate_dataset(footage["out"], out_dir=tmp_path / "val", max_quarantine_share=0.5, build_docs=False)
    quarantined = [json.loads(x) for x in (tmp_path / "val" / "quarantine.jsonl").read_text().splitlines()]
    assert {q["id"] for q in quarantined} == {r["id"] for r in scripted}
    reasons = " ".join(" ".join(q["reasons"]) for q in quarantined)
    assert "[script-vs-footage] sidecar cut at 2.00 s has no detected cut within 0.25 s (nearest detected cut 3.00 s)" in reasons
    assert "sidecar dialogue E1 [0.50, 3.20] s vs detected speech" in reasons and "end by" in reasons
    assert report.valid == len(footage["rows"]) - len(scripted)


def test_an_agreeing_sidecar_gives_human_text_and_detected_references(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "a.mp4", [Shot("face", 3.0), Shot("shapes", 2.0, 1), Shot("shapes", 3.0, 2)],
                speech=[(0.5, 0, "The ship leaves at dawn."), (5.5, 0, "Nobody knows where it goes.")])
    m = ingest.measure(src / "a.mp4", ingest.IngestSettings(preset=ingest.get_preset("tiny")))[1]
    (sa, sb), (ta, tb) = m["speech_s"]
    (src / "a.mtss.json").write_text(json.dumps(_human_script("a", 8.0, [3.0, 5.0], [(sa, sb, "ANN"), (ta, tb, "ANN")])))
    ingest.ingest([src], tmp_path / "out", preset="tiny", workers=1, progress=False)
    rows = [line.row for line in manifest.read_manifest(tmp_path / "out")]
    assert len(rows) == 2 and not any("ingest_issues" in r for r in rows)
    script = rows[0]["script"]
    assert [s["visual_description"] for s in script["shot"]] == ["human shot 1", "human shot 2"]
    assert rows[0]["provenance"]["shot[S1].visual_description"] == "human"
    ann = script["reference"][0]
    assert ann["id"] == "ANN" and ann["reference_audio"].startswith("refs/")  # ANN's voice from her other line
    assert rows[0]["provenance"]["reference[ANN].reference_audio"] == "detected"


def test_resume_skips_finished_sources_and_redoes_a_damaged_one(footage, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(footage["out"], out)
    again = ingest.ingest([footage["src"]], out, preset="tiny", workers=1, progress=False)
    assert again["counts"]["sources_resumed"] == again["counts"]["videos"]
    assert (out / "manifest.jsonl").read_bytes() == (footage["out"] / "manifest.jsonl").read_bytes()
    # A killed writer or a flipped byte: the clip's media no longer matches its record.
    victim = footage["rows"][0]
    path = out / victim["video"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    third = ingest.ingest([footage["src"]], out, preset="tiny", workers=1, progress=False)
    assert third["counts"]["sources_resumed"] == again["counts"]["videos"] - 1
    assert manifest.sha256_file(path) == victim["sha256"][victim["video"]]


class _Captioner(http.server.BaseHTTPRequestHandler):
    answer: str = ""
    seen: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body))
        script = json.loads(body["messages"][-1]["content"])
        content = type(self).answer or json.dumps({
            "global": {"scene_description": "a harbour at dawn"},
            "shots": {s["id"]: f"captioned {s['id']}" for s in script["shot"]},
            "lines": {e["id"]: f"words of {e['id']}" for e in script["event"]},
            "entities": {"SPK1": "an old sailor"}})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def captioner_server(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Captioner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Captioner.seen, _Captioner.answer = [], ""
    monkeypatch.setenv("MAVIN_CAPTIONER_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("MAVIN_CAPTIONER_MODEL", "tiny-captioner")
    yield _Captioner
    server.shutdown()
    server.server_close()


def test_the_optional_captioner_fills_only_the_text_and_is_marked(tmp_path, captioner_server, capfd):
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "a.mp4", [Shot("face", 3.0), Shot("shapes", 2.0, 1)], speech=[(0.5, 0, "The ship leaves at dawn.")])
    ingest.ingest([src], tmp_path / "out", preset="tiny", workers=1, progress=False)
    row = next(line.row for line in manifest.read_manifest(tmp_path / "out"))
    path, body = captioner_server.seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny-captioner"
    script, prov = row["script"], row["provenance"]
    assert script["event"][0]["line"] == "words of E1" and prov["event[E1].line"] == "captioner"
    assert script["shot"][0]["visual_description"] == "captioned S1" and prov["shot[S1].visual_description"] == "captioner"
    assert script["global"]["scene_description"] == "a harbour at dawn"
    assert prov["event[E1].time_range"] == "detected" and script["event"][0]["speaker"] == "SPK1"  # times stay measured
    # A broken answer keeps the draft and says so; ingest goes on.
    captioner_server.answer = "not json at all"
    ingest.ingest([src], tmp_path / "out2", preset="tiny", workers=1, progress=False)
    row2 = next(line.row for line in manifest.read_manifest(tmp_path / "out2"))
    assert row2["provenance"]["event[E1].line"] == "detected" and "untranscribed" in row2["script"]["event"][0]["line"]
    assert "captioner" in capfd.readouterr().err


def test_cli_ingest_and_its_one_line_errors(tmp_path):
    exe = str(VENV_BIN / "mavin-ops")
    src = tmp_path / "src"
    src.mkdir()
    make_source(src / "one.mp4", [Shot("shapes", 2.5, 0), Shot("shapes", 2.5, 1)], speech=[(0.5, 0, "Hello there, friend.")])
    ok = subprocess.run([exe, "data", "ingest", str(src), "--out", str(tmp_path / "ds"), "--quiet", "--workers", "1",
                         "--sheets", str(tmp_path / "sheets")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ingested 1 of 1 videos" in ok.stdout and (tmp_path / "ds" / "ingest.json").is_file()
    ids = [line.row["id"] for line in manifest.read_manifest(tmp_path / "ds")]
    assert ids and sorted(p.stem for p in (tmp_path / "sheets").glob("*.png")) == sorted(ids)
    cases = [
        ([str(tmp_path / "missing")], "neither a video file nor a folder"),
        ([str(tmp_path / "empty")], "no video files"),
        ([str(src), "--eval-share", "1.5"], "--eval-share"),
    ]
    (tmp_path / "empty").mkdir()
    for args, words in cases:
        r = subprocess.run([exe, "data", "ingest", *args, "--out", str(tmp_path / "x"), "--quiet"], capture_output=True, text=True)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    r = subprocess.run([exe, "data", "ingest", str(src), "--out", str(tmp_path / "busy"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and "holds no earlier ingest" in r.stderr
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_plan_segments_respects_the_preset_limits():
    cfg = ingest.IngestSettings(preset=ingest.get_preset("tiny"))
    # 0.3 s shot too short to stand alone; 10 s shot split into windows; five 1 s shots -> at most 4 per clip.
    bounds = [0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    segs, left = ingest.plan_segments(bounds, [True] * 6, cfg)
    for seg in segs:
        assert seg.num_frames in cfg.preset.frame_choices and len(seg.shots) <= cfg.preset.max_shots
        assert abs(seg.end - seg.start - seg.num_frames / cfg.preset.fps) < 1e-9
        assert all(b - a >= cfg.preset.min_shot_frames / cfg.preset.fps - 1e-9 for a, b in seg.shots)
    assert segs[0].start == 0.0 and len(segs[0].shots) == 1
    starts = [s.start for s in segs]
    assert starts == sorted(starts) and all(b.start >= a.end - 1e-9 for a, b in zip(segs, segs[1:]))
    segs2, left2 = ingest.plan_segments([0.0, 1.0, 1.3, 5.0], [True, False, True], cfg)
    assert [(s.start, s.end) for s in segs2] == [(1.3, 1.3 + 29 / 8)] and left2 == [(0.0, 1.0, left2[0][2])]
    assert "too short" in left2[0][2]


def test_the_footage_profile_scores_an_ingested_benchmark_and_tells_a_face_from_noise(footage, tmp_path):
    """Item 4: STA, TAMS, VC, AC (and CISC) on clips of an ingested benchmark, with the
    detectors ingest measured it with, chosen from the dataset's mavinset.json."""
    import dataclasses

    from footage_kit import VOICES, speak

    from mavin_ops.evaluation.runner import evaluate_clips, evaluate_dir

    out = tmp_path / "validated"  # what the pipeline scores: the quarantined sidecar clip left out
    validate.validate_dataset(footage["out"], out_dir=tmp_path / "val", validated_dir=out, max_quarantine_share=0.5, build_docs=False)
    talk = next(r for r in footage["rows"] if r["source"] == "talk.mp4" and r["source_span"][0] == 0.0)
    result = evaluate_dir(out, out, tmp_path / "eval", config={"split": talk["split"]})
    assert result["config"]["profile"] == "footage" and result["config"]["encoder"] == ""
    assert result["config"]["detectors"]["cuts"]["name"] == "scenes" and result["config"]["detectors"]["voice"]["name"] == "resemblyzer"
    gt, noise = result["references"]["ground_truth"], result["references"]["shuffled"]
    assert gt["sta"] == pytest.approx(1.0) and gt["tams"] > 0.9 and gt["vc"] > 0.85 and gt["ac"] > 0.6, gt
    assert noise["vc"] == 0.0 and noise["sta"] < 1.0, noise  # pixels shuffled: no face, cuts everywhere
    # The scripted speaker's line said in the other voice: AC drops well below the truth's.
    clip = media.load_clip(out, talk)
    ev = next(e for e in clip.script.event if e.speaker == "SPK1")
    other = speak(VOICES[1], "The ship leaves at dawn.", clip.sample_rate)
    wav = np.zeros_like(clip.waveform)
    a = int(ev.time_range.start * clip.sample_rate)
    wav[a : a + len(other)] = other[: len(wav) - a]
    swapped = evaluate_clips([dataclasses.replace(clip, waveform=wav)], {"profile": "footage"})["clips"][0]["metrics"]
    scored = evaluate_clips([clip], {"profile": "footage"})
    truth = scored["clips"][0]["metrics"]
    # A profile named in the config picks the footage detectors here too, key by key.
    assert scored["config"]["detectors"]["voice"]["name"] == "resemblyzer" and scored["config"]["encoder"] == ""
    assert truth["ac"] > 0.6 and swapped["ac"] < truth["ac"] - 0.15, (truth["ac"], swapped["ac"])


def test_two_ingests_into_one_folder_do_not_write_at_once(footage, tmp_path):
    import fcntl

    out = tmp_path / "busy"
    (out / ".ingest").mkdir(parents=True)
    with open(out / ".ingest" / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another ingest holds the folder
        with pytest.raises(ingest.IngestError, match="another ingest is writing"):
            ingest.ingest([footage["src"] / "quiet.mov"], out, preset="tiny", workers=1, progress=False)
    assert not (out / "manifest.jsonl").exists()


def test_join_refuses_a_shard_whose_record_was_tampered(footage, tmp_path):
    shard = tmp_path / "s0"
    ingest.ingest([footage["src"] / "quiet.mov"], shard, preset="tiny", workers=1, progress=False)
    report = json.loads((shard / "ingest.json").read_text())
    report["inputs"] = {"quiet.mov": "../../../../etc/passwd"}  # a name read from storage
    (shard / "ingest.json").write_text(json.dumps(report))
    with pytest.raises(ingest.IngestError, match="record of 'quiet.mov' is missing"):
        ingest.join([shard], tmp_path / "joined", ingest.IngestSettings(preset=ingest.get_preset("tiny")))


def test_the_same_footage_under_two_names_is_ingested_once_also_across_shards(footage, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(footage["src"] / "quiet.mov", src / "a.mov")
    shutil.copy(footage["src"] / "quiet.mov", src / "b.mov")
    report = ingest.ingest([src], tmp_path / "one", preset="tiny", workers=1, progress=False)
    rows = [line.row for line in manifest.read_manifest(tmp_path / "one")]
    assert {r["source"] for r in rows} == {"a.mov"} and len({r["id"] for r in rows}) == len(rows)
    rejected = (tmp_path / "one" / "rejected.jsonl").read_text()
    assert "b.mov: the same bytes as 'a.mov'" in rejected and report["counts"]["files"] == 2
    for i in range(2):
        ingest.ingest([src], tmp_path / f"s{i}", preset="tiny", workers=1, progress=False, shard=(i, 2))
    joined = ingest.join([tmp_path / "s0", tmp_path / "s1"], tmp_path / "joined", ingest.IngestSettings(preset=ingest.get_preset("tiny")))
    assert (tmp_path / "joined" / "manifest.jsonl").read_bytes() == (tmp_path / "one" / "manifest.jsonl").read_bytes()
    assert joined["counts"]["sources_ingested"] == 1 and "the same bytes" in (tmp_path / "joined" / "rejected.jsonl").read_text()

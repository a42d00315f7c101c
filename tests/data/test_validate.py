"""Dataset validation (data/validate.py): every bad input lands in quarantine with a one-line
reason naming the clip and the field, the rest of the dataset stays usable, and the step
passes or fails on the quarantined share."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from mavin_ops.data import manifest, validate
from mavin_ops.data.validate import ValidationFailed, ValidationLimits, validate_dataset

N_CLIPS = 20
FPS = 8
FRAMES = 17  # 4*4 + 1 frames -> 2.125 s


# --------------------------------------------------------------------------- fixtures


def _write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def make_row(root: Path, i: int, split: str | None = None) -> dict[str, Any]:
    """One valid clip with its media files written under ``root``: two shots, a customized
    speaking person, a scene and one dialogue line."""
    cid = f"c{i:06d}"
    media = {
        "video": f"clips/{cid}.mp4",
        "audio": f"clips/{cid}.wav",
        "image": f"refs/{cid}_R1.png",
        "voice": f"refs/{cid}_R1.wav",
    }
    sha = {rel: _write(root, rel, f"{kind} of {cid}".encode() * 7) for kind, rel in media.items()}
    duration = FRAMES / FPS
    script = {
        "clip_id": cid,
        "duration": duration,
        "reference": [
            {
                "id": "R1",
                "category": "person",
                "semantic_description": "a tall person in a teal striped shirt",
                "appearance_anchor": {"detail_description": "tall, round head, teal striped shirt", "hairstyle": "bald"},
                "voice": "high bright voice",
                "reference_image": media["image"],
                "reference_audio": media["voice"],
            },
            {
                "id": "R2",
                "category": "scene",
                "semantic_description": "a pink hall with vertical stripes",
                "appearance_anchor": {"detail_description": "pink walls, brown floor"},
            },
        ],
        "shot": [
            {"id": "S1", "time_range": [0.0, 1.0], "visual_description": "wide view of R2 with R1 on the left",
             "camera": "static wide shot", "references_in_shot": ["R1", "R2"], "active_events": ["E1"]},
            {"id": "S2", "time_range": [1.0, duration], "visual_description": "medium view of R1",
             "camera": "static medium shot", "references_in_shot": ["R1", "R2"], "active_events": []},
        ],
        "event": [
            {"id": "E1", "type": "dialogue", "time_range": [0.2, 0.8], "speaker": "R1", "line": "gusini dazo",
             "description": "R1 asks a question"},
        ],
        "global": {"scene_description": "a short scene in a pink hall", "global_style": "flat colours",
                   "global_audio": "a quiet hum"},
    }
    return {
        "id": cid,
        "split": split or ("eval" if i % 5 == 0 else "train"),
        "source": f"src{i:04d}",
        "video": media["video"],
        "audio": media["audio"],
        "fps": FPS,
        "num_frames": FRAMES,
        "width": 32,
        "height": 32,
        "sample_rate": 8000,
        "sha256": sha,
        "script": script,
    }


def write_lines(root: Path, rows: list[dict[str, Any] | str]) -> Path:
    """Write the manifest; a ``str`` entry is written verbatim (to plant broken lines)."""
    path = root / manifest.MANIFEST
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row))
            fh.write("\n")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path / "ds"
    root.mkdir()
    rows = [make_row(root, i) for i in range(N_CLIPS)]
    write_lines(root, rows)
    return root, rows


def run(root: Path, tmp_path: Path, **kwargs: Any) -> validate.ValidationReport:
    kwargs.setdefault("build_docs", False)
    kwargs.setdefault("max_quarantine_share", 0.5)
    return validate_dataset(root, out_dir=tmp_path / "out", **kwargs)


def quarantine(report: validate.ValidationReport) -> list[dict[str, Any]]:
    return [json.loads(line) for line in report.quarantine.read_text(encoding="utf-8").splitlines()]


def valid_ids(report: validate.ValidationReport) -> list[str]:
    return [json.loads(line)["id"] for line in report.valid_manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- one bad row each

Mutation = Callable[[Path, dict[str, Any]], None]


def _path_dotdot(root, row):
    row["video"] = "../outside.mp4"


def _path_absolute(root, row):
    row["audio"] = str(root / row["audio"])


def _symlink_out(root, row):
    outside = root.parent / f"elsewhere-{row['id']}.png"
    outside.write_bytes(b"not in the dataset")
    link = root / row["script"]["reference"][0]["reference_image"]
    link.unlink()
    link.symlink_to(outside)


def _sha_mismatch(root, row):
    (root / row["audio"]).write_bytes(b"changed after the manifest was written")


def _missing_media(root, row):
    (root / row["video"]).unlink()


def _unlisted_media(root, row):
    del row["sha256"][row["script"]["reference"][0]["reference_audio"]]


def _unknown_entity(root, row):
    row["script"]["shot"][1]["references_in_shot"].append("R7")


def _overlapping_shots(root, row):
    row["script"]["shot"][1]["time_range"][0] = 0.875


def _gapped_shots(root, row):
    row["script"]["shot"][1]["time_range"][0] = 1.25


def _dialogue_without_speaker(root, row):
    del row["script"]["event"][0]["speaker"]


def _speaker_not_person(root, row):
    row["script"]["event"][0]["speaker"] = "R2"


def _frames_not_4k1(root, row):
    row["num_frames"] = 18
    row["script"]["duration"] = row["script"]["shot"][1]["time_range"][1] = 18 / FPS


def _too_many_customized_roles(root, row):
    for k in range(3, 6):
        rel = f"refs/{row['id']}_R{k}.png"
        row["sha256"][rel] = _write(root, rel, b"reference %d" % k)
        row["script"]["reference"].append(
            {"id": f"R{k}", "category": "person", "semantic_description": "another person",
             "appearance_anchor": {"detail_description": "short"}, "reference_image": rel}
        )


def _script_clip_id(root, row):
    row["script"]["clip_id"] = "c999999"


def _script_duration(root, row):
    row["num_frames"] = 21  # 2.625 s; the script still says 2.125 s


def _resolution(root, row):
    row["width"] = 36


def _too_long(root, row):
    row["num_frames"] = 4 * 40 + 1
    row["script"]["duration"] = row["script"]["shot"][1]["time_range"][1] = (4 * 40 + 1) / FPS


def _too_many_shots(root, row):
    template = row["script"]["shot"][1]
    bounds = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, FRAMES / FPS]
    row["script"]["shot"] = [
        {**copy.deepcopy(template), "id": f"S{k + 1}", "time_range": [bounds[k], bounds[k + 1]], "active_events": []}
        for k in range(7)
    ]


def _shot_field_typo(root, row):
    row["script"]["shot"][0]["camra"] = row["script"]["shot"][0].pop("camera")


def _event_cited_by_no_shot(root, row):
    row["script"]["shot"][0]["active_events"] = []


def _split_enum(root, row):
    row["split"] = "test"


def _fps_string(root, row):
    row["fps"] = "8"


def _sha256_not_object(root, row):
    row["sha256"] = ["deadbeef"]


CASES: list[tuple[str, Mutation, str, str]] = [
    # (name, mutation of one row and its files, field the reason names, rule)
    ("path-dotdot", _path_dotdot, "video", "media-path"),
    ("path-absolute", _path_absolute, "audio", "media-path"),
    ("symlink-out", _symlink_out, "reference[R1].reference_image", "media-path"),
    ("sha256-mismatch", _sha_mismatch, "audio", "sha256-mismatch"),
    ("media-missing", _missing_media, "video", "media-missing"),
    ("media-unlisted", _unlisted_media, "reference[R1].reference_audio", "sha256-listed"),
    ("unknown-entity", _unknown_entity, "shot[S2].references_in_shot", "cited-id"),
    ("overlapping-shots", _overlapping_shots, "shot[S2].time_range", "shots-overlap"),
    ("gapped-shots", _gapped_shots, "shot[S2].time_range", "shots-gap"),
    ("dialogue-no-speaker", _dialogue_without_speaker, "event[E1].speaker", "dialogue-speaker"),
    ("speaker-not-person", _speaker_not_person, "event[E1].speaker", "speaker-is-person"),
    ("frames-not-4k+1", _frames_not_4k1, "num_frames", "frames-4k+1"),
    ("customized-roles", _too_many_customized_roles, "reference", "max-customized-roles"),
    ("script-clip-id", _script_clip_id, "script.clip_id", "clip-id"),
    ("script-duration", _script_duration, "script.duration", "duration-matches-frames"),
    ("resolution", _resolution, "width", "spatial-multiple"),
    ("duration-limit", _too_long, "num_frames", "duration-limits"),
    ("shot-count", _too_many_shots, "script.shot", "shot-count"),
    ("unknown-key", _shot_field_typo, "shot[S1].camra", "unknown-key"),
    ("event-cited-by-shot", _event_cited_by_no_shot, "event[E1].id", "event-cited-by-shot"),
    ("split-enum", _split_enum, "split", "enum"),
    ("fps-type", _fps_string, "fps", "type"),
    ("sha256-type", _sha256_not_object, "sha256", "sha256-object"),
]


def test_each_bad_row_is_quarantined_with_a_located_reason(tmp_path):
    """One run over a dataset where every other row breaks one rule: each broken row is
    quarantined with a one-line reason naming its clip, field and rule; the untouched rows
    all reach the validated manifest unchanged."""
    root = tmp_path / "ds"
    rows = [make_row(root, i) for i in range(2 * len(CASES) + 1)]
    broken = {}
    for k, (name, mutate, fld, rule) in enumerate(CASES):
        row = rows[2 * k + 1]
        mutate(root, row)
        broken[row["id"]] = (name, f"clip {row['id']}: {fld}: [{rule}] ", 2 * k + 2)
    path = write_lines(root, rows)
    report = run(root, tmp_path, max_quarantine_share=1.0)

    records = {r["id"]: r for r in quarantine(report)}
    assert set(records) == set(broken)
    source_lines = path.read_text().splitlines()
    for cid, (name, expected, line) in broken.items():
        record = records[cid]
        assert record["line"] == line, name
        assert record["row"] == json.loads(source_lines[line - 1]), name
        assert any(r.startswith(expected) for r in record["reasons"]), (name, record["reasons"])
        assert all("\n" not in r and r.startswith(f"clip {cid}: ") for r in record["reasons"]), name
    for name, _, _, rule in CASES:
        assert report.rule_counts.get(rule, 0) >= 1, name
    assert report.valid_manifest.read_text().splitlines() == [
        line for n, line in enumerate(source_lines, start=1) if n % 2 == 1
    ]


def test_duplicate_clip_id_quarantines_only_the_later_rows(dataset, tmp_path):
    root, rows = dataset
    rows[7]["id"] = rows[7]["script"]["clip_id"] = "c000002"
    rows[12]["id"] = rows[12]["script"]["clip_id"] = "c000002"
    write_lines(root, rows)
    report = run(root, tmp_path)
    records = quarantine(report)
    assert [r["line"] for r in records] == [8, 13]
    for r in records:
        assert r["id"] == "c000002"
        assert any(x.startswith("clip c000002: id: [unique-id] ") and "line 3" in x for x in r["reasons"]), r["reasons"]
    assert valid_ids(report).count("c000002") == 1
    assert report.rule_counts == {"unique-id": 2}


def test_source_shared_across_splits_quarantines_both_rows(dataset, tmp_path):
    root, rows = dataset
    assert rows[4]["split"] == "train" and rows[5]["split"] == "eval"
    rows[4]["source"] = rows[5]["source"]
    write_lines(root, rows)
    report = run(root, tmp_path)
    records = {r["id"]: r for r in quarantine(report)}
    assert set(records) == {"c000004", "c000005"}
    (a,) = records["c000004"]["reasons"]
    (b,) = records["c000005"]["reasons"]
    assert a.startswith("clip c000004: source: [source-split] ") and "c000005" in a and "'eval'" in a
    assert b.startswith("clip c000005: source: [source-split] ") and "c000004" in b and "'train'" in b
    assert report.valid == N_CLIPS - 2


def test_malformed_json_line_is_quarantined_by_line_number(dataset, tmp_path):
    root, rows = dataset
    lines: list[dict[str, Any] | str] = list(rows)
    lines[6] = json.dumps(rows[6])[:-30]  # truncated
    lines.insert(10, "[1, 2, 3]")  # JSON, but not an object
    write_lines(root, lines)
    report = run(root, tmp_path)
    records = quarantine(report)
    assert [r["line"] for r in records] == [7, 11]
    assert records[0]["text"] == lines[6] and records[0]["id"] is None
    (reason,) = records[0]["reasons"]
    assert reason.startswith("clip ? (manifest.jsonl line 7): manifest.jsonl: [json] line 7: malformed JSON at column ")
    assert "expected a JSON object, got list" in records[1]["reasons"][0]
    assert report.rows == N_CLIPS + 1 and report.valid == N_CLIPS - 1
    assert report.rule_counts == {"json": 2}


def test_line_that_is_not_utf8_is_quarantined(dataset, tmp_path):
    root, rows = dataset
    path = write_lines(root, rows)
    raw = path.read_bytes().split(b"\n")
    raw[2] = raw[2].replace(b"teal", b"t\xffal", 1)
    path.write_bytes(b"\n".join(raw))
    report = run(root, tmp_path)
    (record,) = quarantine(report)
    assert record["line"] == 3 and "[encoding]" in record["reasons"][0] and "UTF-8" in record["reasons"][0]
    assert report.valid == N_CLIPS - 1


def test_row_with_missing_and_nested_fields_does_not_crash(dataset, tmp_path):
    root, rows = dataset
    del rows[2]["id"]
    rows[9]["id"] = {"nested": ["id"]}
    del rows[11]["script"]
    write_lines(root, rows)
    report = run(root, tmp_path)
    records = {r["line"]: r for r in quarantine(report)}
    assert set(records) == {3, 10, 12}
    assert any(x.startswith("clip ? (manifest.jsonl line 3): id: [required] missing") for x in records[3]["reasons"])
    assert any(x.startswith("clip ? (manifest.jsonl line 10): id: [type] expected a string") for x in records[10]["reasons"])
    assert any(x.startswith("clip c000011: script: [script-object] ") for x in records[12]["reasons"])


def test_check_media_false_skips_files_but_not_path_safety(dataset, tmp_path):
    root, rows = dataset
    (root / "clips" / "c000001.mp4").unlink()
    rows[2]["video"] = "../escape.mp4"
    write_lines(root, rows)
    report = run(root, tmp_path, check_media=False)
    (record,) = quarantine(report)
    assert record["id"] == "c000002" and any("[media-path]" in r for r in record["reasons"])
    full = run(root, tmp_path)
    assert {r["id"] for r in quarantine(full)} == {"c000001", "c000002"}


# --------------------------------------------------------------------------- outputs and the verdict


def test_threshold_decides_pass_and_fail(dataset, tmp_path):
    root, rows = dataset
    rows[1]["width"] = 36  # one bad row of 20: 5 %
    write_lines(root, rows)
    assert run(root, tmp_path, max_quarantine_share=0.05).passed  # share <= threshold passes
    failed = run(root, tmp_path, max_quarantine_share=0.04)
    assert not failed.passed and failed.quarantined_share == pytest.approx(0.05)
    summary = json.loads(failed.summary.read_text())
    assert summary["passed"] is False and summary["rows"] == N_CLIPS and summary["quarantined"] == 1
    assert summary["max_quarantine_share"] == 0.04 and summary["rule_counts"] == {"spatial-multiple": 1}
    with pytest.raises(ValidationFailed) as err:
        run(root, tmp_path, max_quarantine_share=0.04, raise_on_fail=True)
    msg = str(err.value)
    assert "\n" not in msg and "1 of 20 rows quarantined" in msg and str(failed.quarantine) in msg
    assert err.value.report.quarantine.exists()  # outputs are written before it raises


def test_quarantine_and_valid_manifest_hold_every_line_once(dataset, tmp_path):
    root, rows = dataset
    _gapped_shots(root, rows[3])
    rows[8]["width"] = 33
    rows[15]["id"] = rows[15]["script"]["clip_id"] = rows[14]["id"]
    lines: list[dict[str, Any] | str] = list(rows)
    lines[11] = "{not json"
    lines.insert(5, "   ")  # a blank line is not a row
    write_lines(root, lines)
    source = (root / manifest.MANIFEST).read_bytes()
    by_line = {n: text for n, text in enumerate(source.decode().split("\n"), start=1) if text.strip()}
    report = run(root, tmp_path)

    kept = [line for line in report.valid_manifest.read_text().splitlines() if line.strip()]
    records = quarantine(report)
    assert {r["line"] for r in records} == {4, 10, 13, 17}  # rows 3, 8, 11, 15; a blank line 6
    assert report.rows == len(by_line) == N_CLIPS
    assert report.valid == len(kept) and report.quarantined == len(records)
    # every source row is in exactly one of the two files, unchanged
    assert sorted(kept + [by_line[r["line"]] for r in records]) == sorted(by_line.values())
    assert not set(kept) & {by_line[r["line"]] for r in records}
    for r in records:
        if "row" in r:
            assert r["row"] == json.loads(by_line[r["line"]])
        else:
            assert r["text"] == by_line[r["line"]] == "{not json"
    assert report.manifest_sha256 == hashlib.sha256(source).hexdigest()


def test_parallel_scan_matches_serial(dataset, tmp_path):
    root, rows = dataset
    _overlapping_shots(root, rows[3])
    rows[17]["split"] = "dev"
    lines: list[dict[str, Any] | str] = list(rows)
    lines[9] = "{broken"
    write_lines(root, lines)
    serial = validate_dataset(root, out_dir=tmp_path / "serial", workers=1, build_docs=False)
    parallel = validate_dataset(root, out_dir=tmp_path / "parallel", workers=2, chunk_bytes=1500, build_docs=False)
    assert serial.quarantined == parallel.quarantined == 3
    assert serial.quarantine.read_bytes() == parallel.quarantine.read_bytes()
    assert serial.valid_manifest.read_bytes() == parallel.valid_manifest.read_bytes()
    assert serial.manifest_sha256 == parallel.manifest_sha256
    assert json.loads(parallel.summary.read_text())["workers"] == 2


@pytest.mark.parametrize("tail", [b"", b"last line without newline"])
def test_scan_ranges_cover_the_file_on_line_boundaries(tmp_path, tail):
    lines = [b"x" * n for n in (5, 0, 70, 3, 250, 1, 40)]
    data = b"\n".join(lines) + b"\n" + tail
    path = tmp_path / "m.jsonl"
    path.write_bytes(data)
    digest = hashlib.sha256()
    ranges = list(validate._ranges(path, 16, digest))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (s0, e0, n0), (s1, _, n1) in zip(ranges, ranges[1:]):
        assert e0 == s1 and data[e0 - 1 : e0] == b"\n"  # contiguous, cut after a newline
        assert n1 == n0 + data[s0:e0].count(b"\n")  # line numbers carry over
        assert n0 == data[:s0].count(b"\n") + 1
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_data_docs_and_summary_page(dataset, tmp_path):
    root, rows = dataset
    _unknown_entity(root, rows[3])
    rows[6]["width"] = 36
    write_lines(root, rows)
    report = validate_dataset(root, out_dir=tmp_path / "out", docs_dir=tmp_path / "docs", max_quarantine_share=0.1)
    assert report.docs_index == tmp_path / "docs" / "index.html" and report.docs_index.exists()
    assert validate.SUITE_NAME in report.docs_index.read_text(encoding="utf-8")
    (run_page,) = (tmp_path / "docs" / "validations" / validate.SUITE_NAME).rglob("*.html")
    text = run_page.read_text(encoding="utf-8")  # the suite run, rendered: one failed expectation
    assert "Failed" in text and "width_mod" in text and "Unsuccessful Expectations" in text
    page = report.summary_page.read_text(encoding="utf-8")
    assert "PASSED" in page and "c000003" in page and "cited-id" in page and "spatial-multiple" in page
    assert 'href="index.html"' in page
    summary = json.loads(report.summary.read_text())
    assert summary["files"]["data_docs"] == str(report.docs_index)
    assert summary["expectations"]["evaluated_expectations"] > 30
    # Offline: no stylesheet or script from a CDN on any page, and the index's validation list
    # (which Great Expectations fills with jQuery) is a plain table whose link opens the run page.
    import re

    for html_page in (tmp_path / "docs").rglob("*.html"):
        body = html_page.read_text(encoding="utf-8")
        assert not re.search(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["']https?://""", body), html_page
        assert ".bootstrapTable(" not in body, html_page
    index = report.docs_index.read_text(encoding="utf-8")
    links = re.findall(r'<table id="[\w-]+-offline">.*?</table>', index, flags=re.S)
    assert links and validate.SUITE_NAME in links[0]
    hrefs = re.findall(r'href="([^"]+)"', "".join(links))
    assert any((tmp_path / "docs" / h).resolve() == run_page.resolve() for h in hrefs), hrefs


def test_source_dataset_is_not_modified(dataset, tmp_path):
    root, rows = dataset
    _gapped_shots(root, rows[3])
    write_lines(root, rows)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    run(root, tmp_path, build_docs=True)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    assert before == after
    with pytest.raises(ValueError, match="inside the dataset root"):
        validate_dataset(root, out_dir=root / "validation")


def test_default_out_dir_is_under_mavin_home(dataset, isolated_home):
    root, _ = dataset
    report = validate_dataset(root, build_docs=False)
    assert report.summary.parent == isolated_home / "validation" / root.name
    assert report.passed and report.valid == N_CLIPS


def test_empty_and_missing_manifest(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / manifest.MANIFEST).write_text("\n\n")
    report = validate_dataset(empty, out_dir=tmp_path / "out", build_docs=False)
    assert report.rows == 0 and not report.passed and report.valid_manifest.read_text() == "\n\n"
    with pytest.raises(ValidationFailed, match="has no rows"):
        validate_dataset(empty, out_dir=tmp_path / "out", build_docs=False, raise_on_fail=True)
    with pytest.raises(FileNotFoundError, match="no manifest.jsonl in"):
        validate_dataset(tmp_path / "nowhere", out_dir=tmp_path / "out")


def test_limits_are_configurable(dataset, tmp_path):
    root, rows = dataset
    rows[0]["width"] = rows[0]["height"] = 48
    write_lines(root, rows)
    assert run(root, tmp_path).quarantined == 0  # 48 = 6 * 8
    report = run(root, tmp_path, limits=ValidationLimits(spatial_multiple=32, max_duration_s=2.0))
    by_id = {r["id"]: r["reasons"] for r in quarantine(report)}
    assert len(by_id) == N_CLIPS  # every clip lasts 2.125 s > 2.0 s
    assert any("[spatial-multiple]" in x for x in by_id["c000000"])
    with pytest.raises(ValueError, match="min_shots"):
        ValidationLimits(min_shots=5, max_shots=2)


def test_cli_exit_codes(dataset, tmp_path, capsys):
    """One command line: `mavin-ops data validate` (dvc.yaml calls it too)."""
    from mavin_ops.cli import main

    root, rows = dataset
    assert main(["data", "validate", str(root), "--out", str(tmp_path / "a"), "--no-docs"]) == 0
    assert "validation PASSED: 0 of 20 rows" in capsys.readouterr().out
    assert not (tmp_path / "a" / "data_docs").exists()
    _frames_not_4k1(root, rows[3])
    write_lines(root, rows)
    assert main(["data", "validate", str(root), "--out", str(tmp_path / "b"), "--no-docs", "--max-quarantine-share", "0.01", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["quarantined"] == 1
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("mavin-ops data validate: ") and "above the 1.00% threshold" in last
    # the limits are options: with a stride of 1 the 4k+1 rule no longer quarantines the row
    assert main(["data", "validate", str(root), "--out", str(tmp_path / "c"), "--no-docs", "--frame-stride", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quarantined"] == 0
    assert main(["data", "validate", str(root), "--no-docs", "--min-shots", "5", "--max-shots", "2"]) == 2
    assert "min_shots" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path / "missing"), "--no-docs"]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err


def test_generated_debug_dataset_validates_clean(debug_dataset, tmp_path):
    report = validate_dataset(debug_dataset, out_dir=tmp_path / "out", build_docs=False)
    assert report.rows == 6 and report.quarantined == 0 and report.passed
    assert report.valid_manifest.read_bytes() == (debug_dataset / manifest.MANIFEST).read_bytes()


# --------------------------------------------------------------------------- manifest helpers used here


def test_atomic_writer_leaves_nothing_on_error(tmp_path):
    (tmp_path / "m.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError):
        with manifest.atomic_writer(tmp_path, "m.jsonl") as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert (tmp_path / "m.jsonl").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
    manifest.write_manifest(tmp_path, iter([{"a": 1}]), name="m.jsonl")
    assert (tmp_path / "m.jsonl").read_text() == '{"a":1}\n'


@pytest.mark.parametrize(
    ("rel", "problem"),
    [("clips/a.mp4", None), ("clips/..a.mp4", None), ("../a.mp4", "climbs out"), ("a/../../b", "climbs out"),
     ("/etc/passwd", "absolute"), ("", "empty"), (5, "not a string")],
)
def test_media_path_problem(rel, problem):
    got = manifest.media_path_problem(rel)
    assert (got is None) if problem is None else (problem in got)


def test_public_names_resolve():
    for name in validate.__all__:
        assert getattr(validate, name) is not None
    assert os.path.basename(validate.__file__) == "validate.py"


def test_lines_too_deep_too_long_or_with_a_lone_surrogate_are_quarantined_and_the_reader_agrees(dataset, tmp_path):
    """Crafted lines from a hostile review: nested 5000 deep (RecursionError in the quarantine
    writer), a lone surrogate (pyarrow could not encode it), one byte over the line cap, and a
    row of exactly the cap, which both the validator and the reader keep."""
    root, rows = dataset
    lines: list[dict[str, Any] | str] = list(rows)
    lines[3] = "[" * 5000
    lines[5] = json.dumps({**rows[5], "id": "\ud800"}, ensure_ascii=True)
    lines[7] = json.dumps({**rows[7], "pad": "x" * manifest.MAX_LINE_BYTES})
    exact = json.dumps({**rows[9], "pad": ""})
    lines[9] = exact[:-2] + "x" * (manifest.MAX_LINE_BYTES - len(exact)) + '"}'
    assert len(lines[9]) == manifest.MAX_LINE_BYTES
    write_lines(root, lines)
    report = run(root, tmp_path)
    records = {r["line"]: r for r in quarantine(report)}
    assert set(records) == {4, 6, 8}, records.keys()
    assert "cannot be read (RecursionError)" in records[4]["reasons"][0] and len(records[4]["text"]) <= 2000
    assert "lone UTF-16 surrogate" in records[6]["reasons"][0]
    assert "longer than 1048576 bytes" in records[8]["reasons"][0]
    kept = [line for line in manifest.read_manifest(root) if line.row is not None]
    assert len(kept) == len(lines) - 3 and any(line.lineno == 10 for line in kept)
    assert report.valid == N_CLIPS - 3


def test_the_summary_page_shows_markup_from_a_manifest_as_text(dataset, tmp_path):
    root, rows = dataset
    rows[4]["id"] = "<script>alert(1)</script>"
    write_lines(root, rows)
    page = run(root, tmp_path, build_docs=True, docs_dir=tmp_path / "docs").summary_page.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

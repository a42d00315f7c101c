"""`mavin-ops script check`: MTSS scripts on their own, with the parser and grounding rules of
validation and `generate`; every issue one `file: clip: path: [rule] message` line; exit 0
clean, 1 issues, 2 a user mistake (missing or undecodable file) with a one-line error."""

from __future__ import annotations

import json
import re

import pytest

from mavin_ops.cli import main

LINE = re.compile(r"^(?P<file>[^:]+): (?P<clip>[^:]+): (?P<path>[^:]+): \[(?P<rule>[a-z0-9+-]+)\] (?P<message>.+)$")


def script(clip_id: str = "c1") -> dict:
    return {
        "clip_id": clip_id,
        "duration": 2.0,
        "reference": [
            {"id": "R1", "category": "person", "semantic_description": "a tall man",
             "appearance_anchor": {"detail_description": "red shirt"}, "voice": "low warm voice"},
            {"id": "R2", "category": "scene", "semantic_description": "a kitchen",
             "appearance_anchor": {"detail_description": "white tiles"}},
        ],
        "shot": [
            {"id": "S1", "time_range": [0.0, 1.0], "visual_description": "the man in the kitchen", "camera": "wide",
             "references_in_shot": ["R1", "R2"], "active_events": ["E1"]},
            {"id": "S2", "time_range": [1.0, 2.0], "visual_description": "close on the man", "camera": "close-up",
             "references_in_shot": ["R1", "R2"], "active_events": []},
        ],
        "event": [{"id": "E1", "type": "dialogue", "time_range": [0.2, 0.8], "speaker": "R1", "line": "hello"}],
        "global": {"scene_description": "a man says hello in his kitchen"},
    }


def check(capsys, *files: str) -> tuple[int, list[str], str]:
    code = main(["script", "check", *files])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_two_problems_print_two_lines_and_exit_1(tmp_path, capsys):
    d = script()
    d["shot"][1]["camra"] = d["shot"][1].pop("camera")  # a typo: refused, with the right name
    d["shot"][0]["active_events"] = []  # E1 cited by no shot: it would vanish from the caption
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(d))
    code, lines, err = check(capsys, str(path))
    assert code == 1
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["file"], m["clip"], m["path"], m["rule"]) for m in parsed] == [
        (str(path), "c1", "shot[S2].camra", "unknown-key"),
        (str(path), "c1", "event[E1].id", "event-cited-by-shot"),
    ]
    assert "did you mean 'camera'?" in parsed[0]["message"]
    assert "2 issue(s)" in err


def test_clean_script_exits_0(tmp_path, capsys):
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(script()))
    code, lines, err = check(capsys, str(path))
    assert code == 0 and lines == [] and "no issues" in err


def test_yaml_script_is_read(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    d = script()
    d["event"][0]["speeker"] = d["event"][0].pop("speaker")
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(d))
    code, lines, _ = check(capsys, str(path))
    assert code == 1
    rules = [LINE.match(line)["rule"] for line in lines]
    assert rules == ["unknown-key", "dialogue-speaker"], lines  # every issue, not only the first


def test_missing_file_is_a_one_line_error_exit_2(tmp_path, capsys):
    clean = tmp_path / "scene.json"
    clean.write_text(json.dumps(script()))
    missing = tmp_path / "nope.json"
    code, lines, err = check(capsys, str(clean), str(missing))
    assert code == 2 and lines == []  # nothing checked before the mistake is reported
    err = err.strip()
    assert err.startswith("mavin-ops: error: ") and "\n" not in err and str(missing) in err and "does not exist" in err


def test_file_that_is_not_json_is_a_one_line_error_exit_2(tmp_path, capsys):
    path = tmp_path / "scene.json"
    path.write_text('{"clip_id": "c1",\n "duration": }')
    code, lines, err = check(capsys, str(path))
    err = err.strip()
    assert code == 2 and lines == []
    assert err.startswith(f"mavin-ops: error: {path}: not valid JSON at line 2") and "\n" not in err


def test_manifest_names_each_clip(tmp_path, capsys):
    bad = script("c2")
    bad["reference"][0]["appearance_anchor"]["clothes"] = "red"
    rows = [{"id": "c1", "script": script("c1")}, {"id": "c2", "script": bad}]
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, lines, _ = check(capsys, str(path))
    assert code == 1
    assert lines == [
        f"{path}: c2: reference[R1].appearance_anchor.clothes: [unknown-key] unknown field 'clothes'; "
        "did you mean 'clothing'?"
    ]


def test_generated_dataset_is_clean(tmp_path, capsys):
    """The synthetic generator never writes a script the contract refuses."""
    out = tmp_path / "ds"
    assert main(["data", "generate", "--preset", "debug", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    code, lines, _ = check(capsys, str(out), str(out / "manifest.jsonl"))
    assert code == 0 and lines == []

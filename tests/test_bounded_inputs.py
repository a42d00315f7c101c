"""Crafted input files cost one line and exit 2, on the real commands (issue "Trust ...",
item 4): a YAML alias bomb, JSON nested 100,000 deep, /dev/zero as a script, a folder where
a file belongs, and a YAML error that must not show the file's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mavin_ops.cli import main

#: 6 levels of 9 aliases each: 9^6 (531,441) strings once expanded, in under 400 bytes (each
#: level more multiplies it by 9; before this check, the error line alone was megabytes).
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(5)
)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mavin-ops: error: ") and "\n" not in err and len(err) < 400, err[:2000]
    return err


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    out = {"bomb": tmp_path / "bomb.yaml", "deep": tmp_path / "deep.json", "secret": tmp_path / "policy.yaml",
           "metrics": tmp_path / "metrics.json"}
    out["bomb"].write_text(BOMB)
    out["deep"].write_text("[" * 100_000)
    out["secret"].write_text("version: 1\nroot:x:0:0:hunter2-secret-line: [unclosed\n")
    out["metrics"].write_text(json.dumps({"metrics": {}}))
    assert len(BOMB) < 400
    return out


def test_a_yaml_alias_bomb_in_a_release_file_is_one_line(files, capsys):
    assert main(["release", "--config", str(files["bomb"])]) == 2
    assert "aliases (*name) are not allowed" in _one_line(capsys)


def test_a_yaml_alias_bomb_as_gate_policy_is_one_line(files, tmp_path, capsys):
    assert main(["gate", str(files["metrics"]), "--policy", str(files["bomb"]), "--out", str(tmp_path / "g"),
                 "--champion-metrics", str(files["metrics"])]) == 2
    assert "aliases (*name) are not allowed" in _one_line(capsys)


def test_a_yaml_error_names_line_and_column_but_never_shows_the_text(files, tmp_path, capsys):
    assert main(["gate", str(files["metrics"]), "--policy", str(files["secret"]), "--out", str(tmp_path / "g"),
                 "--champion-metrics", str(files["metrics"])]) == 2
    err = _one_line(capsys)
    assert "not valid YAML at line 3 column 1" in err and "hunter2" not in err


def test_a_folder_given_as_a_policy_is_named_as_a_folder(files, tmp_path, capsys):
    assert main(["gate", str(files["metrics"]), "--policy", str(tmp_path), "--out", str(tmp_path / "g"),
                 "--champion-metrics", str(files["metrics"])]) == 2
    assert "is a folder; pass a gate policy" in _one_line(capsys)


def test_script_check_on_json_nested_100000_deep_is_one_line(files, capsys):
    assert main(["script", "check", str(files["deep"])]) == 2
    assert "JSON nested too deep to read" in _one_line(capsys)


def test_script_check_on_dev_zero_or_a_fifo_is_refused_without_reading(tmp_path, capsys):
    import os

    assert main(["script", "check", "/dev/zero"]) == 2
    assert "is not a regular file" in _one_line(capsys)
    os.mkfifo(tmp_path / "pipe.json")  # opening it for reading would wait for a writer forever
    assert main(["script", "check", str(tmp_path / "pipe.json")]) == 2
    assert "is not a regular file" in _one_line(capsys)


def test_a_big_file_stops_at_the_size_cap_and_odd_values_are_one_line(tmp_path):
    from mavin_ops.bounded import MAX_FILE_BYTES, InputError, load_json, load_yaml, read_bytes

    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(InputError, match="larger than 8388608 bytes"):
        read_bytes(big, "a script")
    for bad in ("a: 2020-13-45", "a: " + "9" * 5000, "a: !" + "x" * 200_000 + " 1"):
        with pytest.raises(InputError) as err:
            load_yaml(bad, "f.yaml")
        assert len(str(err.value)) < 300
    for bad in ("9" * 5000, b"\xff\xfe\xff"):
        with pytest.raises(InputError):
            load_json(bad, "f.json")


def test_generate_with_a_deep_script_is_refused_before_any_server(files, tmp_path, capsys):
    # No server listens on this port: the script must be refused before a connection is tried.
    assert main(["generate", "--script", str(files["deep"]), "--out", str(tmp_path / "x.mp4"), "--url", "127.0.0.1:9"]) == 2
    assert "nested too deep" in _one_line(capsys) and not (tmp_path / "x.mp4").exists()


def test_releases_lists_crafted_records_with_their_error(isolated_home, capsys):
    def record(started, wall):
        return '{"release_id": "x", "attempts": [{"attempt": 1, "started": %s, "wall_s": %s, "verdict": "promoted"}]}' % (started, wall)

    for rid, text in {"r-huge": record("1e300", "1"), "r-inf": record("1765000000", "Infinity"), "r-nan": record("NaN", "1"),
                      "r-deep": "[" * 100_000, "r-good": record("1765000000", "61.5")}.items():
        (isolated_home / "releases" / rid).mkdir(parents=True)
        (isolated_home / "releases" / rid / "release.json").write_text(text)
    assert main(["releases"]) == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(table) == {"r-huge", "r-inf", "r-nan", "r-deep", "r-good"}
    for rid in ("r-huge", "r-inf", "r-nan", "r-deep"):
        assert "release.json unreadable" in table[rid], table[rid]
    assert "1m01s" in table["r-good"] and "promoted" in table["r-good"]
    assert main(["releases", "--json"]) == 0
    listed = {r["release_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert "nested too deep" in listed["r-deep"]["error"] and listed["r-good"]["duration_s"] == 61.5


def _release_file_refused(tmp_path, capsys, text: str) -> str:
    """`release --config` on a debug release file with ``text`` added: exit 2 and its one line."""
    config = tmp_path / "release.yaml"
    config.write_text("preset: debug\n" + text)
    assert main(["release", "--config", str(config)]) == 2
    return _one_line(capsys)


def test_a_release_whose_source_is_the_filesystem_root_is_one_line(tmp_path, capsys):
    """`source: /` walked /proc and crashed with PermissionError before any run existed."""
    assert "source '/' is the root of the filesystem" in _release_file_refused(tmp_path, capsys, "source: /\n")


def test_a_folder_that_cannot_be_listed_is_a_rejected_line_not_a_crash(tmp_path, monkeypatch):
    import os

    from mavin_ops.data.ingest import find_sources

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.mp4").write_bytes(b"")
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found, rejected = find_sources([tmp_path])
    assert [rel for _, rel in found] == ["ok/a.mp4"]
    assert rejected == [{"source": "locked", "reason": "folder cannot be read (Permission denied)"}]


@pytest.mark.parametrize(("text", "says"), [
    ("remote: {url: 's3://b', password: hunter2-secret}\n", "(got a mapping of 2 keys)"),
    ("remote: [hunter2-secret, x]\n", "(got a list of 2 items)"),
    ("seed: " + "'hunter2-secret" + "x" * 500 + "'\n", "x...x"),
])
def test_a_bad_value_is_echoed_short_and_a_mapping_never_shows_its_content(tmp_path, capsys, text, says):
    err = _release_file_refused(tmp_path, capsys, text)
    assert says in err and ("hunter2" not in err or says == "x...x") and len(err) < 300, err


def test_manifest_lines_that_are_too_long_too_deep_or_not_utf8_are_named_not_fatal(tmp_path):
    from mavin_ops.data import manifest

    root = tmp_path / "ds"
    root.mkdir()
    lines = [b'{"id": "c1"}', b'{"id": "' + b"x" * (manifest.MAX_LINE_BYTES + 10) + b'"}', b"[" * 100_000, b'{"id": "\xff"}', b'{"id": "c2"}']
    (root / manifest.MANIFEST).write_bytes(b"\n".join(lines) + b"\n")
    got = [(line.lineno, line.row, line.error) for line in manifest.read_manifest(root)]
    assert [g[0] for g in got] == [1, 2, 3, 4, 5]
    assert got[0][1] == {"id": "c1"} and got[4][1] == {"id": "c2"}
    assert got[1][2].startswith("longer than 1048576 bytes") and "cannot be read (RecursionError)" in got[2][2]
    assert got[3][2] == "byte 8 is not UTF-8; a manifest is UTF-8 text"


@pytest.mark.parametrize(("text", "says"), [
    ("1: 2\n", "option names in words"),
    ("source: " + "a" * 5000 + "\n", "over 4096 characters"),
    ("source: " + "a" * 300 + "\n", "File name too long"),
    ('dataset_rev: "\\0"\n', "a NUL byte"),
    ("endpoint_url: 'http://[::1'\n", "is not a valid URL"),
    ('registry: "/tmp/\\0x"\n', "a NUL byte"),
])
def test_values_no_path_or_url_can_be_are_refused_before_the_pipeline(tmp_path, capsys, text, says):
    assert says in _release_file_refused(tmp_path, capsys, text)


def test_a_lone_surrogate_in_a_script_is_one_line(tmp_path, capsys):
    script = tmp_path / "s.json"
    script.write_text('{"clip_id": "\\ud800"}')
    assert main(["script", "check", str(script)]) == 2
    assert "lone UTF-16 surrogate" in _one_line(capsys)


def test_releases_skips_a_dangling_link_and_never_echoes_a_crafted_value(isolated_home, capsys):
    root = isolated_home / "releases"
    root.mkdir(parents=True)
    (root / "r-link").symlink_to(root / "nowhere")
    (root / "r-odd").mkdir()
    (root / "r-odd" / "release.json").write_text(json.dumps({"attempts": [{
        "started": 1765000000, "wall_s": 1, "verdict": "\x1b[31m" + "v" * 200_000, "model": "\x1b[2J", "champion_before": "\x1b[2J" * 1000}]}))
    assert main(["releases"]) == 0
    out = capsys.readouterr().out
    assert "r-odd" in out and "r-link" not in out and "\x1b" not in out and len(out) < 1000

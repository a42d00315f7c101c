"""The CLI end to end on the debug world: generate -> version -> validate, and one-line
errors for what a user gets wrong."""

from __future__ import annotations

import json
import shutil

import pytest

from mavin_ops.cli import main


def test_generate_version_validate(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "generate", "--preset", "debug", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["preset"] == "debug" and (out / "manifest.jsonl").exists()

    assert main(["data", "version", str(out)]) == 0
    version = json.loads(capsys.readouterr().out)
    assert version["digest"].endswith(".dir") and version["tag"] == "mavinset-mini-v1"
    assert len(version["code_commit"]) == 40 or version["code_commit"] == "unknown"

    report_dir = tmp_path / "report"
    assert main(["data", "validate", str(out), "--out", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    assert "validation PASSED: 0 of 6 rows quarantined" in printed
    assert (report_dir / "validation.json").exists()
    assert main(["data", "validate", str(out), "--out", str(tmp_path / "report2"), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)  # data on stdout, nothing else
    assert as_json["rows"] == 6 and as_json["passed"] is True


def test_validate_fails_with_exit_1_above_threshold(tmp_path, capsys):
    out = tmp_path / "ds"
    main(["data", "generate", "--preset", "debug", "--out", str(out), "--quiet"])
    capsys.readouterr()
    victim = next((out / "clips").glob("*.wav"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")  # sha256 mismatch
    code = main(["data", "validate", str(out), "--out", str(tmp_path / "r"), "--max-quarantine-share", "0.1"])
    assert code == 1
    assert "validation FAILED: 1 of 6 rows quarantined" in capsys.readouterr().out


def test_generate_refuses_to_overwrite_with_one_line_error(tmp_path, capsys):
    out = tmp_path / "ds"
    main(["data", "generate", "--preset", "debug", "--out", str(out), "--quiet"])
    capsys.readouterr()
    assert main(["data", "generate", "--preset", "debug", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mavin-ops: error: ") and "\n" not in err and str(out) in err


def test_version_without_manifest_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "version", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no manifest.jsonl" in err and "\n" not in err


def test_unknown_preset_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # a choice: argparse says it, in one line, exit 2
        main(["data", "generate", "--preset", "huge", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "huge" in err and "debug" in err and len(err.strip().splitlines()) == 1


def test_smoke_without_a_champion_is_a_one_line_error(tmp_path, capsys):
    assert main(["smoke", "--name", "nobody", "--out", str(tmp_path / "check")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # MLflow logs its store creation first
    assert err.startswith("mavin-ops: error: model 'nobody' has no champion") and "--version" in err
    assert not (tmp_path / "check").exists()  # nothing half-written


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("data", "release"):
        assert command in text


def test_evaluate_then_gate_on_ground_truth(tmp_path, capsys):
    """The benchmark's own media score perfect timing; the gate passes them on floors alone
    (no champion yet) and blocks them against a champion that was better on STA."""
    ds = tmp_path / "ds"
    main(["data", "generate", "--preset", "debug", "--out", str(ds), "--quiet"])
    capsys.readouterr()
    assert main(["evaluate", str(ds), "--out", str(tmp_path / "ev")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["means"]["sta"] == pytest.approx(1.0) and out["means"]["tams"] == pytest.approx(1.0)
    metrics = tmp_path / "ev" / "metrics.json"
    assert main(["gate", str(metrics), "--out", str(tmp_path / "g")]) == 0
    assert "pass" in capsys.readouterr().out.lower()
    # A worse challenger: every clip's STA lowered well beyond any tolerance.
    worse = json.loads(metrics.read_text())
    for clip in worse["clips"]:
        if clip["metrics"].get("sta") is not None:
            clip["metrics"]["sta"] = 0.2
    worse["metrics"]["sta"]["mean"] = 0.2
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    code = main(["gate", str(tmp_path / "worse.json"), "--out", str(tmp_path / "g2"), "--champion-metrics", str(metrics)])
    assert code == 1 and (tmp_path / "g2" / "gate.html").exists()
    capsys.readouterr()
    code = main(["gate", str(tmp_path / "worse.json"), "--out", str(tmp_path / "g4"), "--champion-metrics", str(metrics), "--json"])
    decided = json.loads(capsys.readouterr().out)
    assert code == 1 and decided["verdict"] == "fail" and any(r.startswith("sta:") for r in decided["reasons"])
    assert main(["gate", str(tmp_path / "missing.json"), "--out", str(tmp_path / "g3")]) == 2


def test_cli_conventions_version_examples_choices_and_completion(capsys):
    """--version; every command's help ends with an example that this parser accepts;
    presets are choices; one spelling (--model) for the model everywhere; shell completion."""
    import argparse
    import shlex

    from mavin_ops import __version__
    from mavin_ops.cli import EXAMPLES, build_parser, main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"mavin-ops {__version__}"

    def commands(sub, prefix=""):
        for name, p in sub.choices.items():
            yield prefix + name, p
            for a in p._actions:
                if isinstance(a, argparse._SubParsersAction):
                    yield from commands(a, prefix + name + " ")

    top = build_parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    seen = dict(commands(sub))
    for name, p in seen.items():
        assert f"example: {EXAMPLES[name]}" in (p.epilog or ""), name
        build_parser().parse_args(shlex.split(EXAMPLES[name].split("#")[0])[1:])  # the example parses
    for name in ("release", "data generate", "data ingest", "train"):
        preset = next(a for a in seen[name]._actions if "--preset" in a.option_strings)
        assert preset.choices and "tiny" in preset.choices, name
    for name in ("smoke", "publish", "serve", "release", "gate"):
        assert any("--model" in a.option_strings for a in seen[name]._actions), name
    assert main(["-q", "completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "mavin-ops" in script and "releases" in script and "--train-steps" in script

"""A release as a file (mavin_ops/release_config.py): ``release``, ``submit`` and ``schedule``
read the same reviewed YAML; every mistake is one line naming the file and the field."""

from __future__ import annotations

import json

import pytest

from mavin_ops.cli import main
from mavin_ops.release_config import ConfigError, load_release_config, pipeline_arguments


def test_a_release_file_reads_paths_next_to_itself_and_maps_to_pipeline_parameters(tmp_path):
    f = tmp_path / "ops" / "nightly.yaml"
    f.parent.mkdir()
    f.write_text("preset: debug\ntrain_steps: 2\nmodel: mavin-nightly\npolicy: strict.yaml\ndataset_rev: latest\n")
    cfg = load_release_config(f)
    assert cfg.policy == str(tmp_path / "ops" / "strict.yaml") and cfg.train_steps == 2
    params = pipeline_arguments(cfg)
    # Only what the file sets (the cluster profile keeps the rest), under the pipeline's names.
    assert params == {"preset": "debug", "train_steps": "2", "model_name": "mavin-nightly",
                      "gate_policy": str(tmp_path / "ops" / "strict.yaml"), "dataset_rev": "latest"}


@pytest.mark.parametrize(
    "text, words",
    [
        ("preset: huge\n", "preset: Input should be 'debug' or 'tiny'"),
        ("train_steps: -1\n", "train_steps: Input should be greater than or equal to 0 (got -1)"),
        ("trian_steps: 2\n", "trian_steps: unknown option; allowed: preset, seed"),
        ("model: ../victim\n", "model: model name '../victim' is not allowed"),
        ("max_quarantine_share: 2\n", "max_quarantine_share: Input should be less than or equal to 1"),
        ("[preset\n", "not valid YAML at line 2 column 1"),
        ("- preset\n", "a release file is a mapping"),
    ],
)
def test_a_bad_release_file_is_one_line_naming_the_field(tmp_path, capsys, text, words):
    f = tmp_path / "release.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_release_config(f)
    assert str(err.value).startswith(f"{f}: ") and words in str(err.value) and "\n" not in str(err.value)
    assert main(["release", "--config", str(f)]) == 2  # refused before anything runs
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("mavin-ops: error: ") and words in line


def test_credentials_in_a_release_file_are_refused_without_being_echoed(tmp_path, capsys):
    f = tmp_path / "release.yaml"
    f.write_text("remote: s3://AKIA:hunter2@bucket/dvc\n")
    assert main(["release", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "remote: " in err and "credentials" in err and "hunter2" not in err


def test_submit_and_schedule_take_the_same_file_and_param_flags_win(tmp_path, capsys):
    f = tmp_path / "release.yaml"
    f.write_text("preset: debug\ntrain_steps: 2\nmodel: mavin-nightly\n")
    for argv in (["submit", "--host", "http://127.0.0.1:9", "--dry-run"],
                 ["schedule", "--host", "http://127.0.0.1:9", "--cron", "0 0 3 * * *", "--dry-run"]):
        assert main([*argv, "--config", str(f), "--param", "train_steps=5"]) == 0
        text = json.dumps(json.loads(capsys.readouterr().out)["body"])
        assert '"model_name": "mavin-nightly"' in text and '"train_steps": "5"' in text and '"preset": "debug"' in text, argv
    with pytest.raises(SystemExit):
        main(["release", "--config"])  # the flag needs a file


def test_release_flags_win_over_the_file(tmp_path, monkeypatch):
    import argparse

    from mavin_ops import cli

    f = tmp_path / "release.yaml"
    f.write_text("preset: debug\ntrain_steps: 2\nsample_limit: 3\n")
    args = cli.build_parser().parse_args(["release", "--config", str(f), "--train-steps", "7"])
    cli._apply_release_file(args)
    assert isinstance(args, argparse.Namespace)
    assert (args.preset, args.train_steps, args.sample_limit) == ("debug", 7, 3)

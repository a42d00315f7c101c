"""Release integrity at the entry points (issue "Release integrity", items 4, 7, 9, 12):
names that become paths, credentials inside URLs, a killed release, and the mistakes that
are refused before the pipeline starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mavin_ops import safety, tracking
from mavin_ops.cli import main
from mavin_ops.release import PreflightError, ReleaseResult, run_release


from release_support import stray_processes

BAD_NAMES = ["../../victim", "..", "a/b", "/abs", "", "x" * 200, "name with space", ".hidden", "a\\b", "ok..name"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses_what_could_leave_a_folder(name):
    with pytest.raises(safety.UnsafeName, match="is not allowed"):
        safety.check_name(name, "dataset name")


@pytest.mark.parametrize("name", ["mavinset-mini", "mavin", "r20261202-101010-abc123", "Model_2.1"])
def test_check_name_accepts_ordinary_names(name):
    assert safety.check_name(name) == name


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a/./../..", "", "C:/x", "a\\..\\..\\x"])
def test_safe_join_refuses_paths_that_leave_the_root(tmp_path, rel):
    with pytest.raises(safety.UnsafePath):
        safety.safe_join(tmp_path, rel)


def test_safe_join_refuses_a_symlink_out_of_the_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(safety.UnsafePath, match="resolves outside"):
        safety.safe_join(tmp_path / "root", "link/escaped.txt")
    assert safety.safe_join(tmp_path / "root", "a/b.txt") == (tmp_path / "root" / "a" / "b.txt").resolve()


def test_urls_with_credentials_are_refused_and_redacted():
    url = "https://alice:hunter2@mlflow.internal:5000/path?q=1"
    with pytest.raises(safety.UnsafeURL) as err:
        safety.check_url(url, "endpoint_url")
    assert "hunter2" not in str(err.value) and "alice" not in str(err.value)
    assert safety.redact_url(url) == "https://***@mlflow.internal:5000/path?q=1"
    assert safety.redact(f"connect to {url} failed; s3://k:s@b/x too") == (
        "connect to https://***@mlflow.internal:5000/path?q=1 failed; s3://***@b/x too"
    )
    assert safety.check_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "version", "{ds}", "--name", "../../victim"],
        ["promote", "../victim", "1", "--reason", "x"],
        ["history", "a/b"],
        ["gate", "m.json", "--out", "o", "--model", ".."],
        ["release", "--resume", "../../victim"],
        ["release", "--model", "../victim"],
        ["publish", "repo", "--name", "../victim"],
        ["serve", "--name", "/abs"],
    ],
)
def test_cli_refuses_unsafe_names_with_one_line_and_exit_2(tmp_path, capsys, argv):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (tmp_path / "ds").mkdir()
    os.chdir(tmp_path / "ds")
    with pytest.raises(SystemExit) as exited:
        main([a.replace("{ds}", str(tmp_path / "ds")) for a in argv])
    assert exited.value.code == 2
    line = _one_line_error(capsys)
    assert line.startswith("mavin-ops: error: ") and "is not allowed" in line
    assert (victim / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("argv", [
    ["release", "--endpoint-url", "http://minio:s3cr3t@127.0.0.1:9000"],
    ["release", "--endpoint-url", "http://minio:p@ss-s3cr3t@127.0.0.1:9000"],  # an @ inside the password
    ["generate", "--script", "s.json", "--out", "o.mp4", "--url", "minio:s3cr3t@127.0.0.1:8000"],  # host:port, no scheme
])
def test_cli_refuses_credentials_in_url_options_without_echoing_them(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    line = _one_line_error(capsys)
    assert "carries credentials" in line and "s3cr3t" not in line and "minio" not in line


def test_redaction_masks_the_whole_userinfo_up_to_the_last_at():
    assert safety.redact("pull from https://bob:p@ss@w0rd@host:5000/x failed") == "pull from https://***@host:5000/x failed"
    assert safety.redact("s3://k:s@b/x@y and http://h/p@q") == "s3://***@b/x@y and http://h/p@q"  # an @ in a path is no userinfo


def test_generate_with_a_malformed_image_option_names_the_option(capsys):
    assert main(["generate", "--script", "s.json", "--out", "o.mp4", "--image", "bogus"]) == 2
    line = _one_line_error(capsys)
    assert line == "mavin-ops: error: --image 'bogus' must look like ROLE=PNG, e.g. --image R1=ref.png"


def test_library_value_errors_are_not_disguised_as_user_errors(monkeypatch):
    """A ValueError from a bug in library code is a crash with a traceback, not 'exit 2'."""
    import mavin_ops.cli as cli

    def buggy(args):
        raise ValueError("dictionary update sequence element #0 has length 1; 2 is required")

    monkeypatch.setattr(cli, "_history", buggy)
    with pytest.raises(ValueError):
        main(["history", "m"])


def _parent_runs() -> list:
    c = tracking.client()
    return c.search_runs([tracking.experiment_id()], filter_string="tags.`mavin.step` = 'pipeline'")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "huge"}, "--preset 'huge' is not a release preset; use one of debug, tiny"),
        ({"preset": "paper"}, "--preset 'paper' is not a release preset"),
        ({"dataset_rev": "mavinset-mini-v99"}, "no data registry at"),
        ({"gate_policy": "/nonexistent/policy.yaml"}, "no such gate policy file"),
        ({"model_name": "../x"}, "model name '../x' is not allowed"),
        ({"endpoint_url": "http://u:p@127.0.0.1:1"}, "carries credentials"),
        ({"release_id": "../r"}, "release id '../r' is not allowed"),
    ],
)
def test_release_refuses_mistakes_before_the_pipeline_starts(kwargs, match):
    from mavin_ops.data.versioning import VersioningError

    with pytest.raises((ValueError, VersioningError), match=match):
        run_release(echo=None, **kwargs)
    assert _parent_runs() == []  # nothing started, nothing to resume


def test_a_second_release_on_the_same_home_is_refused_up_front(capsys):
    """Two releases on one home both took Triton version 2 and the second failed at publish
    after its whole training: the second is refused before any run exists."""
    import fcntl

    from mavin_ops import settings
    from mavin_ops.cli import main

    (settings.home() / "locks").mkdir(exist_ok=True)
    with open(settings.home() / "locks" / "release.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("release r-first, pid 1")
        held.flush()
        assert main(["release", "--preset", "debug", "--train-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "another release is running on the state folder" in err and "(release r-first, pid 1)" in err
    assert _parent_runs() == []


def test_unknown_dataset_revision_in_an_existing_registry_is_refused_up_front(tmp_path, capsys):
    from mavin_ops.data import synth, versioning

    ds = tmp_path / "ds"
    synth.generate(ds, preset="debug", seed=0, progress=False)
    reg = tmp_path / "registry"
    versioning.version_dataset(ds, registry=str(reg), remote=str(tmp_path / "remote"))
    assert main(["release", "--registry", str(reg), "--dataset-rev", "mavinset-mini-v7"]) == 2
    line = _one_line_error(capsys)
    assert "has no dataset 'mavinset-mini'" in line and "--resume" not in line
    assert _parent_runs() == []


def test_release_output_never_shows_credentials_of_the_tracking_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2@127.0.0.1:1")
    result = ReleaseResult("r1", False, "boom", "p", "FAILED", "/tmp/x", tags={"mavin.verdict_reason": "see http://a:hunter2@h"})
    text = "\n".join(result.lines())
    assert "hunter2" not in text and "http://***@127.0.0.1:1" in text


@pytest.mark.server
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killing_the_release_itself_ends_its_run_killed(tmp_path, isolated_home, sig):
    """SIGTERM / Ctrl-C to `mavin-ops release` (not to a step): the parent run ends KILLED,
    the --resume command is printed, no step process is left and no champion appears."""
    from mavin_ops import registry

    env = dict(os.environ)
    cmd = [sys.executable, "-m", "mavin_ops.cli", "release", "--preset", "debug", "--train-steps", "2",
           "--sample-steps", "2", "--sample-limit", "2", "--model", "mavin-killed"]
    log = tmp_path / "release.log"  # a file, not a pipe: the runner's step logs would fill a pipe and block it
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        c = tracking.client()
        step_running = False
        while time.monotonic() < deadline and not step_running and proc.poll() is None:
            time.sleep(0.5)
            parents = _parent_runs()
            if parents:
                kids = c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
                step_running = any(k.info.status == "RUNNING" for k in kids)
        assert step_running, "no step started: " + log.read_text()[-3000:]
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 128 + sig, out[-2000:]
    parent = _parent_runs()[0]
    release_id = parent.data.tags["mavin.release_id"]
    assert parent.info.status == "KILLED" and parent.data.tags["mavin.final_state"] == "CANCELLED"
    assert f"mavin-ops release --resume {release_id}" in out
    assert f"interrupted by {signal.Signals(sig).name}" in out
    kids = tracking.client().search_runs([tracking.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert kids and not [k for k in kids if k.info.status == "RUNNING"]
    assert registry.champion_version("mavin-killed") is None
    assert stray_processes(isolated_home) == {}


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["data", "validate", "{ds}", "--max-quarantine-share", "2"], "2.0 is not between 0 and 1"),
        (["data", "validate", "{ds}", "--max-customized-roles", "-1"], "-1 is below 0"),
        (["data", "generate", "--out", "{tmp}/g", "--seed", "-1"], "-1 is below 0"),
        (["export", "ckpt", "--out", "r", "--version", "0"], "0 is below 1"),
        (["release", "--seed", "x"], "'x' is not an integer"),
    ],
)
def test_out_of_range_options_are_one_line_errors(tmp_path, capsys, argv, expect):
    with pytest.raises(SystemExit) as exited:
        main([a.replace("{ds}", str(tmp_path)).replace("{tmp}", str(tmp_path)) for a in argv])
    assert exited.value.code == 2
    assert expect in _one_line_error(capsys)


def test_bad_inputs_deep_in_library_code_are_one_line_errors(tmp_path, capsys):
    """User mistakes that library code reports with its own error classes (not a bare
    ValueError) reach the user as one line and exit 2."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.jsonl").write_text("")
    cases = [
        (["data", "validate", str(tmp_path / "ds"), "--out", str(tmp_path / "ds" / "rep")], "is inside the dataset root"),
        (["publish", str(tmp_path), "--store", "gs://bucket/x"], "neither a local directory nor s3://bucket/prefix"),
        (["publish", str(tmp_path), "--store", "s3://"], "has no bucket"),
        (["export", str(tmp_path / "junk.safetensors"), "--out", str(tmp_path / "r")], "is not a usable mavin-ops checkpoint"),
    ]
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for argv, expect in cases:
        assert main(argv) == 2, argv
        line = _one_line_error(capsys)
        assert line.startswith("mavin-ops: error: ") and expect in line, (argv, line)
    # A preset is a choice now: argparse refuses it before any library code runs, in one line.
    with pytest.raises(SystemExit) as exited:
        main(["train", "--stage", "id", "--preset", "nosuch", "--dataset", str(tmp_path / "ds"), "--no-track"])
    line = _one_line_error(capsys)
    assert exited.value.code == 2 and "nosuch" in line and "paper" in line


def test_a_registry_remote_with_credentials_is_refused_and_an_existing_remote_is_kept(tmp_path):
    from mavin_ops.data import versioning

    with pytest.raises(safety.UnsafeURL):
        versioning.init_registry(tmp_path / "reg", "s3://AKIA:secret@bucket/x")
    assert not (tmp_path / "reg").exists()
    reg = versioning.init_registry(tmp_path / "reg2", str(tmp_path / "remote-a"))
    versioning.init_registry(reg)  # no --remote: the registry keeps the one it has
    assert versioning._remote_url(reg) == str(tmp_path / "remote-a")


@pytest.mark.parametrize(("recorded", "says"), [
    ("not json {", "tag is not JSON"),
    ('["preset", "tiny"]', "is not a mapping of options"),
    ('{"preset": "debug", "rm_rf": true}', "names options a release does not have (rm_rf)"),
    ('{"preset": "no-such-preset"}', "is not a release preset"),  # preflight runs on what was recorded
])
def test_resume_reads_the_recorded_arguments_as_untrusted_and_changes_nothing_when_they_are_bad(capsys, recorded, says):
    """A failed release whose recorded arguments were edited in MLflow: `release --resume` is
    one line (exit 2) and the run stays as it was (FAILED, same tags), not reopened RUNNING."""
    from mavin_ops.release import ARGS_TAG

    parent = tracking.parent_run("r-edited")
    c = tracking.client()
    c.set_tag(parent, ARGS_TAG, recorded)
    c.set_tag(parent, "mavin.final_state", "FAILED")
    c.set_terminated(parent, status="FAILED")
    before = c.get_run(parent).data.tags
    assert main(["release", "--resume", "r-edited"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mavin-ops: error: ") and "\n" not in err and says in err, err
    run = c.get_run(parent)
    assert run.info.status == "FAILED" and run.data.tags == before

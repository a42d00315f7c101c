"""The release console (mavin_ops/console.py) and step progress (mavin_ops/progress.py): the KFP
local runner's stream sorted into per-step log files and one terminal line per step."""

from __future__ import annotations

import io
import os
import sys
import time

import pytest

from mavin_ops import progress
from mavin_ops.console import ReleaseConsole, _Stream, task_names


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _kfp_task(task: str, lines: list[str], status: str = "SUCCESS", outputs: dict | None = None) -> None:
    """Print what the KFP local runner prints for one task (its colours included)."""
    print(f"\x1b[36m12:00:00.000 - INFO - Executing task \x1b[96m'{task}'\x1b[0m")
    print("12:00:00.001 - INFO - Streamed logs:\n")
    for line in lines:
        print("    " + line)
    print(f"12:00:01.000 - INFO - Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92m{status}\x1b[0m")
    if outputs is not None:
        print(f"12:00:01.001 - INFO - Task '{task}' outputs:\n" + "\n".join(f"    {k}: {v}" for k, v in outputs.items()))


def test_each_step_gets_its_own_log_and_one_terminal_line_under_its_own_name(tmp_path):
    term = io.StringIO()
    names = {"train": "train_id", "train-2": "train_multishot", "gate": "gate"}
    with ReleaseConsole(tmp_path / "logs", names, terminal=term) as console:
        _kfp_task("train", ["Great Expectations: Skipping registering function x"] * 200 + ["step 2/2 loss 1.4"],
                  outputs={"final_loss": "1.40123", "step": "2"})
        _kfp_task("train-2", ["[train multishot] step 2/2 loss 1.2"], outputs={"final_loss": "1.2"})
        _kfp_task("gate", ["Traceback (most recent call last):", "  File x", "ValueError: the policy file is broken"], status="FAILURE")
        sys.stderr.write("a library warning on stderr\n")
    shown = term.getvalue().splitlines()
    assert shown[0].split()[:2] == ["train_id", "ok"] and shown[0].endswith("final loss 1.401")
    assert shown[1].split()[:2] == ["train_multishot", "ok"]
    assert shown[2].split()[:2] == ["gate", "FAILURE"]
    assert shown[3].strip() == "ValueError: the policy file is broken" and shown[4].strip().endswith("gate.log")
    assert len(shown) == 5  # 200 lines of noise stayed out
    logs = tmp_path / "logs"
    assert (logs / "train_id.log").read_text().count("Skipping registering function") == 200
    assert "\x1b[" not in (logs / "train_id.log").read_text()
    assert "loss 1.2" in (logs / "train_multishot.log").read_text() and "Skipping" not in (logs / "train_multishot.log").read_text()
    assert "a library warning" in (logs / "pipeline.log").read_text()
    assert [s.name for s in console.steps] == ["train_id", "train_multishot", "gate"]
    assert not isinstance(sys.stdout, _Stream) and not isinstance(sys.stderr, _Stream)  # restored


def test_verbose_streams_every_line_and_an_interrupted_step_says_so(tmp_path):
    term = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with ReleaseConsole(tmp_path, {}, terminal=term, verbose=True):
            _kfp_task("evaluate", ["scoring clip 1"], outputs={"summary": '\'{"metrics": {"sta": 0.91, "vc": 0.2}}\''})
            print("Executing task 'train'")
            print("step 1/300")
            raise KeyboardInterrupt
    text = term.getvalue()
    assert "scoring clip 1" in text and "STA 0.910  VC 0.200" in text
    assert "train" in text.splitlines()[-3] and "STOPPED" in text.splitlines()[-3]


def test_a_running_step_shows_a_bar_with_an_eta_from_what_the_step_reports(tmp_path, monkeypatch):
    term = _Tty()
    with ReleaseConsole(tmp_path, {"train-3": "train_av"}, terminal=term) as console:
        print("Executing task 'train-3'")
        assert os.environ[progress.ENV] == str(console.progress_file)
        rep = progress.reporter("train av", 100, "step")  # what the step's process does
        for _ in range(40):
            rep.update(1, loss=0.5)
        rep._write(force=True)
        deadline = time.monotonic() + 5
        while "40/100" not in term.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        print("Task 'train-3' finished with status SUCCESS")
    out = term.getvalue()
    assert "train av" in out and "40/100" in out and "<" in out, out  # tqdm's "elapsed<remaining"
    assert progress.ENV not in os.environ
    assert "train_av" in out.rsplit("\r", 1)[-1]  # the bar gave way to the step's line


def test_progress_outside_a_release_writes_nothing_and_a_torn_file_reads_as_none(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.reporter("x", 10) as rep:
        rep.update(5)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "p.json").write_text('{"done": 3, "tot')
    assert progress.read(tmp_path / "p.json") is None
    (tmp_path / "p.json").write_text('{"done": "3", "total": 10, "started": 0}')
    assert progress.read(tmp_path / "p.json") is None


def test_task_keys_of_the_release_pipeline_map_to_step_names():
    from mavin_ops.pipelines.release import release_pipeline

    names = task_names(release_pipeline)
    assert names["train"] == "train_id" and names["train-2"] == "train_multishot"
    assert names["train-3"] == "train_av" and names["train-4"] == "train_joint"
    assert names["generate-data"] == "generate_data" and names["record-not-promoted"] == "record_not_promoted"
    assert all(" " not in v for v in names.values())

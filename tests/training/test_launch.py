"""One launcher, two local backends (training/launch.py): ``inprocess`` (world size 1 here)
and ``local`` (torchrun --standalone, gloo on CPU). ``mavin-ops train --nproc 2`` trains on
two processes; a failing rank fails the launch with its own error and log."""

from __future__ import annotations

import json

import pytest

from mavin_ops.cli import main
from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.launch import StageLaunch, launch
from mavin_ops.training.trainer import TrainError


def test_two_local_processes_train_a_stage_and_report_rank_zeros_result(debug_dataset, tmp_path, capsys):
    out = tmp_path / "id"
    assert main(["train", "--stage", "id", "--preset", "debug", "--dataset", str(debug_dataset), "--out", str(out),
                 "--steps", "2", "--no-track", "--nproc", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{\n"):])
    assert result["step"] == 2 and result["checkpoint"].startswith(str(out))
    meta = ckpt.load_json(result["checkpoint"], "meta.json")
    assert meta["world_size"] == 2 and len(meta["losses"]) == 2
    # Both ranks' output reached this process (the step log, in a release), rank by rank.
    assert "[rank 0]" in printed and "[rank 1]" in printed
    assert (tmp_path / ".id.ranks").is_dir()


def test_a_failing_rank_fails_the_launch_with_its_error_and_log(debug_dataset, tmp_path):
    spec = StageLaunch("multishot", "debug", dataset=str(debug_dataset), out_dir=str(tmp_path / "ms"), nproc=2, steps=1, track=False)
    with pytest.raises(TrainError) as err:  # multishot needs the id stage's checkpoint: every rank refuses
        launch(spec, log_dir=tmp_path / "ranks", timeout_s=300)
    message = str(err.value)
    assert message.startswith("stage multishot failed on rank 0 of 2: ") and "starts from the 'id' stage's final checkpoint" in message
    assert "(log: " in message and str(tmp_path / "ranks") in message and "\n" not in message


def test_one_process_runs_in_this_process(debug_dataset, tmp_path):
    res = launch(StageLaunch("id", "debug", dataset=str(debug_dataset), out_dir=str(tmp_path / "id"), steps=1, track=False))
    assert res.world_size == 1 and res.step == 1

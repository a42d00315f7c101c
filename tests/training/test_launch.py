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


def test_two_processes_take_the_same_steps_as_one_process_accumulating_two_micro_batches(debug_dataset, tmp_path):
    """Same global batch (2 micro-batches per step), same seed: 1 process x accum 2 and 2
    processes x accum 1 see the same clips and the same noise, so they end at the same
    parameters (up to float summation order); both ranks hold identical parameters."""
    import torch

    common = dict(dataset=str(debug_dataset), steps=3, track=False)
    one = launch(StageLaunch("id", "debug", out_dir=str(tmp_path / "one"), accum=2, **common))
    two = launch(StageLaunch("id", "debug", out_dir=str(tmp_path / "two"), nproc=2, **common), log_dir=tmp_path / "ranks", timeout_s=600)
    meta = ckpt.load_json(two.checkpoint, "meta.json")
    assert meta["world_size"] == 2 and len(meta["rank_param_sha256"]) == 2 and len(set(meta["rank_param_sha256"])) == 1
    assert ckpt.load_json(one.checkpoint, "meta.json")["recipe"]["accum"] == 2
    a, b = (ckpt.load_tensors(r.checkpoint, "model.safetensors") for r in (one, two))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"largest relative parameter difference {worst:.2e}"
    for x, y in zip(one.losses, two.losses):
        assert abs(x["loss"] - y["loss"]) <= 1e-4 * max(1.0, abs(x["loss"])), (one.losses, two.losses)
    assert len(one.losses) == 3 and torch.isfinite(torch.tensor([x["loss"] for x in one.losses])).all()
    init = ckpt.load_json(one.checkpoint, "meta.json")  # the steps did move the parameters (not two untouched copies)
    assert init["losses"][0]["loss"] != init["losses"][-1]["loss"]


def test_a_checkpoint_resumes_on_another_world_size_and_continues_the_same_run(debug_dataset, tmp_path):
    """2 processes train steps 1-2, one process (accumulating 2) resumes for steps 3-4 and two
    processes again for 5-6, all from the same consolidated checkpoint folder: the result is
    the uninterrupted one-process run (same global batch, same clips and noise per step)."""
    common = dict(dataset=str(debug_dataset), track=False)
    straight = launch(StageLaunch("id", "debug", out_dir=str(tmp_path / "straight"), steps=6, accum=2, **common))
    out = str(tmp_path / "moving")
    launch(StageLaunch("id", "debug", out_dir=out, nproc=2, steps=2, **common), log_dir=tmp_path / "r1", timeout_s=600)
    mid = launch(StageLaunch("id", "debug", out_dir=out, steps=4, accum=2, **common))
    assert mid.resumed_from and mid.resumed_from.endswith("step-00000002")
    end = launch(StageLaunch("id", "debug", out_dir=out, nproc=2, steps=6, **common), log_dir=tmp_path / "r2", timeout_s=600)
    meta = ckpt.load_json(end.checkpoint, "meta.json")
    assert meta["world_size"] == 2 and meta["resumed_from"].endswith("step-00000004") and len(set(meta["rank_param_sha256"])) == 1
    assert [round(x["loss"], 4) for x in meta["losses"]] == [round(x["loss"], 4) for x in straight.losses]
    a, b = (ckpt.load_tensors(r.checkpoint, "model.safetensors") for r in (straight, end))
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"largest relative parameter difference against the uninterrupted run: {worst:.2e}"

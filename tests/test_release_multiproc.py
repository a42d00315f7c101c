"""A short release whose train steps each run two local processes (``--train-procs 2``:
torchrun, gloo on CPU): both ranks train every stage, both hold identical parameters at
every checkpoint, and the final checkpoint equals (within float tolerance) the same four
stages run in one process accumulating two micro-batches per step (same global batch, same
seed, same clips, same noise)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mavin_ops.release import run_release
from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.launch import StageLaunch, launch
from mavin_ops.training.recipes import STAGES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release_support

from release_support import DEBUG_RELEASE  # noqa: E402


@pytest.mark.slow
def test_a_two_process_release_trains_like_one_process_with_the_same_global_batch(tmp_path, isolated_home):
    result = run_release(**DEBUG_RELEASE, train_procs=2, model_name="mavin-2proc")
    assert result.succeeded, result.error
    logs = Path(result.folder) / "logs"
    finals = {}
    for stage in STAGES:
        text = (logs / f"train_{stage}.log").read_text()
        assert "[rank 0]" in text and "[rank 1]" in text, f"train_{stage}: not both ranks"
        root = isolated_home / "runs" / result.release_id / "train" / stage
        steps = ckpt.checkpoint_dirs(root)
        assert steps, root
        for _, path in steps:  # every checkpoint kept: both ranks' parameters hashed equal
            meta = ckpt.load_json(path, "meta.json")
            assert meta["world_size"] == 2 and len(set(meta["rank_param_sha256"])) == 1 and len(meta["rank_param_sha256"]) == 2
        finals[stage] = ckpt.find_resumable(root, log=None)

    # The same chain in one process, two micro-batches per step, on the data the release trained on.
    validated = next(Path(result.pipeline_dir).rglob("validated/manifest.jsonl")).parent
    previous = None
    for stage in STAGES:
        one = launch(StageLaunch(stage, "debug", dataset=str(validated), out_dir=str(tmp_path / "one" / stage), steps=DEBUG_RELEASE["train_steps"],
                                 accum=2, init_checkpoint=previous, track=False))
        previous = one.checkpoint
    a = ckpt.load_tensors(previous, "model.safetensors")
    b = ckpt.load_tensors(finals["joint"], "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"largest relative parameter difference against one process: {worst:.2e}"

"""Fault tests in real child processes: kill -9 during a checkpoint write, SIGTERM mid-step,
and a two-process torchrun (gloo, ZeRO 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.trainer import train_stage
from toy_adapter import ToyAdapter
from train_helpers import child_env, stage_runs

HERE = Path(__file__).resolve().parent
CHILD = HERE / "train_child.py"
OVERRIDES = {"steps": 6, "checkpoint_every": 2, "keep_last": 3}  # as in train_child.py


def _child(args, **popen):
    return subprocess.Popen([sys.executable, str(CHILD), *map(str, args)], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def uninterrupted(debug_dataset, tmp_path_factory):
    """The reference: the same stage trained in one go (this process, one thread)."""
    tmp = tmp_path_factory.mktemp("straight")
    return train_stage("id", "debug", dataset=debug_dataset, out_dir=tmp / "id", latents_dir=tmp / "lat", adapter=ToyAdapter(), overrides=OVERRIDES, track=False, progress=False)


def test_kill_9_while_writing_a_checkpoint_never_loads_the_partial_one(debug_dataset, tmp_path, uninterrupted):
    out, lat = tmp_path / "id", tmp_path / "lat"
    proc = _child([debug_dataset, out, lat, tmp_path / "r.json", "--fault", "kill9-at-save:4"])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, log
    partial = [p for p in out.iterdir() if p.name.startswith(".tmp-step-00000004")]
    assert len(partial) == 1 and not (partial[0] / ckpt.MANIFEST).exists()  # killed mid-write
    assert [s for s, _ in ckpt.checkpoint_dirs(out)] == [2]

    proc = _child([debug_dataset, out, lat, tmp_path / "r.json"])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"resuming from {out / 'step-00000002'}" in log
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["resumed_from"] == str(out / "step-00000002")
    assert res["losses"] == uninterrupted.losses
    assert not partial[0].exists()  # removed by the next save


def test_sigterm_mid_step_checkpoints_exits_143_marks_the_run_killed_and_the_next_attempt_resumes(debug_dataset, tmp_path, uninterrupted):
    out, lat = tmp_path / "id", tmp_path / "lat"
    marker, go = tmp_path / "in-step-3", tmp_path / "go"
    proc = _child([debug_dataset, out, lat, tmp_path / "r.json", "--fault", f"wait-at-step:3:{marker}:{go}", "--track", "rel-sigterm"])
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0] if proc.poll() is not None else "timeout"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # the child is inside step 3's forward pass
    go.write_text("go")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, log
    assert "SIGTERM: writing a checkpoint at step 3" in log
    assert [s for s, _ in ckpt.checkpoint_dirs(out)][0] == 3
    ckpt.verify_checkpoint(out / "step-00000003")
    [killed] = stage_runs("train_id")
    assert killed.info.status == "KILLED"

    proc = _child([debug_dataset, out, lat, tmp_path / "r.json", "--track", "rel-sigterm"])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["resumed_from"] == str(out / "step-00000003")
    assert res["losses"] == uninterrupted.losses
    runs = stage_runs("train_id")
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED"]
    assert runs[0].data.tags["mlflow.parentRunId"] == runs[1].data.tags["mlflow.parentRunId"]


TORCHRUN_SCRIPT = '''
import hashlib, json, os, sys
import torch
torch.set_num_threads(1)
from mavin_ops.training.mavin_adapter import MavinAdapter
from mavin_ops.training.trainer import train_stage

class Capture(MavinAdapter):
    engine = None
    def losses(self, model, batch, generator=None):
        Capture.engine = model
        return super().losses(model, batch, generator)

dataset, out, lat, dump = sys.argv[1:5]
res = train_stage("id", "debug", dataset=dataset, out_dir=out, latents_dir=lat, adapter=Capture("debug"),
                  overrides={"steps": 3, "zero_stage": 2, "checkpoint_every": 0}, track=False, progress=False)
rank = torch.distributed.get_rank()
state = {k: v.detach().cpu() for k, v in Capture.engine.module.state_dict().items()}
h = hashlib.sha256()
for k in sorted(state):
    h.update(k.encode()); h.update(state[k].contiguous().numpy().tobytes())
json.dump({"rank": rank, "world": res.world_size, "sha": h.hexdigest(), "losses": res.losses, "checkpoint": res.checkpoint},
          open(os.path.join(dump, f"rank{rank}.json"), "w"))
'''


@pytest.mark.slow
def test_two_process_torchrun_zero2_ends_with_identical_parameters(debug_dataset, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(TORCHRUN_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(debug_dataset), str(tmp_path / "id"), str(tmp_path / "lat"), str(tmp_path)]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["sha"] == r1["sha"]  # ZeRO 2 all-gathered the same parameters on both ranks
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 3
    import torch

    meta = ckpt.load_json(r0["checkpoint"], "meta.json")
    assert meta["world_size"] == 2 and meta["zero_stage"] == 2
    opt = ckpt.load_tensors(r0["checkpoint"], "optimizer.safetensors")
    assert opt["step"].item() == 3
    nonzero = [k for k, v in opt.items() if k.startswith("exp_avg_sq.") and torch.count_nonzero(v) > 0]
    assert nonzero and len(nonzero) == sum(1 for k in opt if k.startswith("exp_avg_sq."))  # both ranks' partitions gathered
    rng = ckpt.load_tensors(r0["checkpoint"], "rng.safetensors")
    assert "torch_cpu.rank0" in rng and "torch_cpu.rank1" in rng

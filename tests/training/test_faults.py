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
    from contextlib import ExitStack

    from mavin_ops.training.engine import ShardedOptimizerState

    assert meta["optimizer_form"] == "sharded"
    names = _shards(Path(r0["checkpoint"]))
    assert names == ["optimizer.rank00000-of-00002.safetensors", "optimizer.rank00001-of-00002.safetensors"]
    model = ckpt.load_tensors(r0["checkpoint"], "model.safetensors")
    with ExitStack() as stack:  # the two ranks' partitions put together cover every parameter once
        readers = [stack.enter_context(ckpt.open_tensors(r0["checkpoint"], n)) for n in names]
        state = ShardedOptimizerState([(json.loads(r.metadata()["index"]), r) for r in readers], {k: tuple(v.shape) for k, v in model.items()})
        assert state.get("step").item() == 3
        sq = [k for k in state.keys() if k.startswith("exp_avg_sq.")]
        assert sq and all(torch.count_nonzero(state.get(k)) > 0 for k in sq)
    rng = ckpt.load_tensors(r0["checkpoint"], "rng.safetensors")
    assert "torch_cpu.rank0" in rng and "torch_cpu.rank1" in rng


# --------------------------------------------------------------------------- two ranks, sharded form


def _torchrun(args, **popen):
    """train_child.py on two local ranks (gloo, ZeRO 2): the sharded checkpoint form."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(CHILD), *map(str, args)]
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _shards(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("optimizer.rank"))


def test_two_ranks_kill_9_of_one_rank_after_its_shard_never_commits_the_checkpoint(debug_dataset, tmp_path):
    out, lat = tmp_path / "id", tmp_path / "lat"
    proc = _torchrun([debug_dataset, out, lat, tmp_path / "r.json", "--fault", "kill9-rank-after-shard:1:4"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, log
    [partial] = [p for p in out.iterdir() if p.name.startswith(".tmp-step-00000004")]
    assert "optimizer.rank00001-of-00002.safetensors" in _shards(partial) and not (partial / ckpt.MANIFEST).exists()
    assert [s for s, _ in ckpt.checkpoint_dirs(out)] == [2]
    assert _shards(out / "step-00000002") == ["optimizer.rank00000-of-00002.safetensors", "optimizer.rank00001-of-00002.safetensors"]
    ckpt.verify_checkpoint(out / "step-00000002")

    proc = _torchrun([debug_dataset, out, lat, tmp_path / "r.json"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["resumed_from"] == str(out / "step-00000002") and res["step"] == 6 and res["world_size"] == 2
    assert not partial.exists()  # removed by the next save


def test_two_ranks_a_flipped_byte_in_one_rank_file_is_refused_and_the_previous_checkpoint_resumes(debug_dataset, tmp_path):
    out, lat = tmp_path / "id", tmp_path / "lat"
    proc = _torchrun([debug_dataset, out, lat, tmp_path / "r.json"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert [s for s, _ in ckpt.checkpoint_dirs(out)] == [6, 4, 2]
    assert ckpt.load_json(out / "step-00000006")["optimizer_form"] == "sharded"
    for step in (6, 4):  # corrupt the newest two: one byte in rank 1's file of each
        f = out / ckpt.step_name(step) / "optimizer.rank00001-of-00002.safetensors"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="optimizer.rank00001-of-00002.safetensors"):
        ckpt.verify_checkpoint(out / "step-00000006")
    # one process resumes from the newest intact one: the two ranks' files put back together
    res = train_stage("id", "debug", dataset=debug_dataset, out_dir=out, latents_dir=lat, adapter=ToyAdapter(),
                      overrides={**OVERRIDES, "steps": 7, "accum": 2}, track=False, progress=False)
    assert res.resumed_from == str(out / "step-00000002") and res.step == 7 and res.world_size == 1
    assert ckpt.load_json(res.checkpoint)["optimizer_form"] == "consolidated"


def test_two_ranks_sigterm_to_torchrun_writes_a_sharded_checkpoint_and_exits(debug_dataset, tmp_path):
    out, lat = tmp_path / "id", tmp_path / "lat"
    marker, go = tmp_path / "in-step-3", tmp_path / "go"
    proc = _torchrun([debug_dataset, out, lat, tmp_path / "r.json", "--fault", f"wait-at-step:3:{marker}:{go}"], start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0] if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to torchrun, as Kubernetes stops a pod: it passes it on to both ranks
    time.sleep(1.0)
    go.write_text("go")
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, log
    assert "SIGTERM: writing a checkpoint at step 3" in log, log[-3000:]
    assert [s for s, _ in ckpt.checkpoint_dirs(out)][0] == 3
    ckpt.verify_checkpoint(out / "step-00000003")
    assert len(_shards(out / "step-00000003")) == 2
    meta = ckpt.load_json(out / "step-00000003")
    assert meta["world_size"] == 2 and len(set(meta["rank_param_sha256"])) == 1

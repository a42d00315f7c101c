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


# --------------------------------------------------------------------------- lying rank files


@pytest.fixture(scope="module")
def sharded_step(debug_dataset, tmp_path_factory) -> Path:
    """A sharded checkpoint (step 6) written by two ranks, to craft lies into copies of."""
    tmp = tmp_path_factory.mktemp("sharded")
    proc = _torchrun([debug_dataset, tmp / "id", tmp / "lat", tmp / "r.json"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    step = tmp / "id" / "step-00000006"
    assert _shards(step) == ["optimizer.rank00000-of-00002.safetensors", "optimizer.rank00001-of-00002.safetensors"]
    return step


def _rank_file(rank: int) -> str:
    return f"optimizer.rank{rank:05d}-of-00002.safetensors"


def _recommit(step: Path, name: str) -> None:
    """Make the manifest agree with a rewritten file, as someone who can write the folder would."""
    from mavin_ops.data.manifest import sha256_file

    manifest = json.loads((step / ckpt.MANIFEST).read_text())
    manifest["files"][name] = {"sha256": sha256_file(step / name), "bytes": (step / name).stat().st_size}
    (step / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _rewrite(step: Path, rank: int, edit) -> None:
    """Rewrite one rank file after ``edit(index, tensors)`` changed its fragment index and tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = step / _rank_file(rank)
    with safe_open(str(path), framework="pt") as fh:
        meta, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}
    index = json.loads(meta["index"])
    edit(index, tensors)
    meta["index"] = index if isinstance(index, str) else json.dumps(index)
    save_file(tensors, str(path), metadata=meta)
    _recommit(step, path.name)


def _whole(step: Path) -> tuple[int, str, int]:
    """(rank, parameter, numel) of a parameter one rank file holds whole, with 300+ elements."""
    from safetensors import safe_open

    indexes = []
    for rank in (0, 1):
        with safe_open(str(step / _rank_file(rank)), framework="pt") as fh:
            indexes.append(json.loads(fh.metadata()["index"]))
    for rank, idx in enumerate(indexes):
        for name, (start, n) in idx.items():
            if start == 0 and n >= 300 and name not in indexes[1 - rank]:
                return rank, name, n
    raise AssertionError("no parameter held whole by one rank")


def _overlap(step, rank, name, n):
    """The review's lie: two fragments whose sizes add up to the parameter, overlapping by 100."""
    import torch

    def mine(index, tensors):
        index[name] = [0, n - 100]
        for k in ("master", "exp_avg", "exp_avg_sq"):
            tensors[f"{k}.{name}"] = tensors[f"{k}.{name}"][: n - 100].clone()

    def other(index, tensors):
        index[name] = [n - 200, 100]
        for k in ("master", "exp_avg", "exp_avg_sq"):
            tensors[f"{k}.{name}"] = torch.ones(100)

    _rewrite(step, rank, mine)
    _rewrite(step, 1 - rank, other)


def _index(entry):
    def craft(step, rank, name, n):
        _rewrite(step, rank, lambda index, tensors: index.__setitem__(name, entry(n)))
    return craft


def _short_tensor(step, rank, name, n):
    def edit(index, tensors):
        tensors[f"exp_avg.{name}"] = tensors[f"exp_avg.{name}"][: n - 10].clone()
    _rewrite(step, rank, edit)


def _retyped(step, rank, name, n):
    """The right number of elements in another dtype (int64 would be cast without a word)."""
    def edit(index, tensors):
        tensors[f"exp_avg.{name}"] = tensors[f"exp_avg.{name}"].to(torch.int64)

    import torch

    _rewrite(step, rank, edit)


def _two_steps(step, rank, name, n):
    def edit(index, tensors):
        tensors["step"] = torch.tensor([6.0, 7.0], dtype=torch.float64)

    import torch

    _rewrite(step, 0, edit)


def _not_json(step, rank, name, n):
    """An index nested 100,000 deep."""
    path = step / _rank_file(rank)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(tensors, str(path), metadata={"index": "[" * 100_000})
    _recommit(step, path.name)


def _huge_shape(step, rank, name, n):
    """A header that declares shape 10^12 for one tensor (the data left as it is)."""
    path = step / _rank_file(rank)
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header[f"exp_avg.{name}"]["shape"] = [10**12]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])
    _recommit(step, path.name)


@pytest.mark.parametrize(
    ("craft", "says"),
    [
        (_overlap, "overlap (100 elements held twice)"),
        (_index(lambda n: [n - 4, 8]), "is not inside its"),  # past the end, short tensor
        (_index(lambda n: [100, n]), "is not inside its"),  # past the end, full tensor
        (_index(lambda n: [-100, n]), "is not inside its"),  # negative offset
        (_index(lambda n: [0.5, n]), "not [start, n] in whole numbers"),
        (_short_tensor, "where its index says"),
        (_huge_shape, "does not fit this run"),
        (_retyped, "is torch.int64, not float32"),
        (_two_steps, "'step' is [2] torch.float64, not one number"),
        (_not_json, "fragment index is not JSON"),
    ],
    ids=["overlap", "past-end-short", "past-end-full", "negative", "not-int", "short-tensor", "shape-1e12", "int64", "two-steps", "deep-json"],
)
def test_a_lying_rank_file_is_one_line_and_nothing_loads(sharded_step, debug_dataset, tmp_path, craft, says):
    """Each lie of a rank file whose manifest was made to agree with it: the resume refuses
    it in one line (never a traceback, never zeros or another rank's numbers loaded)."""
    import shutil

    from mavin_ops.training.trainer import TrainError

    out = tmp_path / "id"
    step = out / sharded_step.name
    shutil.copytree(sharded_step, step)
    rank, name, n = _whole(step)
    craft(step, rank, name, n)
    ckpt.verify_checkpoint(step)  # the manifest agrees: only the content lies
    with pytest.raises(TrainError) as err:
        train_stage("id", "debug", dataset=debug_dataset, out_dir=out, latents_dir=tmp_path / "lat", adapter=ToyAdapter(),
                    overrides={**OVERRIDES, "steps": 7, "accum": 2}, track=False, progress=False)
    message = str(err.value)
    assert says in message and "\n" not in message and message.startswith(f"checkpoint {step}"), message

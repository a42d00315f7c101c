"""A training process the fault tests start, kill and restart (toy adapter, debug recipe).

    python train_child.py <dataset> <out> <latents> <result.json> [--fault kill9-at-save:<step>]
                          [--fault wait-at-step:<n>:<marker>:<go>] [--track <release_id>]
                          [--fault kill9-rank-after-shard:<rank>:<step>]

Under torchrun (two ranks) the sharded checkpoint form is written; ``kill9-rank-after-shard``
kills that rank with SIGKILL right after its own optimizer file of that step is durable.
Writes the stage result as JSON to <result.json> when it finishes (rank 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from toy_adapter import ToyAdapter  # noqa: E402

from mavin_ops.training import checkpoint as ckpt  # noqa: E402
from mavin_ops.training import trainer  # noqa: E402

OVERRIDES = {"steps": 6, "checkpoint_every": 2, "keep_last": 3}


class WaitAt(ToyAdapter):
    """At the n-th step, announce it (marker file) and wait for the test's go file: the test
    sends SIGTERM in between, i.e. in the middle of that step."""

    def __init__(self, at: int, marker: str, go: str):
        super().__init__()
        self.at, self.marker, self.go, self.calls = at, Path(marker), Path(go), 0

    def losses(self, model, batch, generator=None):
        self.calls += 1
        if self.calls == self.at:
            self.marker.write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not self.go.exists() and time.time() < deadline:
                time.sleep(0.01)
        return super().losses(model, batch, generator)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("out")
    p.add_argument("latents")
    p.add_argument("result")
    p.add_argument("--fault", default="")
    p.add_argument("--track", default="")
    a = p.parse_args()
    adapter = ToyAdapter()
    kind, _, arg = a.fault.partition(":")
    if kind == "kill9-at-save":
        target = int(arg)
        real_save = ckpt.save_checkpoint

        def save(root, step, **kw):
            if step == target:  # kill -9 once the first file of this checkpoint is on disk
                kw["on_file_written"] = lambda path: os.kill(os.getpid(), signal.SIGKILL)
            return real_save(root, step, **kw)

        ckpt.save_checkpoint = save
    elif kind == "kill9-rank-after-shard":
        rank, target = (int(x) for x in arg.split(":"))
        real_write = ckpt.write_tensor_file

        def write(tmp, name, tensors, metadata=None):
            entry = real_write(tmp, name, tensors, metadata)
            if name.startswith(f"optimizer.rank{rank:05d}") and Path(tmp).name.startswith(f".tmp-{ckpt.step_name(target)}-"):
                os.kill(os.getpid(), signal.SIGKILL)
            return entry

        ckpt.write_tensor_file = write
    elif kind == "wait-at-step":
        n, marker, go = arg.split(":")
        adapter = WaitAt(int(n), marker, go)
    res = trainer.train_stage(
        "id",
        "debug",
        dataset=a.dataset,
        out_dir=a.out,
        latents_dir=a.latents,
        adapter=adapter,
        overrides=OVERRIDES,
        track=bool(a.track),
        release_id=a.track,
        progress=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        Path(a.result).write_text(json.dumps(res.to_dict()))


if __name__ == "__main__":
    main()

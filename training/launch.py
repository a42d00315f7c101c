"""One way to start a training stage, whatever runs it.

A stage launch is described once (:class:`StageLaunch`: stage, preset, data, where it
starts, where it writes, how many processes) and run by a backend:

- ``inprocess``: world size 1 in the calling process (:func:`trainer.train_stage`); tests,
  ``debug`` and the embedded default;
- ``local``: ``torchrun --standalone --nproc-per-node N`` on this machine (gloo on CPU, NCCL
  on GPUs) running ``python -m mavin_ops.training train``. Each rank's output goes to its own
  log under ``log_dir`` and is copied into this process's output, rank by rank, when the
  stage ends; a failure of any rank fails the launch with that rank's last error line and
  the path of its log.

The cluster backend (a Kubeflow ``TrainJob``, rendered by :mod:`training.cluster`) is not
started from here yet: ``mavin-ops plan`` prints the job a stage would submit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from . import checkpoint as ckpt
from .trainer import StageResult, TrainError, train_stage

__all__ = ["BACKENDS", "StageLaunch", "launch"]

BACKENDS = ("inprocess", "local")
#: Variables an in-process run may have set for its world of one; a child world sets its own.
_RANK_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
              "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


@dataclass(frozen=True)
class StageLaunch:
    """Everything a stage launch needs, for any backend."""

    stage: str
    preset: str
    dataset: str
    out_dir: str
    nproc: int = 1
    init_checkpoint: str | None = None
    steps: int = 0
    dataset_digest: str = ""
    release_id: str = ""
    kfp_run_id: str = ""
    track: bool = True

    @property
    def backend(self) -> str:
        return "inprocess" if self.nproc == 1 else "local"


def launch(spec: StageLaunch, *, log_dir: str | os.PathLike | None = None, timeout_s: float | None = None) -> StageResult:
    """Run the stage with its backend and return rank 0's result."""
    if spec.nproc < 1:
        raise TrainError(f"a stage needs at least one process, got nproc={spec.nproc}")
    if spec.backend == "inprocess":
        return train_stage(spec.stage, spec.preset, dataset=spec.dataset, out_dir=spec.out_dir, init_checkpoint=spec.init_checkpoint,
                           overrides={"steps": spec.steps} if spec.steps else None, dataset_digest=spec.dataset_digest,
                           release_id=spec.release_id, kfp_run_id=spec.kfp_run_id, track=spec.track, progress=False)
    return _local(spec, Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"mavin-{spec.stage}-ranks-")), timeout_s)


def _local(spec: StageLaunch, log_dir: Path, timeout_s: float | None) -> StageResult:
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={spec.nproc}",
           f"--log-dir={log_dir}", "--redirects=3",
           "-m", "mavin_ops.training", "train", "--stage", spec.stage, "--preset", spec.preset, "--dataset", str(spec.dataset),
           "--out", str(spec.out_dir), "--progress", "lines"]
    for flag, value in (("--init", spec.init_checkpoint), ("--dataset-digest", spec.dataset_digest), ("--release-id", spec.release_id),
                        ("--kfp-run-id", spec.kfp_run_id), ("--steps", str(spec.steps) if spec.steps else None)):
        if value:
            cmd += [flag, str(value)]
    if not spec.track:
        cmd.append("--no-track")
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS}
    # Each rank gets its share of the cores (torchrun's default of 1 thread is too few on a GPU box, too many here).
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // spec.nproc)))
    env["PYTHONUNBUFFERED"] = "1"
    print(f"launching {spec.stage} on {spec.nproc} local processes: {' '.join(cmd[3:6])} ... (rank logs in {log_dir})", flush=True)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TrainError(f"stage {spec.stage} on {spec.nproc} processes ran past {timeout_s:g} s; rank logs in {log_dir}") from None
    logs = _rank_logs(log_dir, spec.nproc)
    for rank, (out, err) in sorted(logs.items()):  # into this process's output (the step log), rank by rank
        for path in (out, err):
            if path is not None and path.is_file():
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    print(f"[rank {rank}] {line}")
    if proc.returncode != 0:
        raise TrainError(_failure(spec, proc, logs))
    stdout = logs.get(0, (None, None))[0]
    found = [json.loads(x) for x in (stdout.read_text(encoding="utf-8").splitlines() if stdout else []) if x.startswith("{\"stage\"")]
    if not found:
        raise TrainError(f"stage {spec.stage} on {spec.nproc} processes ended without rank 0's result; see {log_dir}")
    res = found[-1]
    meta = ckpt.load_json(res["checkpoint"], "meta.json")
    known = {f.name for f in fields(StageResult)}
    return StageResult(**{k: v for k, v in res.items() if k in known}, losses=list(meta.get("losses", [])))


def _rank_logs(log_dir: Path, nproc: int) -> dict[int, tuple[Path | None, Path | None]]:
    """rank -> (stdout.log, stderr.log) under torchrun's log folder (newest attempt)."""
    out: dict[int, tuple[Path | None, Path | None]] = {}
    for rank in range(nproc):
        outs = sorted(log_dir.rglob(f"attempt_*/{rank}/stdout.log"), key=lambda p: p.stat().st_mtime)
        errs = sorted(log_dir.rglob(f"attempt_*/{rank}/stderr.log"), key=lambda p: p.stat().st_mtime)
        out[rank] = (outs[-1] if outs else None, errs[-1] if errs else None)
    return out


_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt)\b.*|error: .*)$")


def _failure(spec: StageLaunch, proc: subprocess.CompletedProcess, logs: dict[int, tuple[Path | None, Path | None]]) -> str:
    """One line: the first rank whose log ends in an error, that error and the log's path."""
    for rank, (out, err) in sorted(logs.items()):
        for path in (err, out):
            if path is None or not path.is_file():
                continue
            lines = [x.strip() for x in path.read_text(encoding="utf-8", errors="replace").splitlines() if _ERROR_LINE.match(x.strip())]
            if lines:
                return f"stage {spec.stage} failed on rank {rank} of {spec.nproc}: {lines[-1]} (log: {path})"
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()
    return f"stage {spec.stage} on {spec.nproc} processes failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}"

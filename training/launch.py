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

- ``trainjob``: a Kubeflow Trainer ``TrainJob`` (rendered by :mod:`training.manifests` from a
  :class:`~training.manifests.ClusterSpec`: nodes, GPUs per node, image, shared volume) created
  through the Kubernetes API and followed to its end by :mod:`training.k8s`; rank 0's log
  streams into this process's output, a cancelled step deletes the job, a retried step
  re-attaches to it. The checkpoints are on the shared volume, so ``out_dir`` must be a path
  this process sees at the same place as the job's pods (``<volume>/.../<stage>``).
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
from typing import TYPE_CHECKING

from . import checkpoint as ckpt
from .manifests import BACKENDS
from .trainer import StageResult, TrainError, train_stage

if TYPE_CHECKING:  # pragma: no cover
    from .manifests import ClusterSpec

__all__ = ["BACKENDS", "LAUNCH_ENV", "StageLaunch", "from_environment", "launch", "result_from_checkpoint"]

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
    accum: int = 0  # > 0 overrides the recipe's micro-batches per optimizer step
    #: "" picks by size: inprocess for one process, local for more; "trainjob" for a cluster.
    kind: str = ""

    @property
    def backend(self) -> str:
        if self.kind:
            return self.kind
        return "inprocess" if self.nproc == 1 else "local"


def launch(spec: StageLaunch, *, log_dir: str | os.PathLike | None = None, timeout_s: float | None = None,
           cluster: "ClusterSpec | None" = None, apis: tuple | None = None) -> StageResult:
    """Run the stage with its backend and return rank 0's result. ``cluster`` sizes a
    ``trainjob`` launch (default :class:`~training.manifests.ClusterSpec`); ``apis`` are the
    Kubernetes API clients to use (default: configured from the pod or the kubeconfig)."""
    if spec.backend not in BACKENDS:
        raise TrainError(f"unknown launch backend '{spec.backend}'; one of {', '.join(BACKENDS)}")
    if spec.nproc < 1:
        raise TrainError(f"a stage needs at least one process, got nproc={spec.nproc}")
    if spec.backend == "trainjob":
        return _trainjob(spec, cluster, timeout_s, apis)
    if spec.backend == "inprocess":
        return train_stage(spec.stage, spec.preset, dataset=spec.dataset, out_dir=spec.out_dir, init_checkpoint=spec.init_checkpoint,
                           overrides={"steps": spec.steps or None, "accum": spec.accum or None}, dataset_digest=spec.dataset_digest,
                           release_id=spec.release_id, kfp_run_id=spec.kfp_run_id, track=spec.track, progress=False)
    return _local(spec, Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"mavin-{spec.stage}-ranks-")), timeout_s)


def _local(spec: StageLaunch, log_dir: Path, timeout_s: float | None) -> StageResult:
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={spec.nproc}",
           f"--log-dir={log_dir}", "--redirects=3",
           "-m", "mavin_ops.training", "train", "--stage", spec.stage, "--preset", spec.preset, "--dataset", str(spec.dataset),
           "--out", str(spec.out_dir), "--progress", "lines"]
    for flag, value in (("--init", spec.init_checkpoint), ("--dataset-digest", spec.dataset_digest), ("--release-id", spec.release_id),
                        ("--kfp-run-id", spec.kfp_run_id), ("--steps", str(spec.steps) if spec.steps else None),
                        ("--accum", str(spec.accum) if spec.accum else None)):
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


#: The environment variable a cluster profile sets on the train steps (pipelines/cluster.py):
#: JSON ``{"training": <the profile's training section>, "image": ..., "env": {...},
#: "secrets": [[ENV, secret, key], ...]}``.
LAUNCH_ENV = "MAVIN_LAUNCH"


def from_environment(stage: str, home: str, procs: int = 1) -> tuple[str, int, "ClusterSpec | None"]:
    """(backend, processes, cluster) for ``stage`` from ``$MAVIN_LAUNCH``; without it, the
    launcher picks by ``procs`` (inprocess or local). A ``local`` plan runs one process per
    GPU of the step's own pod (``gpus_per_node``)."""
    from .manifests import SecretEnv, plan_for_stage

    raw = os.environ.get(LAUNCH_ENV, "")
    if not raw:
        return "", max(1, procs), None
    try:
        given = json.loads(raw)
        secrets = tuple(SecretEnv(*x) for x in given.get("secrets", [])) if "secrets" in given else None
        kind, cluster = plan_for_stage(given.get("training") or {}, stage, image=given.get("image", ""), home=home,
                                       env=given.get("env") or {}, secrets=secrets, where=f"${LAUNCH_ENV} training")
    except (ValueError, TypeError, AttributeError) as exc:
        raise TrainError(f"${LAUNCH_ENV} is not a launch plan: {exc}") from None
    if kind == "local" and cluster is not None:
        return kind, cluster.gpus_per_node, None
    return kind, (1 if kind in ("inprocess", "trainjob") else max(1, procs)), cluster


def _trainjob(spec: StageLaunch, cluster: "ClusterSpec | None", timeout_s: float | None, apis: tuple | None) -> StageResult:
    from .manifests import ClusterSpec, render_trainjob
    from .k8s import TrainJobError, run_trainjob

    cluster = cluster or ClusterSpec()
    out = Path(spec.out_dir)
    if out.name != spec.stage:
        raise TrainError(f"a trainjob launch writes <out root>/<stage>: out_dir {out} must end in '{spec.stage}'")
    body = render_trainjob(spec.stage, spec.preset, cluster, dataset=str(spec.dataset), out_root=str(out.parent),
                           release_id=spec.release_id, dataset_digest=spec.dataset_digest, steps=spec.steps)
    seen: list[str] = []  # what this step saw of the job: status lines and rank 0's log

    def say(text: str) -> None:
        print(text, flush=True)
        seen.append(text)

    try:
        run_trainjob(body, apis=apis, timeout_s=timeout_s, say=say)
    except TrainJobError as exc:
        raise TrainError(f"stage {spec.stage} on the cluster: {exc}") from None
    try:
        final = ckpt.find_resumable(out, log=print)
    except ckpt.CheckpointError as exc:
        raise TrainError(f"stage {spec.stage}: the TrainJob completed but {exc}") from None
    if final is None:
        raise TrainError(f"stage {spec.stage}: the TrainJob completed but {out} holds no checkpoint; "
                         "is the shared volume mounted at the same path here and in the job?")
    result = result_from_checkpoint(final)
    if spec.track and result.run_id:
        _record_trainjob(result.run_id, f"{body['metadata']['namespace']}/{body['metadata']['name']}", seen)
    return result


def _record_trainjob(run_id: str, job: str, seen: list[str]) -> None:
    """Put the TrainJob's name (tag ``mavin.trainjob``) and what the step saw of it
    (``trainjob/rank0.log``) on the stage's MLflow run, which the trainer in the job made."""
    from mavin_ops import tracking

    try:
        c = tracking.client()
        c.set_tag(run_id, "mavin.trainjob", job)
        c.log_text(run_id, "\n".join(seen) + "\n", "trainjob/rank0.log")
    except Exception as exc:  # noqa: BLE001 - the stage trained; a tracking hiccup must not fail it
        print(f"could not record TrainJob {job} on MLflow run {run_id}: {exc}", flush=True)


def result_from_checkpoint(final: "ckpt.CheckpointInfo") -> StageResult:
    """A stage's result read back from its final checkpoint (what a job elsewhere wrote)."""
    meta = ckpt.load_json(final.path, "meta.json")
    return StageResult(stage=meta["stage"], preset=meta["preset"], checkpoint=str(final.path), checkpoint_sha256=final.manifest_sha256,
                       step=int(meta["step"]), losses=list(meta.get("losses", [])), resumed_from=meta.get("resumed_from"),
                       init_checkpoint=meta.get("init_checkpoint"), run_id=(meta.get("lineage") or {}).get("mlflow_run_id"),
                       world_size=int(meta.get("world_size", 1)), zero_stage=int(meta.get("zero_stage", 0)), samples_per_s=None,
                       dataset_digest=(meta.get("dataset") or {}).get("digest", ""))


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

"""The stage trainer: one recipe, the DeepSpeed engine, atomic checkpoints, an MLflow stage run.

:func:`train_stage` runs one stage of the recipe (``id``, ``multishot``, ``av``, ``joint``) for a
preset, in this process (world size 1) or as one rank under torchrun (world size N, the same
code). In order:

1. set up the process group (gloo on CPU, NCCL on GPU) and precompute the dataset's latents
   once (``training/data.py``);
2. resume from the newest intact checkpoint of this stage if there is one (model, optimizer
   and RNG state, the loss curve so far), else start from the previous stage's final
   checkpoint (``init_checkpoint``), else (``id`` only) from freshly initialized weights;
3. freeze every parameter outside the recipe's trainable groups, wrap the model in the
   DeepSpeed engine (ZeRO stage from the recipe) with AdamW;
4. train ``recipe.steps`` steps on the bucketed, interleaved batch schedule; loss =
   w_video * L_video + w_audio * L_audio; checkpoint every ``checkpoint_every`` steps and at
   the end; SIGTERM finishes the current step, writes a checkpoint and exits 143;
5. on rank 0, log a nested MLflow run under the pipeline's parent run: params (recipe, preset,
   world size, ZeRO stage), per-step losses per tower and throughput, the input dataset with
   its digest, and the checkpoint it started from. The run ends FAILED on a crash and KILLED
   on SIGTERM.

A progress bar (loss, samples/s) is shown on a terminal; otherwise plain log lines.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from mavin_ops import settings

from . import checkpoint as ckpt
from .recipes import BASE_STAGE, STAGES, RecipeError, StageRecipe, get_recipe, match_groups, needs_base, previous_stage
from mavin_ops.errors import MavinError

__all__ = [
    "EXIT_SIGTERM",
    "StageResult",
    "TrainError",
    "check_base",
    "load_trained_model",
    "train_stage",
    "train_stages",
]

#: Exit status after SIGTERM (128 + 15): a checkpoint was written, the next attempt resumes.
EXIT_SIGTERM = 143
_METRIC_FLUSH = 25  # MLflow metrics are sent in batches of this many steps


class TrainError(MavinError, RuntimeError):
    """Training cannot start or continue; the message says where and what to do."""


@dataclass
class StageResult:
    """What a finished stage produced (rank 0's view; every rank returns the same numbers)."""

    stage: str
    preset: str
    checkpoint: str  # final checkpoint folder
    checkpoint_sha256: str  # sha256 of its MANIFEST.json
    step: int
    losses: list[dict[str, float]]  # the whole stage's curve: step, loss, video, audio
    resumed_from: str | None
    init_checkpoint: str | None
    run_id: str | None
    world_size: int
    zero_stage: int
    samples_per_s: float | None
    dataset_digest: str
    refused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


class _StopFlag:
    """SIGTERM handler: remember the request; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals are only delivered to the main thread
        return
    previous = signal.signal(signal.SIGTERM, flag)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _to_device(obj: Any, device: Any) -> Any:
    if device.type == "cpu":
        return obj
    if hasattr(obj, "to") and callable(obj.to):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _batch_size(batch: Any, default: int) -> int:
    n = getattr(batch, "batch_size", None)
    if isinstance(n, int):
        return n
    video = getattr(batch, "video", None)
    if hasattr(video, "shape") and len(video.shape):
        return int(video.shape[0])
    if isinstance(batch, dict):
        for v in batch.values():
            if hasattr(v, "shape") and len(v.shape):
                return int(v.shape[0])
    return default


def _stage_number(stage: str) -> int:
    """1.. for the release stages in order, 0 for the base stage (seeds mix it in)."""
    return STAGES.index(stage) + 1 if stage in STAGES else 0


def _loop_seed(seed: int, stage: str, rank: int) -> int:
    return (seed * 1_000_003 + _stage_number(stage) * 7919 + rank * 104_729) % (2**31 - 1)


def _micro_seed(seed: int, stage: str, micro_index: int) -> int:
    """The seed of the noise of global micro-batch ``micro_index`` (see BatchSchedule.micro_index)."""
    return (seed * 1_000_003 + _stage_number(stage) * 7919 + micro_index * 104_729 + 17) % (2**31 - 1)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _Progress:
    """tqdm on a terminal (rank 0), plain log lines otherwise."""

    def __init__(self, stage: str, start: int, total: int, enabled: bool, bar: bool | None, log_every: int):
        from mavin_ops import progress

        self.stage, self.total, self.enabled, self.log_every = stage, total, enabled, log_every
        self.bar = None
        # Inside a release step: the release's terminal draws the bar (mavin_ops/progress.py).
        self.report = progress.reporter(f"train {stage}", total, "step", initial=start) if enabled else progress.reporter("", 0)
        if enabled and (sys.stderr.isatty() if bar is None else bar):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=f"train {stage}", unit="step", file=sys.stderr, dynamic_ncols=True)

    def log(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, flush=True)

    def update(self, step: int, loss: float, video: float, audio: float, sps: float) -> None:
        if not self.enabled:
            return
        self.report.update(1, loss=loss)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", video=f"{video:.4f}", audio=f"{audio:.4f}", sps=f"{sps:.1f}")
        elif step % self.log_every == 0 or step == self.total or step == 1:
            print(
                f"[train {self.stage}] step {step}/{self.total} loss {loss:.5f} video {video:.5f} audio {audio:.5f} | {sps:.1f} samples/s",
                flush=True,
            )

    def close(self) -> None:
        self.report.close()
        if self.bar is not None:
            self.bar.close()


#: A folder of hold files for fault drills (tests/test_release.py kills a release's step here).
HOLD_ENV = "MAVIN_HOLD_DIR"


def hold_point(stage: str, run_id: str | None) -> None:
    """Stop at a known point when asked: with ``$MAVIN_HOLD_DIR`` set and a file
    ``train_<stage>`` in it, the stage (its MLflow run RUNNING, nothing trained yet) writes
    ``<pid> <run id>`` to ``train_<stage>.reached`` and waits until the hold file is gone. A
    drill can then kill the step at exactly this point instead of racing it."""
    folder = os.environ.get(HOLD_ENV)
    hold = Path(folder) / f"train_{stage}" if folder else None
    if hold is None or not hold.exists():
        return
    reached = hold.with_name(f"{hold.name}.reached")
    reached.with_suffix(".tmp").write_text(f"{os.getpid()} {run_id or ''}")
    reached.with_suffix(".tmp").replace(reached)
    while hold.exists():
        time.sleep(0.05)


class _Tracker:
    """MLflow on rank 0 (a no-op elsewhere or when tracking is off)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.run_id: str | None = None
        self._pending: list[Any] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), ts, step) for k, v in values.items() if v is not None and math.isfinite(v))
        if len(self._pending) >= _METRIC_FLUSH * 4:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._pending or self.run_id is None:
            return
        from mavin_ops import tracking

        c = tracking.client()
        for i in range(0, len(self._pending), 900):
            c.log_batch(self.run_id, metrics=self._pending[i : i + 900])
        self._pending = []

    def tags(self, tags: dict[str, str]) -> None:
        if self.enabled and self.run_id:
            import mlflow

            mlflow.set_tags({k: v for k, v in tags.items() if v is not None})


# --------------------------------------------------------------------------- the stage


def train_stage(
    stage: str,
    preset: str = "tiny",
    *,
    dataset: str | os.PathLike,
    out_dir: str | os.PathLike,
    init_checkpoint: str | os.PathLike | None = None,
    dataset_digest: str = "",
    dataset_name: str = "mavinset-mini",
    dataset_source: str = "",
    latents_dir: str | os.PathLike | None = None,
    adapter: Any = None,
    overrides: dict[str, Any] | None = None,
    release_id: str = "",
    kfp_run_id: str = "",
    track: bool = True,
    progress: bool | None = None,
) -> StageResult:
    """Train one stage; resume it when ``out_dir`` holds an intact checkpoint of it.

    ``dataset`` is a dataset version directory (manifest.jsonl + media); ``dataset_digest`` its
    DVC digest when versioned (else the manifest's sha256 is used). ``out_dir`` is this stage's
    checkpoint folder. ``init_checkpoint`` is the previous stage's final checkpoint folder
    (required for every stage but ``id``). ``adapter`` defaults to the project's model
    (model/) at the same preset. ``overrides`` replaces recipe fields (e.g. ``{"steps": 3}``).
    ``progress``: True for a progress bar, False for plain log lines, None to pick by terminal.

    Raises SystemExit(143) after SIGTERM (a checkpoint was written first)."""
    from . import data as tdata
    from . import engine as eng

    recipe = get_recipe(stage, preset, **(overrides or {}))
    out = Path(out_dir)
    if stage == BASE_STAGE and init_checkpoint:
        raise TrainError("the base stage starts from initial weights; to train a base on, resume its own folder (--out) with more --steps")
    if stage == STAGES[0] and needs_base(preset) and not init_checkpoint and not ckpt.checkpoint_dirs(out):
        raise TrainError(
            f"stage '{stage}' of preset '{preset}' fine-tunes a foundation model; pass a base checkpoint with --init "
            "(a release finds the shipped one itself; mavin-ops pretrain trains one)"
        )
    if adapter is None:
        from .adapter import get_adapter

        adapter = get_adapter(preset)
    with eng.rank_env(), _sigterm_flag() as stop:
        dist = eng.setup_distributed()
        main = dist.is_main
        say = (lambda m: print(m, flush=True)) if main else (lambda m: None)
        if track and main and not (release_id or kfp_run_id):
            release_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        params = {
            "stage": stage,
            "preset": preset,
            "recipe": recipe.to_json(),
            "world_size": dist.world_size,
            "zero_stage": recipe.zero_stage,
            "backend": dist.backend,
            "device": str(dist.device),
            "steps": recipe.steps,
            "batch": recipe.batch,
            "lr": recipe.lr,
            "trainable": ",".join(recipe.trainable),
            "mixture": ",".join(f"{s}:{w:g}" for s, w in recipe.mixture),
            "adapter": adapter.name,
            "dataset_name": dataset_name,
        }
        # the stage run exists from here on: anything that fails below ends it FAILED
        with _stage_run(track and main, release_id, kfp_run_id, stage, params) as run:
            tracker = _Tracker(track and main)
            tracker.run_id = run.info.run_id if run is not None else None

            # 1. latents, once per (dataset, encoder); local rank 0 of each node writes them
            digest = dataset_digest or tdata.dataset_digest(dataset)
            if dist.local_rank == 0:
                index = tdata.precompute(dataset, adapter, latents_dir, digest=digest, progress=say)
            _barrier(dist)
            if dist.local_rank != 0:
                index = tdata.precompute(dataset, adapter, latents_dir, digest=digest)

            # 2. where this stage starts
            resume = _find_resume(out, dist, say)
            init = None
            if resume is None and init_checkpoint:
                init = _check_init(Path(init_checkpoint), stage, adapter)
            if resume is None and init is None and previous_stage(stage) is not None:
                raise TrainError(
                    f"stage '{stage}' starts from the '{previous_stage(stage)}' stage's final checkpoint; "
                    f"pass init_checkpoint (--init <folder>) or train '{previous_stage(stage)}' first"
                )

            if resume is not None:
                meta = ckpt.load_json(resume, "meta.json")
                if meta.get("stage") != stage:
                    raise TrainError(f"checkpoint {resume.path} belongs to stage '{meta.get('stage')}', not '{stage}'; use a separate folder per stage")
                if not _same_model_config(adapter, meta.get("model")):
                    raise TrainError(f"checkpoint {resume.path} was written for another model config; use a new --out folder for this preset")
                init_path, init_sha = meta.get("init_checkpoint"), meta.get("init_checkpoint_sha256")
            else:
                # MLflow's step axis runs on across stages: this stage starts where the last ended.
                meta = {"step_offset": _global_step(init) if init else 0}
                # Recorded relative to the state folder (mavin-home:/...), so it survives a move.
                init_path, init_sha = (settings.portable(init.path), init.manifest_sha256) if init else (None, None)

            if tracker.enabled:
                import mlflow

                mlflow.log_params(
                    {
                        k: v
                        for k, v in {
                            "dataset_digest": digest,
                            "latents_index": settings.portable(index.root),
                            "parent_checkpoint": init_path,
                            "parent_checkpoint_sha256": init_sha,
                            "resumed_from": settings.portable(resume.path) if resume else None,
                        }.items()
                        if v is not None
                    }
                )
                _log_inputs(dataset, dataset_name, digest, dataset_source or str(Path(dataset).resolve()))
            if main:
                hold_point(stage, tracker.run_id)
            result = _run_loop(
                recipe, adapter, dist, index, out, resume, init, meta, (init_path, init_sha), digest, stop, tracker, progress, say,
                lineage={"release_id": release_id, "kfp_run_id": kfp_run_id, "mlflow_run_id": tracker.run_id},
            )
            tracker.flush()
            tracker.tags(
                {
                    "mavin.checkpoint": settings.portable(result.checkpoint),
                    "mavin.checkpoint_sha256": result.checkpoint_sha256,
                    "mavin.resumed_from": result.resumed_from or "",
                    "mavin.parent_checkpoint": init_path or "",
                }
            )
            if tracker.enabled and result.samples_per_s is not None:
                import mlflow

                mlflow.log_metric("stage_samples_per_s", result.samples_per_s)
            if tracker.enabled:
                import mlflow

                mlflow.log_dict(ckpt.load_json(result.checkpoint, "meta.json"), "checkpoint_meta.json")
            result.run_id = tracker.run_id
            return result


def _stage_run(enabled: bool, release_id: str, kfp_run_id: str, stage: str, params: dict[str, Any]):
    if not enabled:
        return contextlib.nullcontext(None)
    from mavin_ops import tracking

    return tracking.step_run(release_id, kfp_run_id, f"train_{stage}", {k: v for k, v in params.items() if v is not None})


def _log_inputs(dataset: Any, name: str, digest: str, source: str) -> None:
    from mavin_ops import tracking
    from mavin_ops.data.validate import read_clips

    rows = read_clips(dataset, split="train")
    with warnings.catch_warnings():  # MLflow's schema-inference hints about integer columns
        warnings.simplefilter("ignore", UserWarning)
        tracking.log_dataset_input(rows, name=name, digest=digest, source=source, context="training")


def _load_optimizer(resume: ckpt.CheckpointInfo, engine: Any, named_trainable: list) -> None:
    """Put a checkpoint's optimizer state into the engine, whatever the world size that wrote
    it: one consolidated file, or one file per rank of a sharded save put back together."""
    from safetensors import SafetensorError

    from . import engine as eng

    shard_files = sorted(n for n in resume.manifest["files"] if n.startswith("optimizer.rank"))
    try:
        if not shard_files:
            with ckpt.open_tensors(resume, "optimizer.safetensors") as fh:
                eng.load_optimizer_state(engine, named_trainable, fh.get_tensor, set(fh.keys()))
            return
        with contextlib.ExitStack() as stack:
            readers = [stack.enter_context(ckpt.open_tensors(resume, n)) for n in shard_files]
            state = eng.ShardedOptimizerState([(_rank_index(r, n), r) for n, r in zip(shard_files, readers)],
                                              {n: tuple(p.shape) for n, p in named_trainable}, where=str(resume.path))
            eng.load_optimizer_state(engine, named_trainable, state.get, state.keys())
    except (KeyError, ValueError, SafetensorError) as exc:  # a lying or foreign file: one line, never a traceback
        raise TrainError(f"checkpoint {resume.path}: its optimizer state does not fit this run: {str(exc).splitlines()[0][:300]}") from None


def _rank_index(reader: Any, name: str) -> Any:
    """The fragment index a rank file carries in its header (``index``: JSON), or ValueError."""
    text = (reader.metadata() or {}).get("index")
    if not isinstance(text, str) or len(text) > 1_000_000:
        raise ValueError(f"{name} has no readable fragment index in its header")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{name}: its fragment index is not JSON") from None


def _barrier(dist: Any) -> None:
    if dist.world_size > 1:
        import torch

        torch.distributed.barrier()


def _find_resume(out: Path, dist: Any, say: Callable[[str], None]) -> ckpt.CheckpointInfo | None:
    """Rank 0 picks the newest intact checkpoint (refusing partial/corrupt ones); every rank
    learns the step."""
    import torch

    info = None
    step = -1
    error = ""
    if dist.is_main:
        try:
            info = ckpt.find_resumable(out, log=say)
        except ckpt.CheckpointError as exc:
            error = str(exc)
        step = info.step if info else -1
    if dist.world_size > 1:
        t = torch.tensor([step, 1 if error else 0], dtype=torch.int64, device=dist.device)
        torch.distributed.broadcast(t, 0)
        step, failed = int(t[0].item()), bool(t[1].item())
        if failed and not error:
            error = f"no intact checkpoint under {out} (see rank 0's log); delete the folder to start the stage over"
    if error:
        raise ckpt.CheckpointError(error)
    if step < 0:
        return None
    if info is None:
        path = out / ckpt.step_name(step)
        info = ckpt.CheckpointInfo(path, step, json.loads((path / ckpt.MANIFEST).read_text()))
    return info


def _intact(path: Path, missing: str) -> ckpt.CheckpointInfo:
    """The checkpoint ``path`` names (a ``step-*`` folder, or a stage folder's newest intact
    one), verified; TrainError with ``missing`` when the folder holds none."""
    try:
        if (path / ckpt.MANIFEST).is_file():
            manifest = ckpt.verify_checkpoint(path)
            return ckpt.CheckpointInfo(path, int(manifest["step"]), manifest)
        found = ckpt.find_resumable(path, log=None) if path.is_dir() else None
    except ckpt.CheckpointError as exc:
        raise TrainError(f"init checkpoint refused: {exc}") from None
    if found is None:
        raise TrainError(missing)
    return found


def _check_init(path: Path, stage: str, adapter: Any) -> ckpt.CheckpointInfo:
    """The previous stage's final checkpoint (for ``id``: a base's): intact, finished, same
    model config. ``path`` is a ``step-*`` folder or a stage folder (its newest intact checkpoint)."""
    expected = previous_stage(stage)
    if expected is None and stage == STAGES[0]:
        expected = BASE_STAGE  # id starts from a foundation model, never from another stage
    info = _intact(path, f"init checkpoint {path} holds no checkpoint; train stage '{expected}' first")
    meta = ckpt.load_json(info, "meta.json")
    # A base may be taken at any step its learning curve chose; a release stage only when done.
    if not meta.get("complete") and expected != BASE_STAGE:
        raise TrainError(f"init checkpoint {path} is step {meta.get('step')} of an unfinished '{meta.get('stage')}' stage; start from its final checkpoint")
    if not _same_model_config(adapter, meta.get("model")):
        raise TrainError(f"init checkpoint {path} holds a model with another config (preset {meta.get('preset')}); use the same preset for every stage")
    if expected is not None and meta.get("stage") != expected:
        raise TrainError(f"init checkpoint {path} is from stage '{meta.get('stage')}'; stage '{stage}' starts from '{expected}'")
    return info


def check_base(path: Path) -> ckpt.CheckpointInfo:
    """A foundation model's checkpoint: intact and of stage ``base`` (finished or not: a base
    is shipped from whichever step its learning curve chose)."""
    info = _intact(path, f"{path} holds no checkpoint; train one with mavin-ops pretrain")
    meta = ckpt.load_json(info, "meta.json")
    if meta.get("stage") != BASE_STAGE:
        raise TrainError(f"{info.path} is a checkpoint of stage '{meta.get('stage')}', not a base")
    return info


def _run_loop(
    recipe: StageRecipe,
    adapter: Any,
    dist: Any,
    index: Any,
    out: Path,
    resume: ckpt.CheckpointInfo | None,
    init: ckpt.CheckpointInfo | None,
    meta: dict[str, Any],
    parent: tuple[str | None, str | None],
    digest: str,
    stop: _StopFlag,
    tracker: _Tracker,
    progress: bool | None,
    say: Callable[[str], None],
    lineage: dict[str, Any],
) -> StageResult:
    import torch

    from . import data as tdata
    from . import engine as eng

    stage = recipe.stage
    init_path, init_sha = parent
    refused = list(resume.refused) if resume else []
    start = resume.step if resume else 0
    offset = int(meta.get("step_offset") or 0)  # global steps of the stages before this one
    losses: list[dict[str, float]] = list(meta.get("losses", [])) if resume else []

    # model: seeded init, then the weights it starts from
    _seed_all(recipe.seed)
    model = adapter.build()
    source = resume or init
    if source is not None:
        _load_weights(model, adapter, source)
    chosen = trainable_names(model, adapter, recipe)
    if not chosen:
        raise RecipeError(
            f"recipe {stage}/{recipe.preset}: trainable groups {', '.join(recipe.trainable)} match no parameter of the model; "
            "fix PARAM_GROUPS in training/recipes.py"
        )
    named_trainable = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in chosen)
        if n in chosen:
            named_trainable.append((n, p))
    n_train = sum(p.numel() for _, p in named_trainable)
    n_all = sum(p.numel() for p in model.parameters())

    engine = eng.build_engine(model, [p for _, p in named_trainable], recipe, dist)
    if resume is not None:
        _load_optimizer(resume, engine, named_trainable)
        if not eng.restore_rng_state(ckpt.load_tensors(resume, "rng.safetensors"), dist):
            # The training noise follows the global micro-batch, not these generators: the run continues the same.
            say(f"[train {stage}] checkpoint {resume.path} was written with another world size; global RNGs reseeded")
            _seed_all(_loop_seed(recipe.seed, stage, dist.rank) + start)
        engine.global_steps = start
        engine.global_samples = start * recipe.batch * recipe.accum * dist.world_size
        say(f"[train {stage}] resuming from {resume.path} (step {start}/{recipe.steps})")
    else:
        _seed_all(_loop_seed(recipe.seed, stage, dist.rank))
        where = f"from {init.path}" if init else "from initial weights"
        say(f"[train {stage}] starting {where}")
    say(
        f"[train {stage}] {recipe.preset}: {recipe.steps} steps, batch {recipe.batch} x {recipe.accum} micro-batches x {dist.world_size} ranks, "
        f"ZeRO {recipe.zero_stage}, {dist.backend}; training {n_train:,} of {n_all:,} parameters ({', '.join(recipe.trainable)})"
    )

    # Several ZeRO 1/2 ranks write the sharded form: each rank its own partition of the
    # optimizer state, into one temporary folder named by a token from rank 0; rank 0 writes
    # the rest and the manifest (every rank's files in it) and renames it once all are durable.
    token = eng.shared_token(dist) if eng.sharded(engine, dist) else None

    def save(completed: int) -> ckpt.CheckpointInfo | None:
        rng_state = eng.gather_rng_state(dist)
        digests = eng.rank_digests(named_trainable, dist)  # every rank's trained parameters, hashed
        tmp, written, opt_files = None, {}, {}
        if token is not None:
            part, where = eng.shard_optimizer_state(engine, named_trainable)
            tmp = ckpt.begin_checkpoint(out, completed, token)
            name = f"optimizer.rank{dist.rank:05d}-of-{dist.world_size:05d}.safetensors"
            entry = ckpt.write_tensor_file(tmp, name, part, {"index": json.dumps(where), "rank": str(dist.rank), "world_size": str(dist.world_size)})
            for blob in eng.gather_bytes(json.dumps({name: entry}).encode(), dist):
                written.update(json.loads(blob))
            mixed = any(p.dtype != torch.float32 for _, p in named_trainable)  # bf16: the model file takes the fp32 masters
            opt_state = eng.gather_optimizer_state(engine, named_trainable, dist, keys=("master",)) if mixed else {}
        else:
            opt_state = eng.gather_optimizer_state(engine, named_trainable, dist)
            opt_files = {"optimizer.safetensors": opt_state}
        info = None
        if dist.is_main:
            model_state = {k: v.detach().cpu().clone() for k, v in _persisted_state(engine.module, adapter).items()}
            for n, p in named_trainable:  # mixed precision: keep the fp32 master weights
                if p.dtype != torch.float32 and f"master.{n}" in opt_state:
                    model_state[n] = opt_state[f"master.{n}"]
            info = ckpt.save_checkpoint(
                out,
                completed,
                tensors={"model.safetensors": model_state, **opt_files, "rng.safetensors": rng_state},
                json_files={
                    "meta.json": {
                        "format": 1,
                        "stage": stage,
                        "preset": recipe.preset,
                        "step": completed,
                        "step_offset": offset,
                        "global_step": offset + completed,
                        "complete": completed >= recipe.steps,
                        "recipe": recipe.to_dict(),
                        "model": adapter.config(),
                        "adapter": adapter.name,
                        "world_size": dist.world_size,
                        "rank_param_sha256": digests,
                        "optimizer_form": "sharded" if token is not None else "consolidated",
                        "zero_stage": recipe.zero_stage,
                        "dataset": {"digest": digest, "latents_index": settings.portable(index.root), "encoder": index.encoder},
                        "init_checkpoint": init_path,
                        "init_checkpoint_sha256": init_sha,
                        "resumed_from": settings.portable(resume.path) if resume else None,
                        "losses": losses,
                        "lineage": {**lineage, "git_commit": _git_commit()},
                    }
                },
                keep_last=recipe.keep_last,
                tensor_metadata={"model.safetensors": adapter.checkpoint_metadata()} if hasattr(adapter, "checkpoint_metadata") else None,
                tmp=tmp,
                written=written,
            )
            tracker.flush()
        _barrier(dist)
        return info

    schedule = tdata.BatchSchedule(index, recipe.mixture, recipe.batch, recipe.seed, dist.world_size)
    loader = torch.utils.data.DataLoader(
        tdata.LatentDataset(index),
        batch_sampler=tdata.StepBatchSampler(schedule, dist.rank, start, recipe.steps, recipe.accum),
        collate_fn=adapter.collate,
        num_workers=0,
        generator=torch.Generator().manual_seed(recipe.seed),
    )
    wv, wa = recipe.loss_weights["video"], recipe.loss_weights["audio"]
    if hasattr(adapter, "loss_weights"):  # the model weights its towers itself
        mw = adapter.loss_weights()
        if abs(mw["video"] - wv) > 1e-9 or abs(mw["audio"] - wa) > 1e-9:
            raise TrainError(
                f"stage {stage}: the model weights its towers video {mw['video']:g} / audio {mw['audio']:g}, the recipe says "
                f"{wv:g} / {wa:g}; make the model's flow weights match the recipe's loss_weights"
            )
    bar = _Progress(stage, start, recipe.steps, dist.is_main, progress, recipe.log_every)
    timed_samples, timed_seconds = 0, 0.0
    step = start
    final: ckpt.CheckpointInfo | None = None
    try:
        engine.train()
        batches = iter(loader)
        while step < recipe.steps:
            if eng.any_rank(stop.requested, dist):
                bar.log(f"[train {stage}] SIGTERM: writing a checkpoint at step {step} and exiting {EXIT_SIGTERM}")
                save(step)
                raise SystemExit(EXIT_SIGTERM)
            t0 = time.perf_counter()
            lr = eng.set_lr(engine, recipe.lr_at(step))
            sums, n, gnorm = [0.0, 0.0, 0.0], 0, None
            for micro in range(recipe.accum):  # DeepSpeed steps the optimizer after the last one
                batch = _to_device(next(batches), dist.device)
                # The noise of a micro-batch follows from its global number alone, so a step
                # draws the same noise on 1 process x accum 2 as on 2 processes x accum 1.
                g = schedule.micro_index(step, dist.rank, micro, recipe.accum)
                parts = adapter.losses(engine, batch, generator=torch.Generator().manual_seed(_micro_seed(recipe.seed, stage, g)))
                if "loss" in parts:  # the model weighted its towers itself: it must be the recipe's weighting
                    loss = parts["loss"]
                    if step == start and micro == 0 and not hasattr(adapter, "loss_weights"):
                        _check_weighting(loss, parts, wv, wa, stage)
                else:
                    loss = wv * parts["video"] + wa * parts["audio"]
                if not torch.isfinite(loss):
                    raise TrainError(f"stage {stage}: the loss is {loss.item()} at step {step + 1}; lower the lr or check the data")
                engine.backward(loss)
                if micro == recipe.accum - 1:
                    gnorm = eng.grad_norm(engine, named_trainable, after_step=False)
                engine.step()
                for i, v in enumerate((loss.item(), parts["video"].item(), parts["audio"].item())):
                    sums[i] += v / recipe.accum
                n += _batch_size(batch, recipe.batch)
            gnorm = gnorm if gnorm is not None else eng.grad_norm(engine, named_trainable, after_step=True)
            if step == 0 and gnorm == 0.0:
                raise TrainError(
                    f"stage {stage}: no trainable parameter ({', '.join(recipe.trainable)}) received a gradient at step 1; "
                    "with a freshly initialized adaLN-Zero model train the backbone too ('all') or start from a trained checkpoint"
                )
            total, video, audio = eng.all_reduce_mean(sums, dist)
            dt = time.perf_counter() - t0
            step += 1
            n *= dist.world_size
            if step > start + 1 or recipe.steps - start == 1:  # the first step pays one-off costs
                timed_samples += n
                timed_seconds += dt
            sps = n / dt if dt > 0 else float("nan")
            losses.append({"step": step, "loss": total, "video": video, "audio": audio})
            tracker.metrics(offset + step, {"loss": total, "loss_video": video, "loss_audio": audio, "samples_per_s": sps, "grad_norm": gnorm, "lr": lr})
            bar.update(step, total, video, audio, sps)
            if step < recipe.steps and recipe.checkpoint_every and step % recipe.checkpoint_every == 0:
                save(step)
        if resume is not None and step == start:  # already finished: keep the checkpoint as written
            final = resume if dist.is_main else None
        else:
            final = save(step)
    finally:
        bar.close()
        with contextlib.suppress(Exception):  # best effort: keep the curve up to a crash
            tracker.flush()
    if final is None:  # other ranks: the folder rank 0 wrote
        path = out / ckpt.step_name(step)
        final = ckpt.CheckpointInfo(path, step, json.loads((path / ckpt.MANIFEST).read_text()))
    say(f"[train {stage}] done: {final.path}")
    return StageResult(
        stage=stage,
        preset=recipe.preset,
        checkpoint=str(final.path),
        checkpoint_sha256=final.manifest_sha256,
        step=step,
        losses=losses,
        resumed_from=str(resume.path) if resume else None,
        init_checkpoint=init_path,
        run_id=None,
        world_size=dist.world_size,
        zero_stage=recipe.zero_stage,
        samples_per_s=(timed_samples / timed_seconds) if timed_seconds > 0 else None,
        dataset_digest=digest,
        refused=refused,
    )


def _persisted_state(model: Any, adapter: Any) -> dict[str, Any]:
    """What a checkpoint stores of the model: the adapter's choice (the trained parts; frozen
    pretrained files are not copied) or the whole state dict."""
    if hasattr(adapter, "checkpoint_state_dict"):
        return adapter.checkpoint_state_dict(model)
    return model.state_dict()


def _load_weights(model: Any, adapter: Any, source: ckpt.CheckpointInfo) -> None:
    state = ckpt.load_tensors(source, "model.safetensors")
    expected = set(_persisted_state(model, adapter))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise TrainError(
            f"checkpoint {source.path / 'model.safetensors'} does not fit the model: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    model.load_state_dict(state, strict=False)


def _check_weighting(loss: Any, parts: dict[str, Any], wv: float, wa: float, stage: str) -> None:
    want = wv * float(parts["video"].detach()) + wa * float(parts["audio"].detach())
    got = float(loss.detach())
    if abs(got - want) > 1e-3 * max(1.0, abs(want)):
        raise TrainError(
            f"stage {stage}: the model's loss {got:.6g} is not {wv:g} * video + {wa:g} * audio = {want:.6g} (the recipe's "
            "loss_weights); make the model's flow weights match the recipe"
        )


def trainable_names(model: Any, adapter: Any, recipe: Any) -> set[str]:
    """The parameters a stage trains: those its groups match, less the ones the model keeps
    frozen (``adapter.may_train``: a pretrained text encoder, the VAEs). Everything returned
    is in what a checkpoint saves, so nothing trained is thrown away."""
    names = [n for n, _ in model.named_parameters()]
    chosen = set(match_groups(names, recipe.patterns))
    if hasattr(adapter, "may_train"):
        chosen = {n for n in chosen if adapter.may_train(model, n)}
    return chosen


def _global_step(init: ckpt.CheckpointInfo) -> int:
    """The global step a checkpoint ended at (older checkpoints: their own step)."""
    try:
        meta = ckpt.load_json(init, "meta.json")
    except Exception:  # noqa: BLE001 - a checkpoint without readable meta starts the axis again
        return 0
    value = meta.get("global_step", meta.get("step", 0))
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _git_commit() -> str:
    from mavin_ops import tracking

    commit, dirty = tracking.git_commit()
    return commit + ("-dirty" if dirty else "")


# --------------------------------------------------------------------------- chains and loading


def train_stages(
    preset: str = "tiny",
    *,
    dataset: str | os.PathLike,
    out_root: str | os.PathLike,
    stages: tuple[str, ...] = STAGES,
    init_checkpoint: str | os.PathLike | None = None,
    **kwargs: Any,
) -> list[StageResult]:
    """Train ``stages`` in order, each from the previous one's final checkpoint; stage ``s``
    checkpoints under ``<out_root>/<s>/``. Finished stages are resumed as no-ops."""
    results: list[StageResult] = []
    init = init_checkpoint
    for stage in stages:
        res = train_stage(stage, preset, dataset=dataset, out_dir=Path(out_root) / stage, init_checkpoint=init, **kwargs)
        results.append(res)
        init = res.checkpoint
    return results


def _same_model_config(adapter: Any, saved: Any) -> bool:
    """Whether a checkpoint's saved model config is the adapter's. An adapter with
    ``canonical_config`` reads the saved one first, so a checkpoint written before a config
    field existed still matches when the field has its default value."""
    canonical = getattr(adapter, "canonical_config", None)
    if canonical is not None and isinstance(saved, dict):
        try:
            saved = canonical(saved)
        except (TypeError, ValueError):
            return False
    return saved == adapter.config()


def load_trained_model(checkpoint: str | os.PathLike, adapter: Any = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint meta) from a checkpoint folder; safetensors only.

    ``checkpoint`` may be a stage folder (its newest intact checkpoint is used) or one
    ``step-*`` folder."""
    path = Path(checkpoint)
    if (path / ckpt.MANIFEST).is_file():
        manifest = ckpt.verify_checkpoint(path)
        info = ckpt.CheckpointInfo(path, int(manifest["step"]), manifest)
    elif ckpt.checkpoint_dirs(path):
        info = ckpt.find_resumable(path, log=None)
    else:
        raise TrainError(f"no checkpoint at {path}; pass a stage folder or a step-* folder written by training")
    meta = ckpt.load_json(info, "meta.json")
    if adapter is None:
        from .adapter import get_adapter

        adapter = get_adapter(meta["preset"])
    if not _same_model_config(adapter, meta.get("model")):
        raise TrainError(f"checkpoint {info.path} holds a model with another config than adapter {adapter.name}/{adapter.preset}")
    model = adapter.build()
    model.load_state_dict(ckpt.load_tensors(info, "model.safetensors"), strict=True)
    model.eval()
    return model, meta

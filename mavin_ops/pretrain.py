"""Run the foundation pipeline (pipelines/pretrain.py) locally, and ship what it made.

:func:`run_pretrain` runs ``mavin-pretrain`` with the KFP local runner, the way a release runs:
one MLflow parent run per pretrain run (``mavin.pipeline`` = ``mavin-pretrain``), a nested run
per step, step logs under ``$MAVIN_HOME/pretrain/<id>/logs``, the KFP cache so a second call
with the same ``run_id`` reuses the data steps and resumes training where it stopped (pass a
larger ``steps`` to train on). It ends with a ``mavin-base`` version registered.

``ship`` packages the registered result as the project's shipped base
(``training/bases/<preset>.safetensors`` and its card; mavin_ops/foundation.py).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from mavin_ops import settings, tracking
from mavin_ops.errors import MavinError
from mavin_ops.foundation import pretrain_command
from mavin_ops.presets import BASE_WORLDS, MIN_BASE_SEED

__all__ = ["MIN_SEED", "WORLDS", "PretrainError", "PretrainResult", "pretrain_command", "run_pretrain"]

MIN_SEED = MIN_BASE_SEED
WORLDS = BASE_WORLDS


class PretrainError(MavinError, ValueError):
    """Arguments ``mavin-ops pretrain`` refuses (a user's mistake)."""


@dataclass
class PretrainResult:
    run_id: str
    succeeded: bool
    error: str = ""
    version: str = ""  # the mavin-base version registered
    checkpoint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    shipped: str = ""
    seconds: float = 0.0


def run_pretrain(
    preset: str = "tiny",
    seed: int = MIN_SEED,
    *,
    steps: int = 0,
    sample_limit: int = 8,
    sample_steps: int = 0,
    world_preset: str | None = None,
    train_procs: int = 1,
    run_id: str | None = None,
    ship: str | os.PathLike | None = None,
    echo: Callable[[str], None] | None = print,
    terminal: TextIO | None = None,
) -> PretrainResult:
    """Run the foundation pipeline; see the module docstring. Raises :class:`PretrainError`
    for a seed below :data:`MIN_SEED` or a bad run id."""
    from mavin_ops.console import ReleaseConsole, task_names
    from mavin_ops.pipelines.pretrain import PIPELINE_NAME, pretrain_pipeline
    from mavin_ops.safety import check_name
    from mavin_ops.training.recipes import get_recipe

    if seed < MIN_SEED:
        raise PretrainError(f"--seed {seed}: seeds below {MIN_SEED} generate release benchmarks; the foundation world needs its own (>= {MIN_SEED})")
    get_recipe("base", preset)  # an unknown preset fails here, before anything runs
    world_preset = world_preset or WORLDS.get(preset)
    if world_preset is None:
        raise PretrainError(f"preset '{preset}' has no synthetic world to pretrain on here; use {' or '.join(WORLDS)}")
    run_id = run_id or time.strftime("p%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]
    check_name(run_id, "pretrain run id")
    from mavin_ops.release import local_runner_env, start_local_runner

    home = local_runner_env()
    args = dict(preset=preset, world_preset=world_preset, seed=seed, steps=steps, sample_limit=sample_limit,
                sample_steps=sample_steps, train_procs=train_procs)
    c = tracking.client()
    _check_rerun(c, run_id, args, PIPELINE_NAME)
    parent = tracking.parent_run(run_id, pipeline=PIPELINE_NAME)
    from mlflow.entities import Param

    existing = c.get_run(parent).data.params
    c.log_batch(parent, params=[Param(k, str(v)) for k, v in args.items() if k not in existing])
    if c.get_run(parent).info.status != "RUNNING":
        c.update_run(parent, status="RUNNING")
    start_local_runner(home, cache=True)
    folder = home / "pretrain" / run_id
    if terminal is None:
        terminal = sys.stderr if echo else open(os.devnull, "w")
    console = ReleaseConsole(folder / "logs" / time.strftime("%Y%m%d-%H%M%S"), task_names(pretrain_pipeline), terminal=terminal)
    if echo:
        echo(f"pretrain {run_id}: {preset} base on the '{world_preset}' world (seed {seed}); logs in {folder / 'logs'}")
    start = time.time()
    error = ""
    try:
        with console:
            pretrain_pipeline(**args, release_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the result says what failed; the parent run is closed by the exit handler
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    result = PretrainResult(run_id=run_id, succeeded=not error, error=error, seconds=time.time() - start)
    if not error:
        _fill(c, result)
        if ship:
            result.shipped = str(_ship(result, ship, preset, world_preset, seed))
    if echo:
        echo(f"pretrain {run_id}: " + (f"registered mavin-base version {result.version} ({result.checkpoint})" if result.succeeded
                                       else f"FAILED: {result.error} (rerun with --run-id {run_id} to resume)"))
        if result.shipped:
            echo(f"shipped: {result.shipped}")
    return result


def _check_rerun(c: Any, run_id: str, args: dict[str, Any], pipeline: str) -> None:
    """A run id names one pretrain run: a rerun continues it with the same world and model
    (more ``steps`` allowed); a release's id is not a pretrain run's."""
    found = c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mavin.release_id` = '{run_id}' and tags.`mavin.step` = 'pipeline'",
                          max_results=1)
    if not found:
        return
    run = found[0]
    if run.data.tags.get("mavin.pipeline") != pipeline:
        raise PretrainError(f"--run-id {run_id} names a {run.data.tags.get('mavin.pipeline', 'release')} run; pick another id")
    changed = [k for k in ("preset", "world_preset", "seed") if k in run.data.params and run.data.params[k] != str(args[k])]
    if changed:
        was = ", ".join(f"{k} {run.data.params[k]}" for k in changed)
        raise PretrainError(f"pretrain {run_id} was started with {was}; a rerun continues it with the same world (drop the changes or pick a new --run-id)")


def _fill(c: Any, result: PretrainResult) -> None:
    from mavin_ops.foundation import BASE_MODEL

    found = c.search_model_versions(f"name = '{BASE_MODEL}' and tags.`mavin.release_id` = '{result.run_id}'")
    if not found:  # the same weights were registered earlier, by another run
        runs = c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mavin.release_id` = '{result.run_id}' and tags.`mavin.step` = 'register_base'",
                             order_by=["attributes.start_time DESC"], max_results=1)
        version = runs[0].data.tags.get("mavin.base_version") if runs else None
        found = [c.get_model_version(BASE_MODEL, version)] if version else []
    if found:
        mv = max(found, key=lambda v: int(v.version))
        result.version = str(mv.version)
        result.checkpoint = str(settings.local_path(mv.source))
        run = c.get_run(mv.run_id) if mv.run_id else None
        if run is not None:
            result.metrics = dict(run.data.metrics)
    ev = c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mavin.release_id` = '{result.run_id}' and tags.`mavin.step` = 'evaluate'",
                       order_by=["attributes.start_time DESC"], max_results=1)
    if ev:
        result.metrics.update({k: v for k, v in ev[0].data.metrics.items()})


def _ship(result: PretrainResult, folder: str | os.PathLike, preset: str, world_preset: str, seed: int) -> Path:
    from mavin_ops import foundation
    from mavin_ops.training import checkpoint as ckpt

    meta = ckpt.load_json(ckpt.find_resumable(result.checkpoint, log=None) or result.checkpoint, "meta.json")
    command = pretrain_command(preset, seed, meta["step"], folder)
    return foundation.package(result.checkpoint, Path(folder) / f"{preset}.safetensors", command=command,
                              data={"name": foundation.BASE_WORLD, "preset": world_preset, "seed": seed,
                                    "digest": meta.get("dataset", {}).get("digest", "")},
                              metrics={k: v for k, v in result.metrics.items() if isinstance(v, float)})

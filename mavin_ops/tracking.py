"""MLflow lineage: one parent run per pipeline run, one nested run per step.

Every pipeline step (a KFP component running in its own process) finds its parent run by
the release id it is given (the ``release_id`` pipeline parameter when the caller set one,
else the KFP run id), so the same code works for the local runner, a cluster run and a
recurring run: the first step creates the parent run, later steps find it, and the exit
handler closes it with the pipeline's true final status.

Tags written here (the lineage contract other code reads):

- parent run: ``mavin.release_id``, ``mavin.kfp_run_id``, ``mavin.pipeline``, ``mavin.git_commit``, ``mavin.git_dirty``
- step run: ``mlflow.parentRunId``, ``mavin.step``, ``mavin.release_id``
- after versioning: ``mavin.dataset_digest``, ``mavin.dataset_commit``, ``mavin.dataset_tag``
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from mavin_ops import settings

__all__ = [
    "EXPERIMENT",
    "client",
    "close_parent_run",
    "experiment_id",
    "git_commit",
    "log_dataset_input",
    "parent_run",
    "release_key",
    "step_run",
]

EXPERIMENT = "mavin-ops-release"
#: A local git query that takes longer than this is a hung repository (a lock, a network
#: filesystem): the commit is then recorded as "unknown" instead of hanging the step.
GIT_TIMEOUT_S = 60
_KFP_TO_MLFLOW = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED", "CANCELED": "KILLED"}


def _mlflow():
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri())
    _home_artifacts()
    return mlflow


def _home_artifacts() -> None:
    """Make sure MLflow reads ``mavin-home:`` artifact URIs in this process (the package's
    entry point registers them too; imported after mlflow, never before it)."""
    from mavin_ops.home_artifacts import register

    register()


def client(uri: str | None = None):
    """The platform's one way to an ``MlflowClient``: the store :func:`settings.tracking_uri`
    names (or ``uri``), with the ``mavin-home:`` artifact scheme registered."""
    from mlflow.tracking import MlflowClient

    _home_artifacts()
    return MlflowClient(uri or settings.tracking_uri())


def git_commit(path: str | os.PathLike | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the code at ``path`` (default: this checkout); ("unknown", False)
    outside a git work tree."""
    where = Path(path) if path else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=GIT_TIMEOUT_S
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=GIT_TIMEOUT_S,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown", False
    return commit, bool(status)


#: MLflow's own experiment tag for the UI mode.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def experiment_id(name: str = EXPERIMENT) -> str:
    """Get or create the experiment; on a local store its artifacts go under MAVIN_HOME."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made before the platform set it
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
        return exp.experiment_id
    uri = settings.tracking_uri()
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = settings.artifact_root_uri()  # relative to the home: the folder can move
    try:
        # A classic ML experiment in the MLflow UI (training runs are runs, not GenAI "evaluations").
        return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
    except Exception:  # created concurrently by another step
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def release_key(release_id: str, kfp_run_id: str = "") -> str:
    """The lineage key of a pipeline run: the caller's release id, else the KFP run id."""
    from mavin_ops.safety import check_name

    if release_id:
        check_name(release_id, "release id")
    key = release_id or kfp_run_id
    if not key:
        raise ValueError("a pipeline step needs a release_id or a KFP run id to find its MLflow parent run")
    return key


def parent_run(release_id: str, kfp_run_id: str = "", pipeline: str = "mavin-release") -> str:
    """The parent run of a pipeline run: found by its release key, created when missing."""
    key = release_key(release_id, kfp_run_id)
    c = client()
    exp = experiment_id()
    found = c.search_runs(
        [exp], filter_string=f"tags.`mavin.release_id` = '{key}' and tags.`mavin.step` = 'pipeline'", max_results=1
    )
    if found:
        return found[0].info.run_id
    commit, dirty = git_commit()
    run = c.create_run(
        exp,
        run_name=f"{pipeline}-{key}",
        tags={
            "mavin.release_id": key,
            "mavin.kfp_run_id": kfp_run_id or key,
            "mavin.pipeline": pipeline,
            "mavin.step": "pipeline",
            "mavin.git_commit": commit,
            "mavin.git_dirty": str(dirty).lower(),
            # MLflow's own source tags, which its UI shows and links.
            "mlflow.source.git.commit": commit,
            "mlflow.source.type": "JOB",
            "mlflow.source.name": pipeline,
        },
    )
    return run.info.run_id


@contextlib.contextmanager
def step_run(
    release_id: str, kfp_run_id: str, step: str, params: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A nested MLflow run for one pipeline step, active inside the block (fluent API works).

    Ends FINISHED on success, FAILED on an exception, KILLED on SIGTERM/KeyboardInterrupt."""
    mlflow = _mlflow()
    parent = parent_run(release_id, kfp_run_id)
    run = mlflow.start_run(
        experiment_id=experiment_id(),
        run_name=step,
        parent_run_id=parent,
        tags={"mavin.step": step, "mavin.release_id": release_key(release_id, kfp_run_id)},
    )
    try:
        if params:
            from mavin_ops.safety import redact

            # (paths under the state folder as mavin-home:/..., so the folder can move)
            mlflow.log_params({k: settings.portable(redact(v)) if isinstance(v, str) else v for k, v in params.items() if v is not None})
        yield run
    except (KeyboardInterrupt, SystemExit) as exc:
        code = getattr(exc, "code", None)
        mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) or code == 143 else "FAILED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def close_parent_run(release_id: str, kfp_run_id: str, kfp_state: str, message: str = "") -> str:
    """Close the parent run with the pipeline's final state (SUCCEEDED/FAILED/CANCELLED) and
    mark any step run still RUNNING as FAILED (a step killed without a chance to close).
    Returns the MLflow status written."""
    c = client()
    parent = parent_run(release_id, kfp_run_id)
    status = _KFP_TO_MLFLOW.get(kfp_state.upper(), "FAILED")
    children = c.search_runs(
        [experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"
    )
    for child in children:
        c.set_terminated(child.info.run_id, "FAILED" if status == "FINISHED" else status)
    c.set_tag(parent, "mavin.final_state", kfp_state)
    if message:
        from mavin_ops.safety import redact

        c.set_tag(parent, "mavin.final_message", redact(message)[:5000])
    c.set_terminated(parent, status)
    return status


def log_dataset_input(
    manifest_rows: list[dict[str, Any]], *, name: str, digest: str, source: str, context: str = "training"
) -> None:
    """``mlflow.log_input`` of a dataset version into the active run: the DVC content hash is
    the digest, the registry (or remote) location the source, a per-clip table the schema."""
    mlflow = _mlflow()
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "id": r.get("id"),
                "split": r.get("split"),
                "source": r.get("source"),
                "num_frames": r.get("num_frames"),
                "fps": r.get("fps"),
                "shots": len((r.get("script") or {}).get("shot") or []),
            }
            for r in manifest_rows
        ]
    )
    # A source under the state folder is named relative to it (mavin-home:/...): it can move.
    dataset = mlflow.data.from_pandas(table, source=settings.portable(source), name=name, digest=digest[:36])
    mlflow.log_input(dataset, context=context)

"""Run the release pipeline on this machine with the KFP local runner, then say where
everything landed (pipeline outputs, dataset version, reports, the MLflow runs)."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mavin_ops import settings, tracking

__all__ = ["ReleaseResult", "run_release"]


@dataclass
class ReleaseResult:
    release_id: str
    succeeded: bool
    error: str
    parent_run_id: str
    parent_status: str
    pipeline_dir: str
    steps: list[dict] = field(default_factory=list)  # name, status, run_id, artifact_uri
    tags: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    def lines(self) -> list[str]:
        """What a person wants to see after a release run."""
        out = [
            f"release {self.release_id}: {'SUCCEEDED' if self.succeeded else 'FAILED'} in {self.wall_s:.0f} s"
            + (f" ({self.error})" if self.error else ""),
            f"  pipeline outputs : {self.pipeline_dir}",
            f"  MLflow           : {settings.tracking_uri()}  parent run {self.parent_run_id} [{self.parent_status}]",
        ]
        for key, label in (
            ("mavin.dataset_tag", "dataset version "),
            ("mavin.dataset_digest", "dataset digest  "),
            ("mavin.dataset_commit", "registry commit "),
            ("mavin.git_commit", "code commit     "),
            ("mavin.verdict", "verdict         "),
            ("mavin.verdict_reason", "reason          "),
            ("mavin.model_version", "model version   "),
            ("mavin.triton_version", "served version  "),
        ):
            if key in self.tags:
                out.append(f"  {label} : {self.tags[key]}")
        for step in self.steps:
            out.append(f"  step {step['name']:<16} {step['status']:<9} {step['artifact_uri']}")
        out.append(f"  browse the runs  : mlflow ui --backend-store-uri {settings.tracking_uri()}")
        return out


def _new_release_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def run_release(
    preset: str = "tiny",
    seed: int = 0,
    *,
    release_id: str | None = None,
    registry: str = "",
    remote: str = "",
    endpoint_url: str = "",
    max_quarantine_share: float = 0.05,
    train_steps: int = 0,
    sample_steps: int = 0,
    sample_limit: int = 0,
    model_name: str = "mavin",
    model_store: str = "",
    gate_policy: str = "",
    cache: bool = False,
    echo: Callable[[str], None] | None = None,
) -> ReleaseResult:
    """Run the release pipeline locally. Never raises for a failed pipeline: the result says
    what failed, and the MLflow parent run carries the final status."""
    import warnings

    from kfp import local

    from mavin_ops.pipelines.release import PIPELINE_NAME, release_pipeline

    # Local-runner notes that do not apply here: cluster-only settings are ignored locally,
    # and the component image is this very environment.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image")

    home = settings.home()
    # Steps run as subprocesses: they must see the same state folder and tracking store.
    os.environ["MAVIN_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    release_id = release_id or _new_release_id()
    root = home / "pipelines"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    before = {p.name for p in root.iterdir()}
    start = time.time()
    error = ""
    try:
        release_pipeline(
            preset=preset,
            seed=seed,
            registry=registry,
            remote=remote,
            endpoint_url=endpoint_url,
            max_quarantine_share=max_quarantine_share,
            train_steps=train_steps,
            sample_steps=sample_steps,
            sample_limit=sample_limit,
            model_name=model_name,
            model_store=model_store,
            gate_policy=gate_policy,
            release_id=release_id,
        )
    except Exception as exc:  # the local runner raises when the pipeline fails
        error = " ".join(str(exc).split())[:300]
    wall = time.time() - start
    new_dirs = sorted((p for p in root.iterdir() if p.name not in before and p.name.startswith(PIPELINE_NAME)), key=os.path.getmtime)
    pipeline_dir = str(new_dirs[-1]) if new_dirs else str(root)

    c = tracking.client()
    parent_id = tracking.parent_run(release_id)
    parent = c.get_run(parent_id)
    children = c.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", order_by=["attributes.start_time ASC"]
    )
    steps = [
        {
            "name": r.data.tags.get("mavin.step", r.info.run_name),
            "status": r.info.status,
            "run_id": r.info.run_id,
            "artifact_uri": r.info.artifact_uri,
        }
        for r in children
    ]
    result = ReleaseResult(
        release_id=release_id,
        succeeded=not error and parent.info.status == "FINISHED",
        error=error,
        parent_run_id=parent_id,
        parent_status=parent.info.status,
        pipeline_dir=pipeline_dir,
        steps=steps,
        tags={k: v for k, v in parent.data.tags.items() if k.startswith("mavin.")},
        wall_s=wall,
    )
    if echo:
        for line in result.lines():
            echo(line)
    return result

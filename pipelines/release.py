"""The release pipeline (Kubeflow Pipelines v2).

    version data -> validate -> (training, evaluation, gate, export, publish, promote:
    appended by later work) ; an exit handler closes the MLflow parent run whatever happened.

Today it runs: generate data -> version data -> validate data. Every step is a component in
components/<name>/ that calls a library function; the embedded default runs it with the
KFP local runner (``mavin-ops release``), a cluster compiles it to IR YAML.

Lineage: every step receives ``release_id`` (set by the caller; empty on a cluster, where the
KFP run id stands in) and the KFP run id, and logs a nested MLflow run under the parent run
of that release (mavin_ops/tracking.py).
"""

from typing import Callable

from kfp import dsl

from mavin_ops.components.close_lineage.component import close_lineage
from mavin_ops.components.generate_data.component import generate_data
from mavin_ops.components.validate_data.component import validate_data
from mavin_ops.components.version_data.component import version_data

__all__ = ["PIPELINE_NAME", "Platform", "build_release_pipeline", "release_pipeline"]

PIPELINE_NAME = "mavin-release"

#: Called for every task with its step name; sets cluster-only settings (image, GPUs, node
#: selectors, tolerations, volumes, secrets). See pipelines/cluster.py.
Platform = Callable[[dsl.PipelineTask, str], None]


def _local(task: dsl.PipelineTask, step: str) -> None:
    """The embedded default needs no platform settings."""


def build_release_pipeline(platform: Platform = _local):
    """The release pipeline with ``platform`` applied to every task."""

    def step(task: dsl.PipelineTask, name: str, display: str) -> dsl.PipelineTask:
        task.set_display_name(display)
        platform(task, name)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate, gate and release a MAVIN-style model.")
    def release_pipeline(
        preset: str = "tiny",
        seed: int = 0,
        dataset_name: str = "mavinset-mini",
        registry: str = "",
        remote: str = "",
        endpoint_url: str = "",
        max_quarantine_share: float = 0.05,
        release_id: str = "",
    ):
        kfp_run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        lineage = {"release_id": release_id, "kfp_run_id": kfp_run_id}
        closer = step(close_lineage(**lineage), "close_lineage", "close lineage")
        with dsl.ExitHandler(closer, name="release"):
            generated = step(generate_data(preset=preset, seed=seed, **lineage), "generate_data", "generate data")
            dataset = generated.outputs["dataset"]
            versioned = step(
                version_data(
                    dataset=dataset, name=dataset_name, registry=registry, remote=remote, endpoint_url=endpoint_url, **lineage
                ),
                "version_data",
                "version data",
            )
            step(
                validate_data(
                    dataset=dataset,
                    dataset_digest=versioned.outputs["digest"],
                    max_quarantine_share=max_quarantine_share,
                    **lineage,
                ),
                "validate_data",
                "validate data",
            )

    return release_pipeline


release_pipeline = build_release_pipeline()

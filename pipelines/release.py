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

from kfp import dsl

from mavin_ops.components.close_lineage.component import close_lineage
from mavin_ops.components.generate_data.component import generate_data
from mavin_ops.components.validate_data.component import validate_data
from mavin_ops.components.version_data.component import version_data

__all__ = ["PIPELINE_NAME", "release_pipeline"]

PIPELINE_NAME = "mavin-release"


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
    closer = close_lineage(release_id=release_id, kfp_run_id=kfp_run_id)
    closer.set_display_name("close lineage")
    with dsl.ExitHandler(closer, name="release"):
        generated = generate_data(preset=preset, seed=seed, release_id=release_id, kfp_run_id=kfp_run_id)
        generated.set_display_name("generate data")
        versioned = version_data(
            dataset=generated.outputs["dataset"],
            name=dataset_name,
            registry=registry,
            remote=remote,
            endpoint_url=endpoint_url,
            release_id=release_id,
            kfp_run_id=kfp_run_id,
        )
        versioned.set_display_name("version data")
        validated = validate_data(
            dataset=generated.outputs["dataset"],
            dataset_digest=versioned.outputs["digest"],
            max_quarantine_share=max_quarantine_share,
            release_id=release_id,
            kfp_run_id=kfp_run_id,
        )
        validated.set_display_name("validate data")

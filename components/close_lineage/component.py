"""Exit handler: close the pipeline's MLflow parent run with the true final status."""

from kfp import dsl

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def close_lineage(release_id: str, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Runs whatever happened inside the pipeline; returns the MLflow status written."""
    from mavin_ops import tracking

    message = status.error_message or ""
    written = tracking.close_parent_run(release_id, kfp_run_id, status.state, message)
    print(f"MLflow parent run closed as {written} (pipeline {status.state})")
    return written

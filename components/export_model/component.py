"""Export a trained checkpoint to ONNX (parity-checked) and build the Triton model repository
(serving/repository.py: export_and_build)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def export_model(
    checkpoint: Input[Model],
    release_id: str,
    kfp_run_id: str,
    repository: Output[Model],
    dataset_digest: str = "",
    version: int = 0,
    store: str = "",
    store_name: str = "mavin",
    endpoint_url: str = "",
    tolerance: float = 1e-4,
) -> NamedTuple("ExportOutputs", version=int, checkpoint_sha256=str, parity_max_abs_diff=float, export_sha256=str):
    """ONNX export of the text encoder, the denoiser step and the decoders with a parity check
    against torch (fails the step above ``tolerance``), then the model repository (both
    variants) in ``repository.path``. ``version`` 0 means one past the newest complete version
    in ``store`` (``$MAVIN_HOME/model-store`` when empty). Logs a nested MLflow run
    ``export_model`` with the parity per part and the manifests."""
    from collections import namedtuple

    import mlflow

    from mavin_ops import settings, tracking
    from mavin_ops.serving.repository import export_and_build
    from mavin_ops.serving.store import next_version

    key = tracking.release_key(release_id, kfp_run_id)
    store = store or str(settings.home() / "model-store")
    if version <= 0:
        version = next_version(store, name=store_name, endpoint_url=endpoint_url or None)
    lineage = {"release_id": release_id, "kfp_run_id": kfp_run_id, "dataset_digest": dataset_digest}
    with tracking.step_run(release_id, kfp_run_id, "export_model", {"version": version, "tolerance": tolerance}):
        exported, built = export_and_build(
            checkpoint.path,
            repository.path,
            export_dir=settings.home() / "runs" / key / "export" / "onnx",
            version=version,
            lineage=lineage,
            tolerance=tolerance,
            log=print,
        )
        parity = exported.parity
        mlflow.log_metrics({f"parity_max_abs_diff.{part}": diff for part, diff in parity.items()})
        mlflow.log_dict(exported.manifest, "export.json")
        mlflow.log_dict(built.manifest, "mavin_repository.json")
        mlflow.set_tags({"mavin.checkpoint_sha256": exported.manifest["checkpoint"]["sha256"], "mavin.serving_version": str(version)})
    from mavin_ops.data.manifest import sha256_file

    export_sha = sha256_file(exported.path / "export.json")
    repository.metadata.update({"version": version, "checkpoint_sha256": exported.manifest["checkpoint"]["sha256"], "export_sha256": export_sha, **parity})
    out = namedtuple("ExportOutputs", ["version", "checkpoint_sha256", "parity_max_abs_diff", "export_sha256"])
    return out(version, exported.manifest["checkpoint"]["sha256"], float(max(parity.values())), export_sha)
